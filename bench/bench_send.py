"""What one email costs in AWS requests and DynamoDB capacity, and what dispatch costs per due step.

Runs the real path on in-process moto: dispatch -> SQS FIFO -> the send function's real handler
(batches of 10, partial-failure responses) -> a real SMTP server (aiosmtpd) and a real IMAP Sent
folder (Dovecot) -> records and advances. Then times dispatch's CPU over 10,000 due steps.

    python bench/bench_send.py [--emails 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

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

from bench.aws_meter import metered  # noqa: E402
from bench.results import figure, record  # noqa: E402
from bench.stack import deploy  # noqa: E402
from local.cfn import load_template  # noqa: E402
from local.imapserver import DovecotServer  # noqa: E402
from local.mailserver import SmtpTestServer  # noqa: E402
from local.stack import LambdaContext, load_handler  # noqa: E402
from sendwell.adapters.aws import SqsQueue  # noqa: E402
from sendwell.adapters.credentials import CredentialStore  # noqa: E402
from sendwell.models import InboxStatus, bind_models, new_step, new_window  # noqa: E402
from sendwell.services import dispatch as dispatch_service  # noqa: E402
from sendwell.services import schedule  # noqa: E402

# On-demand prices, us-east-1, as published at the time of writing (USD).
PRICE_PER_MILLION = {
    "write_units": Decimal("0.625"),  # DynamoDB on-demand write request units
    "read_units": Decimal("0.125"),  # DynamoDB on-demand read request units
    "sqs_fifo": Decimal("0.50"),  # SQS FIFO requests (per 64 KB chunk)
    "kms": Decimal("3.0"),  # $0.03 per 10,000 requests
}
INBOXES = 50


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


PASSWORD = "bench password"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=1000)
    args = parser.parse_args()
    per_inbox = -(-args.emails // INBOXES)
    template = load_template()
    with mock_aws(), SmtpTestServer(users={}) as smtp, DovecotServer() as dovecot:
        session = boto3.Session(region_name="us-east-1")
        _, settings = deploy(template, session)
        models = bind_models(settings.tables, region="us-east-1")
        store = CredentialStore.with_kms(models, session.client("kms"), settings.credentials_key_id)
        start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
        campaign = models.campaign(
            campaign_id="cmp_bench",
            name="bench",
            created_at=start,
            inbox_ids=[],
            steps=[
                new_step(
                    subject="Hello {{ first_name }}",
                    text="Hi {{ first_name }}, a short note.",
                    html=None,
                    delay_seconds=0,
                    new_thread=False,
                ),
                new_step(subject="-", text="Following up.", html=None, delay_seconds=0, new_thread=False),
            ],
            window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
        )
        for number in range(INBOXES):
            address = f"sender{number}@bench.example"
            smtp.users[address] = PASSWORD
            dovecot.add_user(address, PASSWORD)
            inbox_id = f"ibx_{number:03d}"
            campaign.inbox_ids.append(inbox_id)  # type: ignore[arg-type]
            inbox = models.inbox(
                inbox_id=inbox_id,
                provider="custom",
                address=address,
                owner_email="o@bench.example",
                created_at=start,
                status=InboxStatus.CONNECTED.value,
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_security="none",
                imap_host=dovecot.host,
                imap_port=dovecot.port,
                imap_security="none",
                username=address,
                daily_cap=10_000,
                # Polled at the start: follow-ups go while replies are known to be current (ten
                # minutes, two poll intervals), which the run fits in (ticks of 25 s). Polling's
                # own cost is bench_poll's.
                last_polled_at=start,
                min_gap_seconds=0,
                jitter_seconds=0,
            )
            inbox.save()
            store.seed(inbox, {"password": PASSWORD})
            for index in range(per_inbox // 2 + 1):  # two steps each
                enrollment_id = f"enr_{number:03d}_{index:04d}"
                models.enrollment(
                    enrollment_id=enrollment_id,
                    campaign_id="cmp_bench",
                    inbox_id=inbox_id,
                    email=f"p{number}.{index}@client.example",
                    fields={"first_name": "Pat"},
                    created_at=start,
                    due_inbox=inbox_id,
                    due_at=int(start.timestamp()),
                ).save()
            schedule.wake(models, inbox_id, at=start)  # as the import does
        campaign.save()

        handler = load_handler("SendFunction", template)
        sqs = session.client("sqs")
        queue_url = settings.send_queue_url
        queue = SqsQueue(sqs, queue_url)
        now = start
        sent_before = len(smtp.received)
        clock = Clock(now)
        import sendwell.services.sending as sending_module

        send_app = sys.modules["send_app"]
        # The handler reads the time itself; the benchmark moves it forward tick by tick.
        send_app.utcnow = sending_module.utcnow = clock  # type: ignore[attr-defined]
        with metered() as meter:
            while len(smtp.received) - sent_before < args.emails:
                now += timedelta(seconds=25)
                clock.now = now
                report = dispatch_service.dispatch_due_steps(models, queue, now=now)
                if report.enqueued == 0:
                    break
                while True:
                    batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
                        "Messages", []
                    )
                    if not batch:
                        break
                    records = [
                        {
                            "messageId": m["MessageId"],
                            "receiptHandle": m["ReceiptHandle"],
                            "body": m["Body"],
                            "attributes": m["Attributes"],
                            "messageAttributes": {},
                            "md5OfBody": m["MD5OfBody"],
                            "eventSource": "aws:sqs",
                            "eventSourceARN": "arn:aws:sqs:us-east-1:1:q.fifo",
                            "awsRegion": "us-east-1",
                        }
                        for m in batch
                    ]
                    result = handler({"Records": records}, LambdaContext(function_name="SendFunction"))
                    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
                    done = [m for m in batch if m["MessageId"] not in failed]
                    if done:
                        sqs.delete_message_batch(
                            QueueUrl=queue_url,
                            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                        )
        emails = len(smtp.received) - sent_before
        sqs_fifo = meter.count("sqs.")
        kms = meter.count("kms.")
        dynamo = meter.count("dynamodb.")
        cost = (
            meter.write_units * PRICE_PER_MILLION["write_units"]
            + meter.read_units * PRICE_PER_MILLION["read_units"]
            + sqs_fifo * PRICE_PER_MILLION["sqs_fifo"]
            + kms * PRICE_PER_MILLION["kms"]
        ) / emails
        print(f"emails sent: {emails} (through real SMTP + IMAP Sent copies, {INBOXES} inboxes)")
        # The send path alone (no polls, imports or token refreshes): the per-email target is judged
        # on bench_workload's realistic workload, which counts all of them.
        print(f"  DynamoDB write units per email: {meter.write_units / emails:.2f}")
        print(f"  DynamoDB read units per email:  {meter.read_units / emails:.2f}")
        print(f"  DynamoDB requests per email:    {dynamo / emails:.2f}")
        print(f"  SQS requests per email:         {sqs_fifo / emails:.2f}")
        print(f"  KMS requests per email:         {kms / emails:.2f}")
        for table, units in sorted(meter.write_units_by_table.items()):
            print(f"    write units/email on {table.removeprefix('bench-')}: {units / emails:.2f}")
        other = {k: v for k, v in meter.requests.items() if not k.startswith(("dynamodb.", "sqs.", "kms."))}
        print(f"  other AWS requests: {dict(other) or 'none'}")
        print(f"  AWS cost per 1,000,000 emails (on-demand): ${cost:,.2f}")
        print(f"  requests by operation: {dict(sorted(meter.requests.items()))}")
        send_figures = {
            "emails_sent": figure(emails, "emails"),
            "write_units_per_email": figure(float(meter.write_units) / emails, "WRU/email"),
            "read_units_per_email": figure(float(meter.read_units) / emails, "RRU/email"),
            "dynamodb_requests_per_email": figure(dynamo / emails, "requests/email"),
            "sqs_requests_per_email": figure(sqs_fifo / emails, "requests/email"),
            "kms_requests_per_email": figure(kms / emails, "requests/email"),
            "usd_per_million_emails": figure(float(cost) * 1_000_000, "USD"),
        }

        # Dispatch over 10,000 due steps (all inboxes connected, 200 waiting behind each): CPU per
        # inbox decided, and the writes it makes (none to the waiting steps).
        for enrollment in models.enrollment.scan():
            enrollment.delete()
        due_at = int((now + timedelta(days=1)).timestamp())
        with models.enrollment.batch_write() as batch:
            for index in range(10_000):
                enrollment_id = f"enr_due_{index:05d}"
                batch.save(
                    models.enrollment(
                        enrollment_id=enrollment_id,
                        campaign_id="cmp_bench",
                        inbox_id=f"ibx_{index % INBOXES:03d}",
                        email=f"d{index}@client.example",
                        fields={},
                        created_at=start,
                        due_inbox=f"ibx_{index % INBOXES:03d}",
                        due_at=due_at,
                    )
                )
        for number in range(INBOXES):
            schedule.wake(models, f"ibx_{number:03d}", at=datetime.fromtimestamp(due_at, UTC))
        tick = now + timedelta(days=1, minutes=1)
        cpu_start = time.process_time()
        with metered() as meter:
            report = dispatch_service.dispatch_due_steps(models, queue, now=tick)
        cpu = time.process_time() - cpu_start
        print(f"dispatch over 10,000 due steps on {report.inboxes} inboxes: enqueued {report.enqueued}")
        print(f"  CPU per inbox decided (moto answers in this same process): {cpu / report.inboxes * 1000:.3f} ms")
        print(f"  DynamoDB requests: {meter.count('dynamodb.')}, write units: {meter.write_units:.1f}")
        send_figures["dispatch_cpu_ms_per_inbox"] = figure(cpu / report.inboxes * 1000, "ms")
        record("send", send_figures)


if __name__ == "__main__":
    main()
