"""The fault harness: every AWS call of a handler path, failed in turn with each kind of fault.

For each path (send, poll, auth failure, reconnect, backlog release) a fault-free run counts the
AWS calls the path makes, N.
Then, for every k in 1..N and every fault kind (``tests.faults``), the k-th call fails, the system
retries as AWS would (SQS redelivers a failed or crashed message, the schedule runs again), and
the promises are checked once it has settled:

- no step sent twice, and no step lost: each ends sent, stopped, unconfirmed (never resent by
  itself), or still pending and dispatchable;
- no reply lost: a prospect who replied is stopped as replied, and the poll cursor has not moved
  past the reply without it;
- a disconnect only for a permission loss, with one incident and one notice per recipient;
- a reconnect ends connected, with its new credentials, its backlog paced and every prospect who
  replied meanwhile stopped, and the link's creator and the owner told once each.

Each test writes its table of k x outcome to ``test-artifacts/fault-harness-<path>.json``.
The providers are in memory (``MemoryMailbox``): the faults here are AWS's; the providers' own
(lost SMTP answers, timeouts) have their tests against real servers in the e2e tier.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from local.stack import LambdaContext, http_event, http_routes
from sendwell.adapters.credentials import CredentialStore
from sendwell.failures import Failure, FailureKind
from sendwell.ids import step_message_id
from sendwell.models import EnrollmentState, Inbox, InboxStatus, new_step, new_window
from sendwell.ports.mailbox import InboundMessage
from sendwell.ports.messages import AuthFailureReport
from sendwell.services import links, polling, schedule
from tests.deployment import Deployment, deployed, emails_to, forget_sent_emails
from tests.faults import FAULT_KINDS, AwsFaults, Crash, aws_faults
from tests.memory_providers import MemoryMailbox, MemoryMailboxes
from tests.template import PARAMETERS, TEMPLATE

# Each path runs (calls x fault kinds) times against moto: minutes, not the suite's two per test.
pytestmark = pytest.mark.timeout(600)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
MAX_RECEIVES = 5  # the template's maxReceiveCount
ADMIN = PARAMETERS["AdminEmails"]


# ---------------------------------------------------------------------------------------------
# The deployment, its handlers and a clock


@dataclasses.dataclass(frozen=True)
class ShortLivedContext(LambdaContext):
    """An invocation with moments left: an in-progress idempotency record it leaves behind (a
    crash) has expired by the next delivery, as it has after SQS's visibility timeout."""

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 1


