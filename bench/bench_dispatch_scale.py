"""One dispatch tick at scale: 10,000 inboxes x 10 due steps (100,000), 10% of the inboxes disconnected.

What it measures, on the real handlers (``local.stack.load_handler``) and tables from template.yaml:

- the scheduler (DispatchFunction): how many inboxes it put on the dispatch queue, its wall time
  and its AWS calls, against its Timeout in template.yaml;
- every worker batch (DispatchWorkerFunction), one dispatch-queue message per invocation as the
  template's BatchSize 1 delivers it: wall time (p50, max) and DynamoDB and SQS calls per batch,
  against its Timeout;
- starvation: every connected inbox with a sendable step got exactly one step enqueued, and the
  disconnected ones none (the send queue is read back and counted per inbox).

The data: inboxes connected for a while (cap 50, gap 120 s, jitter 60 s), all on the send index
with their turn come; the disconnected 10% are still on the send index too (just disconnected,
not yet seen by dispatch: the worst case, each costs the write that takes it off). One campaign
whose window is open all day, 10 first steps per inbox due in the last 10 minutes. It is written
straight into moto with batch writes, unmetered.

moto is not AWS: its wall time says little. So each batch's time is also estimated as our own code's
time (wall time minus the time spent inside AWS calls) plus each call at a stated latency: 8 ms
per DynamoDB call and 15 ms per SQS call (typical in-region p50s from Lambda). Target: each tick
within half its function's timeout.

moto answers a query on a global secondary index by sorting the whole table (100,000 items) each
time; the bench hands it the queried partition's items instead (the same answer, checked on a
sample before the tick), or the tick would take hours on moto for no reason AWS shares.

No prices are used here.

    python bench/bench_dispatch_scale.py [--inboxes 10000] [--steps 10]
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    # Tracing adds an X-Ray subsegment per call; bench_workload measures it. Here it stays off so
    # the wall time is the code's and moto's.
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="false",
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.dynamodb.models.table import Table  # noqa: E402

from bench.aws_meter import metered  # noqa: E402
from bench.ledger import ledger  # noqa: E402
from bench.results import figure, record  # noqa: E402
from bench.stack import deploy  # noqa: E402
from local.cfn import load_template  # noqa: E402
from local.stack import LambdaContext, load_handler  # noqa: E402
from sendwell.models import InboxStatus, Models, bind_models, new_step, new_window  # noqa: E402
from sendwell.services import schedule  # noqa: E402

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday
DYNAMODB_MS = 8.0
SQS_MS = 15.0
DISCONNECTED_SHARE = 0.10


@contextmanager
def partitioned_index_queries(table_name: str, index_name: str, hash_attribute: str) -> Iterator[None]:
    """Answer moto's queries on one GSI from the queried partition's items (the data is not
    written during the tick: dispatch never writes a step)."""
    original = Table.query
    signature = inspect.signature(original)
    groups: dict[str, list[Any]] = {}

    def query(self: Table, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        if self.name != table_name or bound.arguments.get("index_name") != index_name:
            return original(self, *args, **kwargs)
        if not groups:
            for item in Table.all_items(self):
                value = item.attrs.get(hash_attribute)
                if value is not None:
                    groups.setdefault(value.value, []).append(item)
        hash_key = bound.arguments.get("hash_key")
        if hash_key is None:
            hash_key = bound.arguments["hash_key_conditions"][0][1]
        subset = groups.get(hash_key.value, [])
        self.all_items = lambda: list(subset)  # type: ignore[method-assign]
        try:
            return original(self, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query  # type: ignore[method-assign]
    try:
        yield
    finally:
        Table.query = original  # type: ignore[method-assign]


def build(models: Models, inboxes: int, steps: int) -> tuple[set[str], set[str]]:
    """The inboxes and their due steps, batch-written; (connected ids, disconnected ids)."""
    connected: set[str] = set()
    disconnected: set[str] = set()
    models.campaign(
        campaign_id="cmp_scale",
        name="scale",
        created_at=NOW - timedelta(days=7),
        inbox_ids=[],
        steps=[new_step(subject="Hello {{ email }}", text="Hi.", html=None, delay_seconds=0, new_thread=False)],
        window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
    ).save()
    every = round(1 / DISCONNECTED_SHARE)
    with models.inbox.batch_write() as batch:
        for number in range(inboxes):
            inbox_id = f"ibx_{number:05d}"
            down = number % every == every - 1
            (disconnected if down else connected).add(inbox_id)
            inbox = models.inbox(
                inbox_id=inbox_id,
                provider="outlook",
                address=f"sender{number}@agency.example",
                owner_email="owner@client.example",
                created_at=NOW - timedelta(days=30),
                status=(InboxStatus.DISCONNECTED if down else InboxStatus.CONNECTED).value,
                credentials_version=1,
                last_polled_at=NOW - timedelta(minutes=2),
                send_shard=schedule.send_shard(inbox_id),
                next_send_at=int((NOW - timedelta(minutes=1)).timestamp()),
            )
            inbox.window.tz = "UTC"
            batch.save(inbox)
    with models.enrollment.batch_write() as batch:
        for number in range(inboxes):
            inbox_id = f"ibx_{number:05d}"
            for step in range(steps):
                batch.save(
                    models.enrollment(
                        enrollment_id=f"enr_{number:05d}_{step:02d}",
                        campaign_id="cmp_scale",
                        inbox_id=inbox_id,
                        email=f"p{number}.{step}@prospect.example",
                        created_at=NOW - timedelta(days=1),
                        due_inbox=inbox_id,
                        due_at=int((NOW - timedelta(minutes=steps - step)).timestamp()),
                    )
                )
    return connected, disconnected


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


class Sink(io.TextIOBase):
    """stdout of the handlers (their logs and metrics): counted, not shown."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)

    def writable(self) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inboxes", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10, help="due steps per inbox")
    args = parser.parse_args()
    template = load_template()
    timeouts = {
        name: int(template["Resources"][name]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"]))
        for name in ("DispatchFunction", "DispatchWorkerFunction")
    }
    out = sys.stdout
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        stack, settings = deploy(template, session, prefix="scale")
        models = bind_models(settings.tables, region="us-east-1")
        started = time.perf_counter()
        connected, disconnected = build(models, args.inboxes, args.steps)
        print(
            f"setup: {args.inboxes} inboxes ({len(disconnected)} disconnected), {args.inboxes * args.steps} due "
            f"steps, written in {time.perf_counter() - started:.0f} s (not metered)"
        )
        sink = Sink()
        sys.stdout = sink
        try:
            scheduler = load_handler("DispatchFunction", template)
            worker = load_handler("DispatchWorkerFunction", template)
            for handler in (scheduler, worker):
                inspect.unwrap(handler).__globals__["utcnow"] = lambda: NOW
        finally:
            sys.stdout = out
        sqs = session.client("sqs")
        send_url = stack.refs["SendQueue"]
        due, due_at = models.enrollment.due_index, models.enrollment.due_at
        sample = sorted(connected)[:3]
        with_moto = {i: [e.enrollment_id for e in due.query(i, due_at <= int(NOW.timestamp()))] for i in sample}
        with partitioned_index_queries(settings.tables.enrollments, "steps-due", "due_inbox"):
            for inbox_id in sample:  # the shortcut gives moto's own answers
                fast = [e.enrollment_id for e in due.query(inbox_id, due_at <= int(NOW.timestamp()))]
                assert fast == with_moto[inbox_id], (inbox_id, fast, with_moto[inbox_id])
            with metered() as meter, ledger(meter, table_prefix="scale-") as book:
                sys.stdout = sink
                try:
                    book.phase = "scheduler"
                    tick = time.perf_counter()
                    fanned = scheduler({}, LambdaContext(function_name="DispatchFunction"))
                    scheduler_wall = time.perf_counter() - tick
                    enqueued: Counter[str] = Counter()
                    batches = run_workers(worker, sqs, stack, book, lambda: enqueued.update(read_back(sqs, send_url)))
                finally:
                    sys.stdout = out
                    book.phase = "bench"
    report(args, timeouts, fanned, scheduler_wall, book, batches, enqueued, connected, disconnected)


def run_workers(
    worker: Callable[..., Any], sqs: Any, stack: Any, book: Any, drain: Callable[[], None]
) -> list[dict[str, float]]:
    """Each dispatch-queue message to the worker, alone (BatchSize 1): wall time and calls per batch.
    After each, ``drain`` reads the send queue back, as the send function would consume it (moto
    checks every queued message on each send, so a full queue would only slow moto down)."""
    url = stack.refs["DispatchQueue"]
    arn = stack.attributes[("DispatchQueue", "Arn")]
    batches: list[dict[str, float]] = []
    while True:
        book.phase = "event source mapping"
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"]).get("Messages", [])
        if not received:
            return batches
        message = received[0]
        record_ = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message["Attributes"],
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": "us-east-1",
        }
        phase = f"batch {len(batches)}"
        book.phase = phase
        started = time.perf_counter()
        result = worker({"Records": [record_]}, LambdaContext(function_name="DispatchWorkerFunction"))
        wall = time.perf_counter() - started
        assert not result["batchItemFailures"], result
        book.phase = "event source mapping"
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        book.phase = "bench"
        drain()
        dynamodb = book.count("dynamodb.", {phase})
        queue_calls = book.count("sqs.", {phase})
        own = wall - book.seconds[phase]
        batches.append(
            {
                "inboxes": len([i for i in message["Body"].split(",") if i]),
                "wall": wall,
                "own": own,
                "dynamodb": dynamodb,
                "sqs": queue_calls,
                "estimate": own + dynamodb * DYNAMODB_MS / 1000 + queue_calls * SQS_MS / 1000,
                "write_units": float(book.writes({phase})),
                "read_units": float(book.reads({phase})),
            }
        )


