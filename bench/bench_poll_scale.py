"""Polling at scale: the interval each inbox is polled at, and what a poll costs per inbox-month.

For N = 100, 1,000 and 10,000 inboxes, on in-process moto built from template.yaml, in scaled time
(a simulated clock, one poll-scheduler tick per simulated minute): the real scheduler
(``polling.fan_out``: the poll index, batches of 10 on the real SQS poll queue) and the real
worker (``polling.poll_batch``: a batch read, each inbox's credentials opened through the real
``CredentialStore`` under moto KMS, ``poll_inbox`` with its cursor and heartbeat rules). The
mailboxes are stub providers (``tests.memory_providers``) that answer at once; each poll is
charged a stated provider latency instead (``--provider-ms``, 250 ms: one Gmail history or Graph
delta request). Credential rows are Outlook-sized (3.5 KB of tokens).

Workers: every queue message is one worker invocation (the template's BatchSize 1), run on one of
``--workers`` concurrent lanes (Lambda's SQS scaling; the account's default concurrency is 1,000),
each lane a container with its own credential cache; a message goes to the first idle lane (Lambda
reuses warm containers) or waits for the first to be free. A
worker has ``POLL_THREADS`` polls at their providers at once: a poll's time is when its batch
started plus the stated latency of each round of polls up to its own. The achieved interval is
the time between an inbox's successive polls. The first cycle warms the containers (each decrypts
its data key once) and is left out of the costs.

Mail: each cycle 2% of the inboxes receive one message (a newsletter: classified, nothing to
stop), so the runs include the polls that save a cursor as well as idle ones.

Prices (us-east-1, on demand, as published): DynamoDB $0.625 per million write request units and
$0.125 per million read request units; SQS standard $0.40 per million requests; Lambda arm64
$0.0000133334 per GB-second and $0.20 per million requests; KMS $0.03 per 10,000 requests. Lambda
time per worker invocation: the stated provider latency per poll plus the worker's own wall time
measured here on moto (an overestimate of DynamoDB's own latency in process); the scheduler's: its
measured wall time. 43,830 minutes a month (30.44 days).

    python bench/bench_poll_scale.py [--sizes 100,1000,10000] [--minutes 20] [--workers 50]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from bench.aws_meter import Meter, metered  # noqa: E402
from bench.results import figure, record  # noqa: E402
from bench.stack import deploy  # noqa: E402
from local.cfn import load_template  # noqa: E402
from sendwell.adapters.aws import SnsPublisher, SqsAuthFailureReporter, SqsQueue  # noqa: E402
from sendwell.adapters.credentials import CredentialStore  # noqa: E402
from sendwell.adapters.once import IdempotentRunner  # noqa: E402
from sendwell.config import Settings  # noqa: E402
from sendwell.models import InboxStatus, Models, bind_models  # noqa: E402
from sendwell.ports.mailbox import InboundMessage  # noqa: E402
from sendwell.ports.messages import QueuedMessage  # noqa: E402
from sendwell.services import polling, schedule  # noqa: E402
from sendwell.services.polling import PollBatch, PollContext  # noqa: E402
from tests.memory_providers import MemoryMailbox, MemoryMailboxes  # noqa: E402

PRICES = {  # USD
    "write_unit": Decimal("0.625") / 1_000_000,
    "read_unit": Decimal("0.125") / 1_000_000,
    "sqs_request": Decimal("0.40") / 1_000_000,
    "kms_request": Decimal("0.03") / 10_000,
    "lambda_gb_second": Decimal("0.0000133334"),
    "lambda_request": Decimal("0.20") / 1_000_000,
}
MINUTES_PER_MONTH = Decimal(43_830)
MAIL_SHARE = 0.02  # inboxes receiving one message per cycle
CYCLE = polling.POLL_INTERVAL
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
# An Outlook sign-in as stored: access and refresh tokens of Microsoft's usual sizes.
TOKENS = {"access_token": "eyJ0" + "x" * 2400, "refresh_token": "M.C5" + "y" * 1000, "expires_at": 1_800_000_000}


@dataclass
class Run:
    inboxes: int
    polls: int
    intervals: list[float]
    per_cycle: tuple[int, int]  # fewest and most polls of one inbox in one full cycle
    meter: Meter
    worker_invocations: int
    worker_seconds: float  # Lambda time of every worker invocation, provider latency included
    scheduler_seconds: float
    minutes: int
    leftovers: int


def newsletter(number: int, at: datetime) -> InboundMessage:
    raw = (
        f"From: news@vendor.example\r\nTo: inbox@bench.example\r\nSubject: Issue {number}\r\n"
        f"Message-ID: <n{number}@vendor.example>\r\nList-Unsubscribe: <mailto:u@vendor.example>\r\n"
        f"Precedence: bulk\r\nDate: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n\r\nNews.\r\n"
    ).encode()
    return InboundMessage.parse(f"n{number}", raw)


def setup(session: boto3.Session, template: dict[str, Any], count: int) -> tuple[Models, Settings, list[str]]:
    _, settings = deploy(template, session)
    models = bind_models(settings.tables, region="us-east-1")
    store = CredentialStore.with_kms(models, session.client("kms"), settings.credentials_key_id)
    ids = [f"ibx_{number:05d}" for number in range(count)]
    inboxes = []
    with models.inbox.batch_write() as batch:
        for inbox_id in ids:
            shard, slot = polling.new_poll_place()  # as a reconnect or first connection places it
            inbox = models.inbox(
                inbox_id=inbox_id,
                provider="outlook",
                address=f"{inbox_id}@bench.example",
                owner_email="o@bench.example",
                created_at=START - timedelta(days=30),
                status=InboxStatus.CONNECTED.value,
                send_shard=schedule.send_shard(inbox_id),  # connected, so on the send index too
                next_send_at=int((START + timedelta(days=1)).timestamp()),
                poll_shard=shard,
                poll_slot=slot,
                poll_cursor="0",
                last_polled_at=START - timedelta(minutes=5),
            )
            batch.save(inbox)
            inboxes.append(inbox)
    for inbox in inboxes:
        store.seed(inbox, TOKENS)
    return models, settings, ids


def context(session: boto3.Session, models: Models, settings: Settings, boxes: dict[str, MemoryMailbox]) -> PollContext:
    """One worker container: its own credential cache (and data-key cache), the mailboxes shared."""
    store = CredentialStore.with_kms(models, session.client("kms"), settings.credentials_key_id)
    mailboxes = MemoryMailboxes(store, boxes)
    sqs = session.client("sqs")
    return PollContext(
        models=models,
        mailboxes=mailboxes,
        auth_failures=SqsAuthFailureReporter(SqsQueue(sqs, settings.auth_failure_queue_url)),
        events=SnsPublisher(session.client("sns"), settings.inbox_events_topic_arn),
        once=IdempotentRunner(settings.idempotency_table, boto3_client=session.client("dynamodb")),
    )


def run(count: int, *, minutes: int, workers: int, provider_ms: int, template: dict[str, Any]) -> Run:
    rng = random.Random(count)
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        models, settings, ids = setup(session, template, count)
        boxes = {inbox_id: MemoryMailbox(f"{inbox_id}@bench.example") for inbox_id in ids}
        lanes = [context(session, models, settings, boxes) for _ in range(workers)]
        free_at = [START] * workers  # when each lane can start its next message
        queue = SqsQueue(session.client("sqs"), settings.poll_queue_url)
        sqs = session.client("sqs")
        polled: dict[str, list[datetime]] = {inbox_id: [] for inbox_id in ids}
        totals = {"scheduler": 0.0, "worker": 0.0, "invocations": 0, "leftovers": 0, "mail": 0}

        def tick(minute: int) -> None:
            now = START + timedelta(minutes=minute)
            if minute % 5 == 0:  # a new cycle: some inboxes get mail
                for inbox_id in rng.sample(ids, max(1, int(count * MAIL_SHARE))):
                    totals["mail"] += 1
                    boxes[inbox_id].incoming.append(newsletter(int(totals["mail"]), now))
            began = time.perf_counter()
            polling.fan_out(models, queue, now=now)
            totals["scheduler"] += time.perf_counter() - began
            url = settings.poll_queue_url
            while received := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                for message in received:
                    batch = PollBatch.from_body(message["Body"])
                    # Lambda reuses a warm idle container first; a new one only when every one is busy.
                    idle = [lane for lane, at in enumerate(free_at) if at <= now]
                    lane = idle[0] if idle else min(range(workers), key=free_at.__getitem__)
                    start = max(free_at[lane], now)
                    began = time.perf_counter()
                    outcome = polling.poll_batch(lanes[lane], batch, now=start)
                    wall = time.perf_counter() - began
                    # The worker has POLL_THREADS polls at their providers at once.
                    for position, result in enumerate(outcome.results):
                        waited = provider_ms * (position // polling.POLL_THREADS + 1)
                        polled[result.inbox_id].append(start + timedelta(milliseconds=waited))
                    if outcome.leftover is not None:
                        totals["leftovers"] += 1
                        queue.send_batch([QueuedMessage(body=outcome.leftover.to_body())])
                    rounds = -(-len(outcome.results) // polling.POLL_THREADS)
                    seconds = wall + provider_ms / 1000 * rounds
                    totals["worker"] += seconds
                    totals["invocations"] += 1
                    free_at[lane] = start + timedelta(seconds=seconds)
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

        # The first cycle warms the containers (a data key decrypted once each) and is not counted.
        for minute in range(5):
            tick(minute)
        totals.update(scheduler=0.0, worker=0.0, invocations=0)
        with metered() as meter:
            for minute in range(5, minutes):
                tick(minute)
        intervals = [
            (later - earlier).total_seconds()
            for times in polled.values()
            for earlier, later in itertools.pairwise(times)
        ]
        # Polls of each inbox in each full cycle of the run.
        cycles = [
            sum(1 for t in times if START + CYCLE * n <= t < START + CYCLE * (n + 1))
            for times in polled.values()
            for n in range(minutes // 5)
        ]
        return Run(
            inboxes=count,
            polls=sum(1 for times in polled.values() for t in times if t >= START + CYCLE),
            intervals=intervals,
            per_cycle=(min(cycles, default=0), max(cycles, default=0)),
            meter=meter,
            worker_invocations=int(totals["invocations"]),
            worker_seconds=float(totals["worker"]),
            scheduler_seconds=float(totals["scheduler"]),
            minutes=minutes - 5,
            leftovers=int(totals["leftovers"]),
        )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def monthly_cost_per_inbox(result: Run, memory_gb: Decimal) -> dict[str, Decimal]:
    meter = result.meter
    lambda_requests = result.worker_invocations + result.minutes  # the scheduler runs every minute
    lambda_seconds = Decimal(str(result.worker_seconds + result.scheduler_seconds))
    costs = {
        "dynamodb": meter.write_units * PRICES["write_unit"] + meter.read_units * PRICES["read_unit"],
        "sqs": meter.count("sqs.") * PRICES["sqs_request"],
        "kms": meter.count("kms.") * PRICES["kms_request"],
        "lambda": lambda_seconds * memory_gb * PRICES["lambda_gb_second"] + lambda_requests * PRICES["lambda_request"],
    }
    scale = MINUTES_PER_MONTH / (result.minutes * result.inboxes)
    return {name: cost * scale for name, cost in costs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--minutes", type=int, default=20, help="simulated minutes (5-minute cycles; the first warms)")
    parser.add_argument("--workers", type=int, default=50, help="concurrent poll workers (Lambda containers)")
    parser.add_argument("--provider-ms", type=int, default=250, help="stated provider latency per poll")
    args = parser.parse_args()
    template = load_template()
    memory_gb = Decimal(template["Globals"]["Function"]["MemorySize"]) / 1024
    figures: dict[str, Any] = {
        "provider_ms_per_poll": figure(args.provider_ms, "ms (stated)"),
        "workers": figure(args.workers, "concurrent lanes"),
    }
    print(
        f"polling in scaled time: {args.minutes} simulated minutes, {args.workers} workers, "
        f"{args.provider_ms} ms provider latency per poll (stated), {MAIL_SHARE:.0%} of inboxes get mail per cycle"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        began = time.perf_counter()
        result = run(size, minutes=args.minutes, workers=args.workers, provider_ms=args.provider_ms, template=template)
        took = time.perf_counter() - began
        costs = monthly_cost_per_inbox(result, memory_gb)
        total = sum(costs.values(), Decimal(0))
        polls = max(result.polls, 1)
        p50, p95 = percentile(result.intervals, 0.5), percentile(result.intervals, 0.95)
        longest = max(result.intervals)
        print(
            f"N={size}: {result.polls} polls, interval p50 {p50:.0f} s, p95 {p95:.0f} s, max {longest:.0f} s;"
            f" polls per inbox per full cycle {result.per_cycle[0]}-{result.per_cycle[1]};"
            f" batches handed on {result.leftovers}; bench wall time {took:.0f} s"
        )
        print(
            f"    per poll: write units {result.meter.write_units / polls:.3f}, read units "
            f"{result.meter.read_units / polls:.3f}, SQS requests {result.meter.count('sqs.') / polls:.3f},"
            f" KMS requests {result.meter.count('kms.') / polls:.4f}; worker Lambda time per poll "
            f"{result.worker_seconds / polls * 1000:.0f} ms (provider latency included)"
        )
        print(
            "    per inbox-month: "
            + ", ".join(f"{name} ${cost:.5f}" for name, cost in costs.items())
            + f"; total ${total:.4f} (target <= $0.02)"
        )
        figures[f"n{size}"] = {
            "interval_p50": figure(p50, "s"),
            "interval_p95": figure(p95, "s"),
            "interval_max": figure(max(result.intervals), "s"),
            "polls_per_cycle_min": figure(result.per_cycle[0], "polls"),
            "polls_per_cycle_max": figure(result.per_cycle[1], "polls"),
            "write_units_per_poll": figure(float(result.meter.write_units) / polls, "WRU/poll"),
            "read_units_per_poll": figure(float(result.meter.read_units) / polls, "RRU/poll"),
            "sqs_requests_per_poll": figure(result.meter.count("sqs.") / polls, "requests/poll"),
            "kms_requests_per_poll": figure(result.meter.count("kms.") / polls, "requests/poll"),
            "lambda_seconds_per_poll": figure(result.worker_seconds / polls, "s/poll"),
            "cost_per_inbox_month": figure(float(total), "USD"),
            **{f"cost_per_inbox_month_{name}": figure(float(cost), "USD") for name, cost in costs.items()},
        }
    record("poll_scale", figures)


if __name__ == "__main__":
    main()