@dataclass
class Harness:
    aws: Deployment
    faults: AwsFaults
    mailboxes: MemoryMailboxes
    now: datetime = START
    serial: int = 0

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}_{self.serial:05d}"

    def handler(self, logical_id: str) -> Callable[..., Any]:
        """The real handler, its wired context pointed at the memory providers and the clock."""
        handler = self.aws.handler(logical_id)
        # The module's own namespace: loading a sibling function from the same folder (the dispatch
        # scheduler and its worker) drops this module from sys.modules, as a new container would.
        module = inspect.unwrap(handler).__globals__
        parts = module["PARTS"]
        context = getattr(parts, "context", None)
        if hasattr(context, "mailboxes") and context.mailboxes is not self.mailboxes:
            context = dataclasses.replace(context, mailboxes=self.mailboxes)
            module["PARTS"] = dataclasses.replace(parts, context=context)
        poll = getattr(context, "poll", None)  # the reconnect worker's catch-up poll
        if poll is not None and poll.mailboxes is not self.mailboxes:
            context = dataclasses.replace(context, poll=dataclasses.replace(poll, mailboxes=self.mailboxes))
            module["PARTS"] = dataclasses.replace(parts, context=context)
        if "utcnow" in module:
            module["utcnow"] = lambda: self.now
        # The handler and its sibling modules (the reconnect routes) read the clock.
        folder = Path(module["__file__"] or "").parent
        for sibling in list(sys.modules.values()):
            if Path(getattr(sibling, "__file__", None) or "/").parent == folder and hasattr(sibling, "utcnow"):
                sibling.utcnow = lambda: self.now
        return handler

    def invoke(self, logical_id: str, event: dict[str, Any], *, fail_at: int | None, kind: str) -> Any:
        """One invocation; its AWS calls are counted, and the k-th fails. A failed invocation (a
        crash, or an error raised out of the handler) returns None: Lambda retries it (a schedule
        runs again, SQS delivers the whole batch again)."""
        handler = self.handler(logical_id)
        time.sleep(0.005)  # past the in-progress expiry of the invocation before
        with self.faults.counting(fail_at=fail_at, kind=kind):
            try:
                return handler(event, ShortLivedContext(function_name=logical_id))
            except (Crash, Exception):  # noqa: BLE001 - any failed invocation is retried by AWS
                return None

    def poll(self, *inboxes: Inbox, fail_at: int | None = None, kind: str = "") -> None:
        """One poll tick: the scheduler, then the workers, for ``inboxes`` (their slots put in the
        minute just ended) and whatever else is due."""
        table = self.aws.models.inbox
        for inbox in inboxes:
            table.get(inbox.inbox_id).update(
                actions=[table.poll_shard.set("0"), table.poll_slot.set(polling.slots_due(self.now)[0])]
            )
        self.invoke("PollFunction", {}, fail_at=fail_at, kind=kind)
        while deliver_queue(self, "PollQueue", "PollWorkerFunction", fail_at=fail_at, kind=kind):
            pass

    def add_inbox(
        self,
        *,
        status: InboxStatus = InboxStatus.CONNECTED,
        provider: str = "custom",
        owner_email: str | None = None,
        **extra: Any,
    ) -> Inbox:
        inbox_id = self.next_id("ibx")
        address = f"{inbox_id}@agency.example"
        inbox = self.aws.models.inbox(
            inbox_id=inbox_id,
            provider=provider,
            address=address,
            owner_email=owner_email or f"owner.{inbox_id}@client.example",
            created_at=START - timedelta(days=30),
            status=status.value,
            smtp_host="smtp.agency.example",
            smtp_port=587,
            imap_host="imap.agency.example",
            imap_port=993,
            daily_cap=100_000,
            min_gap_seconds=60,
            jitter_seconds=0,
            last_polled_at=START - timedelta(minutes=1),
            **extra,
        )
        inbox.window.tz = "UTC"
        inbox.save()
        self.mailboxes.store.seed(inbox, {"password": "correct horse"})
        self.mailboxes.boxes[inbox_id] = MemoryMailbox(address)
        self.aws.models.campaign(
            campaign_id=f"cmp_{inbox_id}",
            name="Q4",
            created_at=START,
            inbox_ids=[inbox_id],
            steps=[
                new_step(subject="Quick question", text="Hi {{ email }}", html=None, delay_seconds=0, new_thread=False),
                new_step(subject="re", text="Bumping this.", html=None, delay_seconds=30 * 86400, new_thread=False),
            ],
            window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
        ).save()
        return inbox

    def enroll(self, inbox: Inbox, *, step_index: int = 0, due: datetime | None = None) -> str:
        enrollment_id = self.next_id("enr")
        self.aws.models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id=f"cmp_{inbox.inbox_id}",
            inbox_id=inbox.inbox_id,
            email=f"{enrollment_id}@prospect.example",
            created_at=START,
            step_index=step_index,
            due_inbox=inbox.inbox_id,
            due_at=int((due or self.now).timestamp()),
        ).save()
        schedule.wake(self.aws.models, inbox.inbox_id, at=due or self.now)
        return enrollment_id


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with pytest.MonkeyPatch.context() as env, deployed(env, prefix="faults") as aws, aws_faults() as faults:
        store = CredentialStore.with_kms(aws.models, aws.client("kms"), aws.settings.credentials_key_id)
        yield Harness(aws=aws, faults=faults, mailboxes=MemoryMailboxes(store))