def read_back(sqs: Any, url: str) -> Counter[str]:
    """Every step on the send queue, counted per inbox (FIFO hands out one group at a time, so the
    messages are deleted as they are read)."""
    per_inbox: Counter[str] = Counter()
    while True:
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not received:
            return per_inbox
        for message in received:
            per_inbox[json.loads(message["Body"])["inbox_id"]] += 1
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
        )


def report(
    args: argparse.Namespace,
    timeouts: dict[str, int],
    fanned: dict[str, Any],
    scheduler_wall: float,
    book: Any,
    batches: list[dict[str, float]],
    enqueued: Counter[str],
    connected: set[str],
    disconnected: set[str],
) -> None:
    scheduler_calls = {"dynamodb": book.count("dynamodb.", {"scheduler"}), "sqs": book.count("sqs.", {"scheduler"})}
    scheduler_own = scheduler_wall - book.seconds["scheduler"]
    scheduler_estimate = (
        scheduler_own + (scheduler_calls["dynamodb"] * DYNAMODB_MS + scheduler_calls["sqs"] * SQS_MS) / 1000
    )
    walls = [b["wall"] for b in batches]
    estimates = [b["estimate"] for b in batches]
    exactly_one = sum(1 for inbox_id in connected if enqueued[inbox_id] == 1)
    more = sum(1 for inbox_id in connected if enqueued[inbox_id] > 1)
    missing = sorted(inbox_id for inbox_id in connected if enqueued[inbox_id] == 0)
    from_disconnected = sum(enqueued[inbox_id] for inbox_id in disconnected)
    half = {name: timeout / 2 for name, timeout in timeouts.items()}
    worker_max = max(estimates, default=0.0)
    print(f"dispatch tick over {args.inboxes * args.steps} due steps on {args.inboxes} inboxes:")
    print(
        f"  scheduler: {fanned['inboxes']} inboxes fanned out in {len(batches)} batches; "
        f"wall {scheduler_wall:.2f} s on moto, {scheduler_calls['dynamodb']} DynamoDB + {scheduler_calls['sqs']} "
        f"SQS calls; estimate {scheduler_estimate:.2f} s (timeout {timeouts['DispatchFunction']} s, "
        f"target <= {half['DispatchFunction']:.0f} s)"
        f" {'met' if scheduler_estimate <= half['DispatchFunction'] else 'NOT met'}"
    )
    if batches:
        print(
            f"  worker batches: {len(batches)} of <= {max(int(b['inboxes']) for b in batches)} inboxes; wall p50 "
            f"{statistics.median(walls):.2f} s, max {max(walls):.2f} s on moto"
        )
        print(
            f"    per batch: {statistics.mean(b['dynamodb'] for b in batches):.0f} DynamoDB calls, "
            f"{statistics.mean(b['sqs'] for b in batches):.0f} SQS calls, "
            f"own code {statistics.median(b['own'] for b in batches):.2f} s; "
            f"{statistics.mean(b['write_units'] for b in batches):.1f} write units, "
            f"{statistics.mean(b['read_units'] for b in batches):.1f} read units"
        )
        print(
            f"    estimate at {DYNAMODB_MS:g} ms per DynamoDB and {SQS_MS:g} ms per SQS call: p50 "
            f"{statistics.median(estimates):.2f} s, max {worker_max:.2f} s "
            f"(timeout {timeouts['DispatchWorkerFunction']} s, "
            f"target <= {half['DispatchWorkerFunction']:.0f} s) "
            f"{'met' if worker_max <= half['DispatchWorkerFunction'] else 'NOT met'}"
        )
    print(f"  steps enqueued: {sum(enqueued.values())}")
    print(
        f"  starvation: {exactly_one} of {len(connected)} connected inboxes got exactly one step, "
        f"{more} more than one, "
        f"{len(missing)} none{(' (e.g. ' + ', '.join(missing[:5]) + ')') if missing else ''}; "
        f"{from_disconnected} steps from the {len(disconnected)} disconnected inboxes"
    )
    record(
        "dispatch_scale",
        {
            "inboxes": figure(args.inboxes, "inboxes"),
            "due_steps": figure(args.inboxes * args.steps, "steps"),
            "disconnected_inboxes": figure(len(disconnected), "inboxes"),
            "latency_assumed": {
                "dynamodb": figure(DYNAMODB_MS, "ms per call"),
                "sqs": figure(SQS_MS, "ms per call"),
            },
            "scheduler": {
                "inboxes_fanned_out": figure(int(fanned["inboxes"]), "inboxes"),
                "wall_s_moto": figure(scheduler_wall, "s"),
                "dynamodb_calls": figure(scheduler_calls["dynamodb"], "calls"),
                "sqs_calls": figure(scheduler_calls["sqs"], "calls"),
                "estimate_s": figure(scheduler_estimate, "s"),
                "timeout_s": figure(timeouts["DispatchFunction"], "s"),
            },
            "worker": {
                "batches": figure(len(batches), "invocations"),
                "wall_s_p50_moto": figure(statistics.median(walls) if walls else 0.0, "s"),
                "wall_s_max_moto": figure(max(walls, default=0.0), "s"),
                "dynamodb_calls_per_batch": figure(
                    statistics.mean(b["dynamodb"] for b in batches) if batches else 0.0, "calls"
                ),
                "sqs_calls_per_batch": figure(statistics.mean(b["sqs"] for b in batches) if batches else 0.0, "calls"),
                "estimate_s_p50": figure(statistics.median(estimates) if estimates else 0.0, "s"),
                "estimate_s_max": figure(worker_max, "s"),
                "write_units_per_batch": figure(
                    statistics.mean(b["write_units"] for b in batches) if batches else 0.0, "WRU"
                ),
                "read_units_per_batch": figure(
                    statistics.mean(b["read_units"] for b in batches) if batches else 0.0, "RRU"
                ),
                "timeout_s": figure(timeouts["DispatchWorkerFunction"], "s"),
            },
            "steps_enqueued": figure(sum(enqueued.values()), "steps"),
            "connected_with_exactly_one_step": figure(exactly_one, "inboxes"),
            "connected_with_none": figure(len(missing), "inboxes"),
            "steps_from_disconnected": figure(from_disconnected, "steps"),
        },
    )
    print("  written to bench/results.json under 'dispatch_scale'")


if __name__ == "__main__":
    main()
