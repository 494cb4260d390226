"""What one email costs under a realistic workload: DynamoDB write and read units, SQS and KMS requests.

The workload (defaults; ``--inboxes``, ``--prospects``, ``--days``):

- 20 Outlook inboxes, created by the real service (``services.inboxes.create_inbox``: daily cap 50,
  minimum gap 120 s, jitter 60 s - the product's defaults), signed in as a sign-in leaves them
  (connected, Microsoft identity, on the poll index) with 3.5 KB of tokens each, sealed by the real
  ``CredentialStore`` under moto KMS. Four time zones (Los Angeles, New York, London, Berlin), five
  inboxes each.
- One campaign per time zone, 3 steps (follow-ups after 2 and then 3 more days), window Monday to
  Friday 08:00-18:00 local, each imported as ONE CSV batch through ``services.campaigns``: 150
  prospects per inbox, every one due at once, so each inbox has three days of backlog.
- The mail provider is in memory and behaves like Graph where it costs AWS anything: access tokens
  live 75 minutes and are refreshed (refresh token rotated, saved at once through the store's
  real ``save``) when less than 5 minutes are left, as ``adapters/graph.py`` does; a send returns
  the Sent copy's id and conversation id; a poll returns the new delta link (about 450 bytes) and
  the replies that arrived: 5% of the emails get one, 1 to 4 hours after they were sent.
- A simulated clock, one minute per tick, from Monday 00:00 UTC for 4 days. Each tick runs the real
  handlers (``local.stack.load_handler``, template settings and tables from template.yaml): every
  scheduled function whose rate (its ScheduleV2 event) falls on the tick - the dispatch scheduler
  every minute, polling and reminders at theirs - then every queue with an event source mapping
  to its function, in the template's batch sizes, until no queue has a visible message (the
  dispatch workers, the send function on the SQS FIFO send queue, and whatever else is mapped), as
  the mapping does: receive, invoke, delete the done ones. Deferred messages come back when the
  handler's ``ChangeMessageVisibility`` says, on the simulated clock (moto's SQS clock is the
  simulated one). The handlers read the time from their module's ``utcnow``, set to the clock as
  tests/service/test_fault_harness.py does.
- Tracing on: ``LAMBDA_TASK_ROOT`` and a ``_X_AMZN_TRACE_ID`` per invocation make Powertools' tracer
  and the X-Ray SDK run as in Lambda, sending segments over UDP to a local listener, which counts
  them. Metrics on (EMF to stdout) and the template's log level (INFO); stdout is counted as the
  bytes CloudWatch Logs would ingest.

Every AWS call is metered (``bench.aws_meter``: DynamoDB's sizing rules, GSI writes included) and
booked by phase and by caller (``bench.ledger``). Target: at most 6 write units per email.

No prices are used here; ``bench/cost_model.py`` prices what this writes to bench/results.json.

    python bench/bench_workload.py [--inboxes 20] [--prospects 150] [--days 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import io
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sendwell"), str(ROOT)]
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    # As in Lambda: Powertools traces only where LAMBDA_TASK_ROOT is set, and the X-Ray SDK then
    # takes each invocation's trace from _X_AMZN_TRACE_ID and sends segments to the daemon address.
    LAMBDA_TASK_ROOT=str(ROOT),
    POWERTOOLS_METRICS_DISABLED="false",
    AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR",
)
for _name in ("AWS_ENDPOINT_URL", "POWERTOOLS_TRACE_DISABLED"):
    os.environ.pop(_name, None)

import boto3  # noqa: E402
import moto.sqs.models as moto_sqs  # noqa: E402
from moto import mock_aws  # noqa: E402

from bench.aws_meter import metered  # noqa: E402
from bench.ledger import Ledger, largest_attributes, ledger, stored_sizes  # noqa: E402
from bench.results import figure, record  # noqa: E402
from bench.stack import deploy  # noqa: E402
from local.cfn import load_template, resources_of_type  # noqa: E402
from local.stack import LambdaContext, load_handler  # noqa: E402
from sendwell.adapters.confirming import ConfirmingMailboxes  # noqa: E402
from sendwell.adapters.credentials import CredentialStore, StaleCredentials  # noqa: E402
from sendwell.config import Settings  # noqa: E402
from sendwell.failures import Provider  # noqa: E402
from sendwell.models import InboxStatus, Models, bind_models  # noqa: E402
from sendwell.ports.mailbox import InboundMessage, Mailbox, SentReceipt  # noqa: E402
from sendwell.services import campaigns, inboxes  # noqa: E402
from sendwell.services.polling import polling_scheduled  # noqa: E402

START = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
ZONES = ("America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin")
TOKEN_LIFETIME = timedelta(minutes=75)  # Microsoft's access tokens: 60 to 90 minutes, 75 on average
REFRESH_MARGIN = timedelta(minutes=5)  # adapters/graph.py REFRESH_MARGIN_SECONDS
REPLY_RATE = 0.05
TARGET_WRITE_UNITS = 6


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


def outlook_tokens(now: datetime) -> dict[str, Any]:
    """Tokens the size Microsoft issues: a 2 KB access token, a 1.4 KB refresh token (3.5 KB)."""
    return {
        "access_token": "EwB" + secrets.token_urlsafe(1500)[:1997],
        "refresh_token": "0.A" + secrets.token_urlsafe(1050)[:1397],
        "expires_at": int((now + TOKEN_LIFETIME).timestamp()),
        "scopes": ["Mail.Read", "Mail.Send", "User.Read", "offline_access", "openid", "profile"],
    }


def delta_link() -> str:
    """A Graph delta link as Outlook returns it (about 450 bytes): the poll cursor."""
    token = secrets.token_urlsafe(240)
    return f"https://graph.microsoft.com/v1.0/me/mailFolders('Inbox')/messages/delta?$deltatoken={token}"


def fraction(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


@dataclass
class OutlookBox:
    """One Outlook mailbox in memory: what it sent, and the replies on their way to it."""

    address: str
    clock: Clock
    sent: int = 0
    polls: int = 0
    replies: list[tuple[datetime, InboundMessage]] = field(default_factory=list)
    confirms_by_sent = True  # Graph: not in Sent Items means not sent

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        self.sent += 1
        message_id = str(message["Message-ID"])
        if fraction(message_id) < REPLY_RATE:
            at = self.clock.now + timedelta(hours=1 + 3 * fraction("delay" + message_id))
            raw = (
                f"From: {message['To']}\r\nTo: {self.address}\r\nSubject: Re: {message['Subject']}\r\n"
                f"Message-ID: <reply.{message_id.strip('<>')}>\r\nIn-Reply-To: {message_id}\r\n"
                f"References: {message_id}\r\nDate: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n\r\n"
                "Thanks, happy to talk next week.\r\n"
            ).encode()
            self.replies.append((at, InboundMessage.parse("AAMkAGI" + secrets.token_urlsafe(110), raw)))
        # Graph answers with the Sent copy's id and its conversation (adapters/graph.py send).
        conversation = thread_id or "AAQkAGI" + hashlib.sha256(message_id.encode()).hexdigest()[:100]
        return SentReceipt(provider_message_id="AAMkAGI" + secrets.token_urlsafe(110), thread_id=conversation)

    def find_sent(self, message_id: str) -> SentReceipt | None:
        return None

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        self.polls += 1
        arrived = [m for at, m in self.replies if at <= self.clock.now]
        self.replies = [(at, m) for at, m in self.replies if at > self.clock.now]
        return arrived, delta_link()


@dataclass
class OutlookMailboxes:
    """Opens an inbox as ProviderMailboxes does for Outlook: the function's own credential store
    (its cache is the container's), and a token refresh saved at once when the token runs out."""

    store: CredentialStore
    clock: Clock
    boxes: dict[str, OutlookBox]
    refreshes: Counter[str] = field(default_factory=Counter)

    def open(self, inbox: Any, *, fresh_token: bool = False) -> Mailbox:
        stored = self.store.current(inbox)
        expires_at = int(stored.values.get("expires_at", 0))
        if fresh_token or expires_at - self.clock.epoch() <= REFRESH_MARGIN.total_seconds():
            try:  # MicrosoftTokens.refresh -> _CredentialSaver: the rotated refresh token, saved at once
                self.store.save(inbox, outlook_tokens(self.clock.now), over=stored.version)
                self.refreshes["saved"] += 1
            except StaleCredentials:
                self.store.reload(inbox)
                self.refreshes["lost to a concurrent refresh"] += 1
        return self.boxes[inbox.inbox_id]


class LogBytes(io.TextIOBase):
    """stdout while handlers run: counts what CloudWatch Logs would ingest, per phase."""

    def __init__(self, book: Callable[[], str]) -> None:
        self.bytes: Counter[str] = Counter()
        self._book = book

    def write(self, text: str) -> int:
        self.bytes[self._book()] += len(text.encode())
        return len(text)

    def writable(self) -> bool:
        return True


class XRayListener:
    """The X-Ray daemon's UDP port: counts segment documents and their bytes."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.documents = 0
        self.bytes = 0
        self.traces: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            self.documents += 1
            self.bytes += len(data)
            marker = data.find(b'"trace_id": "')
            if marker < 0:
                marker = data.find(b'"trace_id":"')
            if marker >= 0:
                start = data.index(b'"1-', marker) + 1
                self.traces.add(data[start : data.index(b'"', start)].decode())

    def close(self) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()
        self._socket.close()


@dataclass
class Invocations:
    count: Counter[str] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # handler wall time


class Deployment:
    """template.yaml on moto, the real handlers, the simulated clock and the meter's phase."""

    def __init__(self, clock: Clock, book: Ledger, stack: Any, session: boto3.Session, settings: Settings) -> None:
        self.clock, self.book, self.stack, self.session, self.settings = clock, book, stack, session, settings
        self.models: Models = bind_models(settings.tables, region="us-east-1")
        self.boxes: dict[str, OutlookBox] = {}
        self.invocations = Invocations()
        self.sqs = session.client("sqs")
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.mailboxes: dict[str, OutlookMailboxes] = {}
        template = load_template()
        self.schedules, self.mappings = schedules_of(template), mappings_of(template)
        for logical_id in [*self.schedules, *(function for function, _ in self.mappings.values())]:
            self.handlers[logical_id] = self._load(logical_id, template)
        # Outside an invocation (setup, the bench's own reads) there is no trace to add to.
        logging.getLogger("aws_xray_sdk").setLevel(logging.CRITICAL)

    def _load(self, logical_id: str, template: dict[str, Any]) -> Callable[..., Any]:
        handler = load_handler(logical_id, template)
        module = inspect.unwrap(handler).__globals__
        module["utcnow"] = self.clock
        parts = module["PARTS"]
        context = getattr(parts, "context", None)
        if context is not None and hasattr(context, "mailboxes"):
            store = CredentialStore.with_kms(self.models, self.session.client("kms"), self.settings.credentials_key_id)
            inner = OutlookMailboxes(store, self.clock, self.boxes)
            self.mailboxes[logical_id] = inner
            mailboxes = ConfirmingMailboxes(inner, self.models, wait_seconds=0)
            module["PARTS"] = dataclasses.replace(parts, context=dataclasses.replace(context, mailboxes=mailboxes))
        return handler

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        self.book.phase = logical_id
        os.environ["_X_AMZN_TRACE_ID"] = (
            f"Root=1-{int(self.clock.epoch()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=1"
        )
        started = time.perf_counter()
        try:
            return self.handlers[logical_id](event, LambdaContext(function_name=logical_id))
        finally:
            self.invocations.seconds[logical_id] += time.perf_counter() - started
            self.invocations.count[logical_id] += 1
            self.book.phase = "bench"

    def deliver(self, queue: str, function: str, *, batch: int) -> int:
        """Everything visible on ``queue`` now, to ``function`` in batches, as the event source
        mapping hands it over (its receives and deletes are booked to the mapping); how many."""
        url = self.stack.refs[queue]
        arn = self.stack.attributes[(queue, "Arn")]
        delivered = 0
        while True:
            self.book.phase = f"EventSourceMapping:{queue}"
            received = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=batch, AttributeNames=["All"]).get(
                "Messages", []
            )
            if not received:
                # The mapping long-polls all the time, whatever the queue holds: the cost model
                # prices that polling as a fixed cost, so the empty receives are booked apart.
                self.book.rebook(self.book.phase, f"{self.book.phase} (empty)", "sqs.ReceiveMessage", url)
                self.book.phase = "bench"
                return delivered
            records = [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": "us-east-1",
                }
                for m in received
            ]
            result = self.invoke(function, {"Records": records})
            failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
            done = [m for m in received if m["MessageId"] not in failed]
            self.book.phase = f"EventSourceMapping:{queue}"
            if done:
                self.sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
            delivered += len(received)
            # Failed ones stay invisible until their visibility timeout (or the handler's own
            # ChangeMessageVisibility), on the simulated clock.