def write_table(path_name: str, table: dict[str, dict[str, int]]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    ARTIFACTS.joinpath(f"fault-harness-{path_name}.json").write_text(json.dumps(table, indent=2, sort_keys=True))


def run_every_fault(harness: Harness, path_name: str, scenario: Callable[[int | None, str], str]) -> None:
    """Count the path's calls fault-free, then run it with each fault at each k; tabulate outcomes."""
    # The first run may do what later ones don't (the inbox's first send of the day); count the
    # steady path, the second time.
    for _ in range(2):
        harness.faults.reset()
        assert scenario(None, "") == "clean"
    calls = harness.faults.calls
    assert calls > 3, harness.faults.operations
    table: dict[str, dict[str, int]] = {"calls": {"n": calls}}
    for kind in FAULT_KINDS:
        outcomes: Counter[str] = Counter()
        for k in range(1, calls + 1):
            harness.faults.reset()
            outcomes[scenario(k, kind)] += 1
        table[kind] = dict(outcomes)
    write_table(path_name, table)


# ---------------------------------------------------------------------------------------------
# Send: dispatch, the send queue, the send function


def deliver_queue(
    harness: Harness, queue: str, function: str, *, fail_at: int | None, kind: str, max_messages: int = 10
) -> int:
    """One delivery of what the queue holds, as the event source mapping would make it; how many
    messages it delivered."""
    aws = harness.aws
    sqs = aws.client("sqs")
    url = aws.stack.refs[queue]
    arn = aws.stack.attributes[(queue, "Arn")]
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=max_messages, AttributeNames=["All"]).get(
        "Messages", []
    )
    if not received:
        return 0
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": "us-east-1",
        }
        for m in received
    ]
    result = harness.invoke(function, {"Records": records}, fail_at=fail_at, kind=kind)
    if result is None:  # the invocation failed: the whole batch comes back
        failed = {record["messageId"] for record in records}
    else:
        failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    for message in received:
        if message["MessageId"] in failed:
            # Back once its visibility timeout has passed (here: at once, the clock moves on).
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        else:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(received)


def deliver_send_queue(harness: Harness, *, fail_at: int | None, kind: str) -> None:
    deliver_queue(harness, "SendQueue", "SendFunction", fail_at=fail_at, kind=kind)


def send_scenario(harness: Harness, inbox: Inbox) -> Callable[[int | None, str], str]:
    models = harness.aws.models

    def run(fail_at: int | None, kind: str) -> str:
        enrollment_id = harness.enroll(inbox)
        message_id = step_message_id(enrollment_id, 0, inbox.address)
        box = harness.mailboxes.boxes[inbox.inbox_id]
        for _ in range(8):
            harness.invoke("DispatchFunction", {}, fail_at=fail_at, kind=kind)
            deliver_queue(harness, "DispatchQueue", "DispatchWorkerFunction", fail_at=fail_at, kind=kind)
            deliver_send_queue(harness, fail_at=fail_at, kind=kind)
            harness.now += timedelta(minutes=2)
            enrollment = models.enrollment.get(enrollment_id, consistent_read=True)
            if enrollment.step_index == 1 or enrollment.state != EnrollmentState.ACTIVE:
                break
        harness.aws.drain(harness.aws.stack.refs["SendDeadLetterQueue"])
        sent = box.deliveries(message_id)
        where = f"k={fail_at} {kind} {harness.faults.injected}"
        assert sent <= 1, f"step sent {sent} times ({where})"
        if enrollment.step_index == 1:
            assert sent == 1, f"recorded as sent but never delivered ({where})"
            outcome = "sent"
        elif enrollment.state == EnrollmentState.UNCONFIRMED:
            outcome = "unconfirmed"  # held for a person, never resent by itself
        else:
            # Not sent: it must still be pending and dispatchable.
            assert sent == 0, f"delivered but not recorded, and not held ({where})"
            assert enrollment.state == EnrollmentState.ACTIVE and enrollment.due_at is not None, where
            outcome = "pending"
        if fail_at is not None and harness.faults.injected is None:
            outcome = "no fault reached"
        models.enrollment.get(enrollment_id).delete()
        return outcome if fail_at is not None or outcome != "sent" else "clean"

    return run


def test_send_path_survives_every_fault_at_every_call(harness: Harness) -> None:
    inbox = harness.add_inbox()
    run_every_fault(harness, "send", send_scenario(harness, inbox))


# ---------------------------------------------------------------------------------------------
# Poll: a reply arrives for a prospect with a follow-up due later


def reply_to(address: str, prospect: str, message_id: str) -> InboundMessage:
    raw = (
        f"From: {prospect}\r\nTo: {address}\r\nSubject: Re: Quick question\r\n"
        f"Message-ID: <reply.{message_id.strip('<>')}>\r\nIn-Reply-To: {message_id}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nYes, let's talk.\r\n"
    ).encode()
    return InboundMessage.parse(f"uid-{message_id}", raw)


def poll_scenario(harness: Harness) -> Callable[[int | None, str], str]:
    models = harness.aws.models

    def run(fail_at: int | None, kind: str) -> str:
        inbox = harness.add_inbox()
        enrollment_id = harness.enroll(inbox, step_index=1, due=harness.now + timedelta(days=3))
        prospect = f"{enrollment_id}@prospect.example"
        box = harness.mailboxes.boxes[inbox.inbox_id]
        box.incoming.append(reply_to(inbox.address, prospect, step_message_id(enrollment_id, 0, inbox.address)))
        for _ in range(6):
            harness.poll(inbox, fail_at=fail_at, kind=kind)
            harness.now += timedelta(minutes=6)
            stored = models.inbox.get(inbox.inbox_id, consistent_read=True)
            if stored.poll_cursor == "1":
                break
        enrollment = models.enrollment.get(enrollment_id, consistent_read=True)
        where = f"k={fail_at} {kind} {harness.faults.injected}"
        if stored.poll_cursor == "1":
            # The cursor moved past the reply: its effect must be stored.
            assert enrollment.state == EnrollmentState.REPLIED, f"cursor moved past a lost reply ({where})"
            outcome = "replied"
        else:
            assert enrollment.state in (EnrollmentState.REPLIED, EnrollmentState.ACTIVE), where
            outcome = "replied, cursor not yet saved" if enrollment.state == EnrollmentState.REPLIED else "pending"
        # This inbox is done: off the poll index, so the next scenario polls only its own.
        stored.update(actions=[models.inbox.poll_shard.remove(), models.inbox.poll_slot.remove()])
        if fail_at is not None and harness.faults.injected is None:
            outcome = "no fault reached"
        return outcome if fail_at is not None or outcome != "replied" else "clean"

    return run


def test_poll_path_survives_every_fault_at_every_call(harness: Harness) -> None:
    run_every_fault(harness, "poll", poll_scenario(harness))


# ---------------------------------------------------------------------------------------------
# Auth failure: a permission loss reported for a connected inbox


def auth_scenario(harness: Harness) -> Callable[[int | None, str], str]:
    models = harness.aws.models

    def run(fail_at: int | None, kind: str) -> str:
        inbox = harness.add_inbox()
        forget_sent_emails()
        failure = Failure(FailureKind.AUTH_LOST, "smtp:535 5.7.8", "the password was changed", "Sign in again.")
        report = AuthFailureReport.of(inbox, failure, at=harness.now, source="send")
        record = {
            "messageId": f"m-{inbox.inbox_id}",
            "receiptHandle": "handle",
            "body": report.to_json(),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": harness.aws.stack.attributes[("AuthFailureQueue", "Arn")],
            "awsRegion": "us-east-1",
        }
        handled = False
        for receive in range(1, MAX_RECEIVES + 1):
            record["attributes"] = {"ApproximateReceiveCount": str(receive)}
            result = harness.invoke("AuthFailureFunction", {"Records": [record]}, fail_at=fail_at, kind=kind)
            harness.now += timedelta(minutes=3)
            if result is not None and not result["batchItemFailures"]:
                handled = True
                break
        stored = models.inbox.get(inbox.inbox_id, consistent_read=True)
        where = f"k={fail_at} {kind} {harness.faults.injected}"
        assert stored.status == InboxStatus.DISCONNECTED, f"a permission loss did not disconnect ({where})"
        assert stored.incident_id, where
        notices = {address: len(emails_to(address)) for address in (ADMIN, inbox.owner_email, inbox.address)}
        assert handled, f"the report was never handled ({where})"
        assert all(count >= 1 for count in notices.values()), f"a notice is missing: {notices} ({where})"
        if all(count == 1 for count in notices.values()):
            outcome = "disconnected, notified once"
        else:
            # The one window where a notice can repeat: the function died after SES took it and
            # before its idempotency record was completed. Powertools runs it again once the dead
            # invocation's time is up; only that notice repeats, never more than once.
            repeated = [address for address, count in notices.items() if count > 1]
            assert kind == "crash" and len(repeated) == 1 and notices[repeated[0]] == 2, f"{notices} ({where})"
            outcome = "disconnected, one notice repeated after a crash"
        if fail_at is not None and harness.faults.injected is None:
            outcome = "no fault reached"
        return outcome if fail_at is not None or not outcome.endswith("once") else "clean"

    return run