def schedules_of(template: dict[str, Any]) -> dict[str, int]:
    """Each scheduled function and its rate in minutes (its ScheduleV2 events in template.yaml)."""
    out: dict[str, int] = {}
    for name, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] in ("Schedule", "ScheduleV2"):
                amount, unit = event["Properties"]["ScheduleExpression"].removeprefix("rate(").rstrip(")").split()
                out[name] = int(amount) * (60 if unit.startswith("hour") else 1)
    return out


def mappings_of(template: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Each queue with an event source mapping: its function and batch size (template.yaml)."""
    out: dict[str, tuple[str, int]] = {}
    for name, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
                out[queue] = (name, int(event["Properties"].get("BatchSize", 10)))
    return out


def connect_outlook_inboxes(aws: Deployment, store: CredentialStore, count: int) -> dict[str, list[str]]:
    """The inboxes, created by the admin service and signed in; their ids by time zone."""
    by_zone: dict[str, list[str]] = {zone: [] for zone in ZONES}
    table = aws.models.inbox
    for number in range(count):
        zone = ZONES[number % len(ZONES)]
        inbox = inboxes.create_inbox(
            aws.models,
            inboxes.NewInbox(
                provider=Provider.OUTLOOK,
                address=f"alex.morgan{number}@agency{number % 7}.example",
                owner_email=f"owner{number}@client.example",
                display_name=f"Alex Morgan {number}",
                timezone=zone,
            ),
            now=START - timedelta(days=30),
            created_by="admin@agency.example",
        )
        # What a Microsoft sign-in leaves on the row (services.reconnect): connected, the
        # mailbox's identity, the credentials' version, on the poll index, a delta link.
        inbox.update(
            actions=[
                table.status.set(InboxStatus.CONNECTED.value),
                table.identity_issuer.set(f"https://login.microsoftonline.com/{secrets.token_hex(16)}/v2.0"),
                table.identity_subject.set(f"{secrets.token_hex(16)}"),
                table.credentials_version.set(1),
                table.last_polled_at.set(START - timedelta(minutes=1)),
                table.poll_cursor.set(delta_link()),
                *scheduled_for_polling(table),
            ]
        )
        store.seed(inbox, outlook_tokens(START - timedelta(hours=2)))  # expired: the first use refreshes
        aws.boxes[inbox.inbox_id] = OutlookBox(inbox.address, aws.clock)
        by_zone[zone].append(inbox.inbox_id)
    return by_zone


def scheduled_for_polling(table: Any) -> list[Any]:
    """``polling_scheduled``'s actions, whichever of its signatures this tree has."""
    if "now" in inspect.signature(polling_scheduled).parameters:
        return list(polling_scheduled(table, now=START))  # type: ignore[call-arg]
    return list(polling_scheduled(table))


def import_campaigns(aws: Deployment, by_zone: dict[str, list[str]], prospects_per_inbox: int) -> int:
    """One campaign per time zone, 3 steps, each imported as one CSV batch (every prospect due now)."""
    imported = 0
    for zone, ids in by_zone.items():
        if not ids:
            continue
        aws.book.phase = "setup"
        spec = campaigns.CampaignSpec(
            name=f"Q1 outreach {zone}",
            inbox_ids=ids,
            steps=[
                campaigns.StepSpec(
                    subject="{{ first_name }}, a question about {{ company }}",
                    text="Hi {{ first_name }},\n\nI noticed {{ company }} is hiring. We help teams like yours "
                    "book more meetings without more headcount. Worth a short call next week?\n\nAlex",
                ),
                campaigns.StepSpec(
                    subject="-", text="Hi {{ first_name }}, just bumping this up in your inbox.", delay_days=2
                ),
                campaigns.StepSpec(
                    subject="-", text="Hi {{ first_name }}, last note from me: shall I close your file?", delay_days=3
                ),
            ],
            days=(0, 1, 2, 3, 4),
            start="08:00",
            end="18:00",
            timezone=zone,
        )
        campaign = campaigns.create_campaign(aws.models, spec, now=START, actor="admin@agency.example")
        rows = ["email,first_name,company"] + [
            f"p{n}.{zone.split('/')[1].lower()}@prospect{n % 50}.example,Pat{n},Company {n % 97}"
            for n in range(prospects_per_inbox * len(ids))
        ]
        aws.book.phase = "import"
        result = campaigns.import_prospects(
            aws.models, campaign.campaign_id, "\n".join(rows).encode(), now=START, actor="admin@agency.example"
        )
        imported += result.imported
    aws.book.phase = "bench"
    return imported


def per(value: float, emails: int) -> float:
    return value / emails if emails else 0.0


def verdict(within: bool, emails: int) -> str:
    """A target with no email sent is not met, it is not measured (a run too short, a window shut)."""
    if not emails:
        return "not measured: no email was sent"
    return "met" if within else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inboxes", type=int, default=20)
    parser.add_argument("--prospects", type=int, default=150, help="prospects per inbox")
    parser.add_argument("--days", type=float, default=4)
    args = parser.parse_args()
    template = load_template()
    clock = Clock(START)
    out = sys.stdout
    xray = XRayListener()
    os.environ["AWS_XRAY_DAEMON_ADDRESS"] = xray.address
    # moto's SQS keeps time (visibility timeouts, delays, deduplication) on the simulated clock.
    setattr(moto_sqs, "unix_time", clock.epoch)  # noqa: B010 - moto does not export them
    setattr(moto_sqs, "unix_time_millis", lambda: clock.epoch() * 1000)  # noqa: B010
    wall_started = time.perf_counter()
    with mock_aws(), metered() as meter, ledger(meter, table_prefix="bench-") as book:
        session = boto3.Session(region_name="us-east-1")
        stack, settings = deploy(template, session)
        logs = LogBytes(lambda: book.phase)
        sys.stdout = logs  # the loggers bind to stdout when loaded
        try:
            aws = Deployment(clock, book, stack, session, settings)
            setup_store = CredentialStore.with_kms(aws.models, session.client("kms"), settings.credentials_key_id)
            by_zone = connect_outlook_inboxes(aws, setup_store, args.inboxes)
            imported = import_campaigns(aws, by_zone, args.prospects)
            ticks = int(args.days * 24 * 60)
            ready = 0
            for tick in range(ticks):
                clock.now = START + timedelta(minutes=tick)
                for function, every in aws.schedules.items():
                    if tick % every == 0:
                        answer = aws.invoke(function, {})
                        if function == "DispatchFunction" and isinstance(answer, dict):
                            ready += int(answer.get("inboxes", 0))
                # Then every queue to its function, until none has anything visible: a worker's
                # sends are delivered in the same minute, as the event source mappings would.
                while sum(aws.deliver(queue, function, batch=size) for queue, (function, size) in aws.mappings.items()):
                    pass
        finally:
            sys.stdout = out
        xray.close()
        emails = sum(box.sent for box in aws.boxes.values())
        inbox_sizes = stored_sizes(settings.tables.inboxes)
        credential_sizes = stored_sizes(settings.tables.credentials)
        enrollment_sizes = stored_sizes(settings.tables.enrollments)
        activity_sizes = stored_sizes(settings.tables.activity)
        inbox_attributes = largest_attributes(settings.tables.inboxes)
        refreshes = sum((m.refreshes for m in aws.mailboxes.values()), Counter[str]())
        replies = sum(1 for box in aws.boxes.values() for _ in box.replies)
    wall = time.perf_counter() - wall_started
    report(
        args=args,
        book=book,
        aws=aws,
        emails=emails,
        imported=imported,
        ready=ready,
        polled=sum(box.polls for box in aws.boxes.values()),
        ticks=ticks,
        logs=logs,
        xray=xray,
        sizes={
            "inbox": inbox_sizes,
            "credentials": credential_sizes,
            "enrollment": enrollment_sizes,
            "activity": activity_sizes,
        },
        inbox_attributes=inbox_attributes,
        refreshes=refreshes,
        replies_pending=replies,
        wall=wall,
    )


def phase_groups(aws: Deployment) -> dict[str, set[str]]:
    """The phases of each part of the system: its functions' invocations and their mappings' calls."""
    groups: dict[str, set[str]] = {
        "import": {"import"},
        "dispatch": set(),
        "send": set(),
        "poll": set(),
        "other": set(),
    }
    owner = {f"EventSourceMapping:{queue}": function for queue, (function, _) in aws.mappings.items()}
    for phase in [*aws.handlers, *owner]:
        function = owner.get(phase, phase)
        part = next((p for p in ("dispatch", "send", "poll") if function.lower().startswith(p)), "other")
        groups[part].add(phase)
    return groups


def report(
    *,
    args: argparse.Namespace,
    book: Ledger,
    aws: Deployment,
    emails: int,
    imported: int,
    ready: int,
    polled: int,
    ticks: int,
    logs: LogBytes,
    xray: XRayListener,
    sizes: dict[str, list[int]],
    inbox_attributes: list[tuple[str, int]],
    refreshes: Counter[str],
    replies_pending: int,
    wall: float,
) -> None:
    inbox_polls = polled
    PHASES = phase_groups(aws)
    FUNCTIONS = list(aws.handlers)
    write_total, read_total = float(book.writes()), float(book.reads())
    print(
        f"workload: {args.inboxes} Outlook inboxes in {len(ZONES)} time zones, {imported} prospects imported in "
        f"{len(ZONES)} batches, {args.days:g} simulated days ({ticks} ticks, {wall:.0f} s wall)"
    )
    print(f"  emails sent: {emails}   token refreshes: {dict(refreshes)}   inbox polls: {inbox_polls}")
    print(
        f"  DynamoDB write units per email: {per(write_total, emails):.2f}   (target <= {TARGET_WRITE_UNITS})"
        f"   {verdict(per(write_total, emails) <= TARGET_WRITE_UNITS, emails)}"
    )
    print(f"  DynamoDB read units per email:  {per(read_total, emails):.2f}")
    print(f"  SQS requests per email:         {per(book.count('sqs.'), emails):.2f}")
    print(f"  KMS requests per email:         {per(book.count('kms.'), emails):.3f}")
    print(f"  X-Ray: {len(xray.traces)} traces, {xray.documents} segment documents, {xray.bytes} bytes")
    print("  by phase (units per email: write / read; SQS and KMS requests per email):")
    for name, phases in PHASES.items():
        print(
            f"    {name:<9} {per(float(book.writes(phases)), emails):6.2f} / "
            f"{per(float(book.reads(phases)), emails):5.2f}"
            f"   sqs {per(book.count('sqs.', phases), emails):5.2f}   kms {per(book.count('kms.', phases), emails):.3f}"
        )
    print("  write units per email by table:")
    for table, units in book.by(book.write_units, 1):
        print(f"    {table:<22} {per(float(units), emails):6.2f}")
    print("  read units per email by table:")
    for table, units in book.by(book.read_units, 1):
        print(f"    {table:<22} {per(float(units), emails):6.2f}")
    writes_by_call: defaultdict[str, Decimal] = defaultdict(Decimal)
    requests_by_call: Counter[str] = Counter()
    for (phase, table, operation, who), spent in book.write_units.items():
        writes_by_call[f"{phase} {table} {operation} {who}"] += spent
    for (phase, table, operation, who), n in book.write_requests.items():
        requests_by_call[f"{phase} {table} {operation} {who}"] += n
    print("  write units per email by phase, table, operation and caller (requests per email):")
    for key, spent in sorted(writes_by_call.items(), key=lambda pair: -pair[1]):
        if phase_of(key) == "setup":
            continue
        print(f"    {per(float(spent), emails):6.3f}  ({per(requests_by_call[key], emails):5.3f})  {key}")
    print("  SQS and KMS requests per email by phase and operation:")
    for (phase, name), n in sorted(book.calls.items()):
        if name.startswith(("sqs.", "kms.")) and phase != "setup":
            print(f"    {per(n, emails):6.3f}  {phase} {name}")
    for kind in ("inbox", "credentials", "enrollment"):
        values = sizes[kind]
        if values:
            print(
                f"  {kind} item size: mean {sum(values) / len(values):.0f} B, max {max(values)} B ({len(values)} items)"
            )
    print("  largest attributes of the largest inbox row: " + ", ".join(f"{n} {b} B" for n, b in inbox_attributes))
    print("  invocations and wall time on moto (per invocation), stdout bytes per invocation:")
    for function in FUNCTIONS:
        n = aws.invocations.count[function]
        if n:
            print(
                f"    {function:<24} {n:6d}  {aws.invocations.seconds[function] / n * 1000:7.1f} ms"
                f"  (in AWS calls {book.seconds[function] / n * 1000:6.1f} ms)  {logs.bytes[function] / n:7.0f} B"
            )
    poll_phase = PHASES["poll"]
    refresh_units = sum(u for (_, _, _, who), u in book.write_units.items() if who == "adapters/credentials:save")
    figures: dict[str, Any] = {
        "workload": {
            "inboxes": figure(args.inboxes, "inboxes"),
            "prospects_per_inbox": figure(args.prospects, "prospects"),
            "simulated_days": figure(float(args.days), "days"),
            "ticks": figure(ticks, "minutes"),
            "imported": figure(imported, "prospects"),
            "reply_rate": figure(REPLY_RATE, "replies per email"),
            "replies_not_yet_arrived": figure(replies_pending, "replies"),
        },
        "emails_sent": figure(emails, "emails"),
        "write_units_per_email": figure(per(write_total, emails), "WRU/email"),
        "read_units_per_email": figure(per(read_total, emails), "RRU/email"),
        "target_write_units_per_email": figure(TARGET_WRITE_UNITS, "WRU/email"),
        "sqs_requests_per_email": figure(per(book.count("sqs."), emails), "requests/email"),
        "kms_requests_per_email": figure(per(book.count("kms."), emails), "requests/email"),
        "token_refreshes_per_email": figure(per(refreshes["saved"], emails), "refreshes/email"),
        "xray_traces": figure(len(xray.traces), "traces"),
        "xray_segment_documents": figure(xray.documents, "documents"),
        "inbox_polls": figure(inbox_polls, "polls"),
        "poll_write_units_per_inbox_poll": figure(per(float(book.writes(poll_phase)), inbox_polls), "WRU/poll"),
        "poll_read_units_per_inbox_poll": figure(per(float(book.reads(poll_phase)), inbox_polls), "RRU/poll"),
        "poll_kms_requests_per_inbox_poll": figure(per(book.count("kms.", poll_phase), inbox_polls), "requests/poll"),
        "dispatch_inboxes_ready_per_inbox_tick": figure(per(ready, ticks * args.inboxes), "inboxes/inbox/tick"),
        "by_phase": {
            name: {
                "write_units_per_email": figure(per(float(book.writes(phases)), emails), "WRU/email"),
                "read_units_per_email": figure(per(float(book.reads(phases)), emails), "RRU/email"),
                "sqs_requests_per_email": figure(per(book.count("sqs.", phases), emails), "requests/email"),
                "kms_requests_per_email": figure(per(book.count("kms.", phases), emails), "requests/email"),
            }
            for name, phases in PHASES.items()
        },
        "write_units_per_email_by_table": {
            table: figure(per(float(units), emails), "WRU/email") for table, units in book.by(book.write_units, 1)
        },
        "read_units_per_email_by_table": {
            table: figure(per(float(units), emails), "RRU/email") for table, units in book.by(book.read_units, 1)
        },
        "write_units_per_email_by_call": {
            key: figure(per(float(units), emails), "WRU/email")
            for key, units in sorted(writes_by_call.items(), key=lambda pair: -pair[1])
            if phase_of(key) != "setup"
        },
        "item_bytes": {
            kind: figure(sum(values) / len(values) if values else 0, "bytes (mean)") for kind, values in sizes.items()
        },
        "item_bytes_max": {kind: figure(max(values, default=0), "bytes") for kind, values in sizes.items()},
        "functions": {
            function: {
                "invocations": figure(aws.invocations.count[function], "invocations"),
                "invocations_per_email": figure(per(aws.invocations.count[function], emails), "invocations/email"),
                "wall_ms_per_invocation": figure(
                    per(aws.invocations.seconds[function] * 1000, aws.invocations.count[function]), "ms (moto)"
                ),
                "aws_call_ms_per_invocation": figure(
                    per(book.seconds[function] * 1000, aws.invocations.count[function]), "ms (moto)"
                ),
                "dynamodb_calls_per_invocation": figure(
                    per(book.count("dynamodb.", {function}), aws.invocations.count[function]), "calls"
                ),
                "sqs_calls_per_invocation": figure(
                    per(book.count("sqs.", {function}), aws.invocations.count[function]), "calls"
                ),
                "other_calls_per_invocation": figure(
                    per(
                        sum(n for (p, name), n in book.calls.items() if p == function)
                        - book.count("dynamodb.", {function})
                        - book.count("sqs.", {function}),
                        aws.invocations.count[function],
                    ),
                    "calls",
                ),
                "log_bytes_per_invocation": figure(per(logs.bytes[function], aws.invocations.count[function]), "B"),
                "write_units_per_invocation": figure(
                    per(float(book.writes({function})), aws.invocations.count[function]), "WRU"
                ),
                "read_units_per_invocation": figure(
                    per(float(book.reads({function})), aws.invocations.count[function]), "RRU"
                ),
                "kms_calls_per_invocation": figure(
                    per(book.count("kms.", {function}), aws.invocations.count[function]), "calls"
                ),
            }
            for function in FUNCTIONS
        },
        "sqs_requests_per_email_by_queue_type": {
            "standard": figure(per(book.sqs("standard"), emails), "requests/email"),
            "fifo": figure(per(book.sqs("fifo"), emails), "requests/email"),
        },
        "token_refresh": {
            "per_inbox_day": figure(per(refreshes["saved"], args.inboxes) / args.days, "refreshes/inbox/day"),
            "write_units_each": figure(per(float(refresh_units), refreshes["saved"]), "WRU"),
        },
        "event_source_sqs_requests_per_email": {
            queue: figure(per(book.count("sqs.", {f"EventSourceMapping:{queue}"}), emails), "requests/email")
            for queue in aws.mappings
        },
    }
    record("workload", figures)
    print("  written to bench/results.json under 'workload'")


def phase_of(key: str) -> str:
    return key.split(" ", 1)[0]


if __name__ == "__main__":
    main()