def test_auth_failure_path_survives_every_fault_at_every_call(harness: Harness) -> None:
    run_every_fault(harness, "auth-failure", auth_scenario(harness))


# ---------------------------------------------------------------------------------------------
# Reconnect: the owner of a disconnected custom inbox opens the link and types the new password


class AcceptingLoginCheck:
    """The mail servers take the new password (their own faults have e2e tests)."""

    def check(self, inbox: Inbox, password: str) -> list[Any]:
        return []


class Owner:
    """The owner of a disconnected custom inbox: opens the link and types the new password, and
    tries again, as people do, when a page fails."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.routes = [r for r in http_routes(TEMPLATE) if r.function == "ReconnectApiFunction"]

    def request(
        self, method: str, path: str, cookie: str | None, form: dict[str, str], fail_at: int | None, kind: str
    ) -> Any:
        route, params = next(
            (r, m.groupdict()) for r in self.routes if r.method == method and (m := r.pattern.match(path))
        )
        headers = {"host": "sendwell.example.test"}
        if cookie:
            headers["cookie"] = f"__Host-sendwell-session={cookie}"
        body = urlencode(form).encode()
        if body:
            headers["content-type"] = "application/x-www-form-urlencoded"
        event = http_event(route, method, path, headers, body, params, headers["host"])
        return self.harness.invoke("ReconnectApiFunction", event, fail_at=fail_at, kind=kind)

    def reconnect(self, token: str, fail_at: int | None, kind: str) -> bool:
        """Whether the owner saw the success page (which answers before the worker finishes)."""
        cookie: str | None = None
        for _ in range(4):
            if cookie is None:
                opened = self.request("GET", f"/r/{token}", None, {}, fail_at, kind)
                cookies = (opened or {}).get("cookies") or []
                cookie = cookies[0].split(";", 1)[0].split("=", 1)[1] if cookies else None
                if cookie is None:
                    continue
            landing = self.request("GET", "/connect", cookie, {}, fail_at, kind)
            if landing is not None and landing["statusCode"] == 200 and "is connected" in landing["body"]:
                return True  # the last try got through before its page failed: done already
            found = re.search(r'name="csrf_token" value="([^"]+)"', (landing or {}).get("body") or "")
            if found is None:
                continue
            form = {"csrf_token": found[1], "password": "the new password"}
            done = self.request("POST", "/connect/password", cookie, form, fail_at, kind)
            if done is not None and done["statusCode"] == 200 and "What happens next" in done["body"]:
                return True
        return False


def settle_reconnect(harness: Harness, inbox_id: str, *, fail_at: int | None, kind: str) -> None:
    """Let the reconnect worker finish, as AWS would: SQS delivers its task (again after a failure),
    and a task that was never queued is queued again by the reminders function's next run."""
    models = harness.aws.models
    for _ in range(12):
        if deliver_queue(harness, "ReconnectQueue", "ReconnectWorkerFunction", fail_at=fail_at, kind=kind):
            harness.now += timedelta(seconds=30)
            continue
        if models.inbox.get(inbox_id, consistent_read=True).reconnect_link is None:
            return
        harness.now += timedelta(minutes=16)  # the reminders function runs every 15 minutes
        harness.invoke("RemindersFunction", {}, fail_at=fail_at, kind=kind)


def told_about(inbox: Inbox) -> dict[str, int]:
    """The reconnect notices about this inbox, per recipient (the link's creator and the owner)."""
    return {
        address: sum(1 for email in emails_to(address) if inbox.address in email.subject)
        for address in (ADMIN, inbox.owner_email)
    }


def disconnected_inbox(harness: Harness) -> Inbox:
    return harness.add_inbox(
        status=InboxStatus.DISCONNECTED,
        status_reason="the password was changed",
        failed_at=harness.now - timedelta(hours=1),
        incident_id=harness.next_id("inc"),
    )


def finished(harness: Harness, inbox: Inbox, where: str, kind: str) -> tuple[Inbox, str]:
    """The inbox once its reconnect settled: connected, with the new password, nothing left to do,
    and whether each person was told once."""
    stored = harness.aws.models.inbox.get(inbox.inbox_id, consistent_read=True)
    assert stored.status == InboxStatus.CONNECTED, f"{stored.status} ({where})"
    assert stored.reconnect_link is None, f"the reconnect was never finished ({where})"
    assert harness.mailboxes.store.load(stored) == {"password": "the new password"}, where
    told = told_about(inbox)
    assert all(count >= 1 for count in told.values()), f"a notice is missing: {told} ({where})"
    if all(count == 1 for count in told.values()):
        return stored, "told once"
    # As on the auth-failure path: the function died after SES took the email and before its
    # idempotency record was completed; that one notice repeats once, never more.
    repeated = [address for address, count in told.items() if count > 1]
    assert kind == "crash" and len(repeated) == 1 and told[repeated[0]] == 2, f"{told} ({where})"
    return stored, "one notice repeated after a crash"


def reconnect_scenario(harness: Harness) -> Callable[[int | None, str], str]:
    """The owner's requests, the worker and the reminders function, all under the fault."""
    models = harness.aws.models
    owner = Owner(harness)

    def run(fail_at: int | None, kind: str) -> str:
        inbox = disconnected_inbox(harness)
        enrollment_id = harness.enroll(inbox)  # its first step waits for the reconnect
        forget_sent_emails()
        token = links.create_link(models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=harness.now).token
        saw_success = owner.reconnect(token, fail_at, kind)
        settle_reconnect(harness, inbox.inbox_id, fail_at=fail_at, kind=kind)
        where = f"k={fail_at} {kind} {harness.faults.injected}"
        assert saw_success, f"the owner never saw success ({where})"
        stored, told = finished(harness, inbox, where, kind)
        enrollment = models.enrollment.get(enrollment_id, consistent_read=True)
        assert enrollment.state == EnrollmentState.ACTIVE and enrollment.due_at is not None, f"step lost ({where})"
        outcome = f"connected, {told}"
        stored.update(actions=[models.inbox.poll_shard.remove(), models.inbox.poll_slot.remove()])
        models.enrollment.get(enrollment_id).delete()
        if fail_at is not None and harness.faults.injected is None:
            outcome = "no fault reached"
        return outcome if fail_at is not None or outcome != "connected, told once" else "clean"

    return run


def test_reconnect_path_survives_every_fault_at_every_call(harness: Harness) -> None:
    accept_new_passwords(harness)
    run_every_fault(harness, "reconnect", reconnect_scenario(harness))


# ---------------------------------------------------------------------------------------------
# Backlog release: the worker's catch-up stops a prospect who replied, then paces the rest


def backlog_scenario(harness: Harness) -> Callable[[int | None, str], str]:
    """The owner reconnects without a fault; the worker (and the reminders function) run under it."""
    models = harness.aws.models
    owner = Owner(harness)

    def run(fail_at: int | None, kind: str) -> str:
        inbox = disconnected_inbox(harness)
        waiting = [harness.enroll(inbox, due=harness.now - timedelta(minutes=50 - m)) for m in range(4)]
        replied = harness.enroll(inbox, step_index=1, due=harness.now - timedelta(minutes=30))
        prospect = f"{replied}@prospect.example"
        box = harness.mailboxes.boxes[inbox.inbox_id]
        box.incoming.append(reply_to(inbox.address, prospect, step_message_id(replied, 0, inbox.address)))
        forget_sent_emails()
        token = links.create_link(models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=harness.now).token
        assert owner.reconnect(token, None, "")
        harness.faults.reset()  # the path under test starts here: k counts the worker's calls
        settle_reconnect(harness, inbox.inbox_id, fail_at=fail_at, kind=kind)
        where = f"k={fail_at} {kind} {harness.faults.injected}"
        stored, told = finished(harness, inbox, where, kind)
        assert models.enrollment.get(replied, consistent_read=True).state == EnrollmentState.REPLIED, (
            f"a prospect who replied meanwhile was not stopped ({where})"
        )
        pending = [models.enrollment.get(e, consistent_read=True) for e in waiting]
        assert all(e.state == EnrollmentState.ACTIVE and e.due_at is not None for e in pending), f"lost ({where})"
        if stored.paused:
            outcome = f"connected, held, {told}"
        else:
            # Left due as they were, for dispatch to pace; and the inbox is back on the send index.
            assert stored.send_shard is not None, f"not woken ({where})"
            outcome = f"connected, paced, {told}"
        stored.update(actions=[models.inbox.poll_shard.remove(), models.inbox.poll_slot.remove()])
        for enrollment_id in (*waiting, replied):
            models.enrollment.get(enrollment_id).delete()
        if fail_at is not None and harness.faults.injected is None:
            outcome = "no fault reached"
        return outcome if fail_at is not None or outcome != "connected, paced, told once" else "clean"

    return run


def test_backlog_release_path_survives_every_fault_at_every_call(harness: Harness) -> None:
    accept_new_passwords(harness)
    run_every_fault(harness, "backlog-release", backlog_scenario(harness))


def test_a_reconnect_whose_task_was_lost_is_queued_again_by_the_reminders_and_finished(harness: Harness) -> None:
    """Cause 6. Before: the catch-up ran inside the owner's request, and a timeout there left the
    inbox ``reconnecting`` for good (reminders cleared it, dispatch skipped it). Now the request
    only stores the sign-in; here SQS refuses its task, and the reminders function queues it again."""
    accept_new_passwords(harness)
    models = harness.aws.models
    inbox = disconnected_inbox(harness)
    replied = harness.enroll(inbox, step_index=1, due=harness.now - timedelta(minutes=30))
    box = harness.mailboxes.boxes[inbox.inbox_id]
    box.incoming.append(
        reply_to(inbox.address, f"{replied}@prospect.example", step_message_id(replied, 0, inbox.address))
    )
    forget_sent_emails()
    token = links.create_link(models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=harness.now).token

    def the_task(service: str, operation: str, params: dict[str, Any]) -> bool:
        return operation == "SendMessageBatch" and params["QueueUrl"] == harness.aws.stack.refs["ReconnectQueue"]

    with harness.faults.failing(the_task, kind="5xx"):
        assert Owner(harness).reconnect(token, None, "")  # the page answers: the sign-in is stored
    stored = models.inbox.get(inbox.inbox_id, consistent_read=True)
    assert stored.status == InboxStatus.RECONNECTING and stored.reconnect_link
    assert harness.aws.drain(harness.aws.stack.refs["ReconnectQueue"]) == []
    # Nothing goes out of a reconnecting inbox: the prospect's reply is not read yet.
    harness.invoke("DispatchFunction", {}, fail_at=None, kind="")
    deliver_queue(harness, "DispatchQueue", "DispatchWorkerFunction", fail_at=None, kind="")
    assert harness.aws.drain(harness.aws.stack.refs["SendQueue"]) == []
    assert models.enrollment.get(replied).state == EnrollmentState.ACTIVE

    harness.now += timedelta(minutes=10)  # within the grace: the worker may still be at it
    assert "requeued" not in harness.invoke("RemindersFunction", {}, fail_at=None, kind="")
    harness.now += timedelta(minutes=6)
    assert harness.invoke("RemindersFunction", {}, fail_at=None, kind="")["requeued"] == 1
    assert deliver_queue(harness, "ReconnectQueue", "ReconnectWorkerFunction", fail_at=None, kind="") == 1

    stored, told = finished(harness, inbox, "requeued", "")
    assert told == "told once" and not stored.paused
    assert models.enrollment.get(replied).state == EnrollmentState.REPLIED
    # The next run clears the watch: the reconnect is done.
    harness.now += timedelta(minutes=16)
    assert "requeued" not in harness.invoke("RemindersFunction", {}, fail_at=None, kind="")
    assert models.inbox.get(inbox.inbox_id).attention_at is None
    stored.update(actions=[models.inbox.poll_shard.remove(), models.inbox.poll_slot.remove()])


def accept_new_passwords(harness: Harness) -> None:
    handler = harness.aws.handler("ReconnectApiFunction")
    module = sys.modules[handler.__module__]
    context = dataclasses.replace(module.PARTS.context, login_check=AcceptingLoginCheck())
    module.PARTS = dataclasses.replace(module.PARTS, context=context)
    module.CONTEXT = context


def test_the_template_queues_redrive_after_five_receives() -> None:
    """The harness's MAX_RECEIVES is the template's."""
    for queue in ("SendQueue", "AuthFailureQueue", "ReconnectQueue"):
        assert TEMPLATE["Resources"][queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == MAX_RECEIVES
