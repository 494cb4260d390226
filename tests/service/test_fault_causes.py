"""One test per cause of a lost, duplicate or wrong outcome that fault-injection runs found.

Each drives the real services or handlers on moto (from template.yaml) with providers in memory,
and each failed before its fix. The fault harness (test_fault_harness.py) then fails every AWS call
of the send, poll, auth-failure, reconnect and backlog-release paths in turn; these tests pin
the causes by name.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.stack import LambdaContext
from sendwell.adapters.aws import KmsCipher, SnsPublisher, SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.credentials import CredentialStore
from sendwell.adapters.once import IdempotentRunner
from sendwell.clock import epoch
from sendwell.failures import Failure, FailureKind
from sendwell.ids import step_message_id
from sendwell.models import EnrollmentState, Inbox, InboxStatus, new_step, new_window
from sendwell.ports.mailbox import InboundMessage
from sendwell.ports.messages import AuthFailureReport, SendRequest
from sendwell.services import inboxes, links, polling, reconnect, schedule
from sendwell.services.auth_failures import IncidentContext, Verdict, handle_report
from sendwell.services.dispatch import dispatch_due_steps
from sendwell.services.polling import PollContext
from sendwell.services.sending import Outcome, SendContext, send_step
from sendwell.wiring import PLATFORM_FAILURES
from tests.deployment import Deployment, deployed, emails_to, forget_sent_emails
from tests.faults import Crash, aws_faults
from tests.memory_providers import MemoryMailbox, MemoryMailboxes

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday
DUE_SLOT = polling.slots_due(NOW)[0]  # a poll slot that a tick at NOW hands out
AWAY_SLOT = (DUE_SLOT + 150) % 300  # and one it does not


class World:
    """A deployment, one connected custom inbox on a memory provider, a two-step campaign."""

    def __init__(self, aws: Deployment) -> None:
        self.aws, self.models = aws, aws.models
        self.store = CredentialStore.with_kms(self.models, aws.client("kms"), aws.settings.credentials_key_id)
        self.mailboxes = MemoryMailboxes(self.store)
        self.inbox = self.add_inbox("ibx_main")

    def add_inbox(self, inbox_id: str, **extra: Any) -> Inbox:
        values: dict[str, Any] = {
            "inbox_id": inbox_id,
            "provider": "custom",
            "address": f"{inbox_id}@agency.example",
            "owner_email": "owner@client.example",
            "created_at": NOW - timedelta(days=30),
            "status": InboxStatus.CONNECTED.value,
            "daily_cap": 50,
            "min_gap_seconds": 60,
            "jitter_seconds": 0,
            "last_polled_at": NOW - timedelta(minutes=1),
            # Connected, so on the poll index, at a slot a tick at NOW does not hand out.
            "poll_shard": "0",
            "poll_slot": AWAY_SLOT,
        }
        inbox = self.models.inbox(**(values | extra))
        inbox.window.tz = "UTC"
        inbox.save()
        if "credentials" not in extra:  # given: what a row kept from before credentials had an item
            self.store.seed(inbox, {"password": "correct horse"})
        self.mailboxes.boxes[inbox_id] = MemoryMailbox(inbox.address)
        self.models.campaign(
            campaign_id=f"cmp_{inbox_id}",
            name="Q4",
            created_at=NOW,
            inbox_ids=[inbox_id],
            steps=[
                new_step(subject="Quick question", text="Hi", html=None, delay_seconds=0, new_thread=False),
                new_step(subject="re", text="Bumping this.", html=None, delay_seconds=3 * 86400, new_thread=False),
            ],
            window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
        ).save()
        return inbox

    def enroll(self, enrollment_id: str, *, inbox: Inbox | None = None, step: int = 0, due: datetime = NOW) -> None:
        inbox = inbox or self.inbox
        self.models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id=f"cmp_{inbox.inbox_id}",
            inbox_id=inbox.inbox_id,
            email=f"{enrollment_id}@prospect.example",
            created_at=NOW,
            step_index=step,
            due_inbox=inbox.inbox_id,
            due_at=int(due.timestamp()),
        ).save()
        schedule.wake(self.models, inbox.inbox_id, at=due)

    def send_context(self) -> SendContext:
        reporter = SqsAuthFailureReporter(SqsQueue(self.aws.client("sqs"), self.aws.settings.auth_failure_queue_url))
        return SendContext(self.models, self.mailboxes, reporter, "https://sendwell.example.test/u")

    def request(self, enrollment_id: str, step: int = 0, *, local_day: str = "2026-11-23") -> SendRequest:
        return SendRequest(enrollment_id, step, self.inbox.inbox_id, local_day, 60, timezone="UTC")

    def box(self, inbox: Inbox | None = None) -> MemoryMailbox:
        return self.mailboxes.boxes[(inbox or self.inbox).inbox_id]

    def poll_context(self) -> PollContext:
        aws = self.aws
        return PollContext(
            models=self.models,
            mailboxes=self.mailboxes,
            auth_failures=SqsAuthFailureReporter(SqsQueue(aws.client("sqs"), aws.settings.auth_failure_queue_url)),
            events=SnsPublisher(aws.client("sns"), aws.settings.inbox_events_topic_arn),
            once=IdempotentRunner(aws.settings.idempotency_table, boto3_client=aws.client("dynamodb")),
            isolated=PLATFORM_FAILURES,
        )


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with deployed(monkeypatch) as aws:
        yield World(aws)


def reply(inbox: Inbox, enrollment_id: str, *, date: datetime) -> InboundMessage:
    message_id = step_message_id(enrollment_id, 0, inbox.address)
    raw = (
        f"From: {enrollment_id}@prospect.example\r\nTo: {inbox.address}\r\nSubject: Re: Quick question\r\n"
        f"Message-ID: <reply.{enrollment_id}@prospect.example>\r\nIn-Reply-To: {message_id}\r\n"
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n\r\nYes, let's talk.\r\n"
    ).encode()
    return InboundMessage.parse(f"uid-{enrollment_id}", raw)


# ---------------------------------------------------------------------------------------------
# 1. A fault that is not a failed condition is never read as "someone else did it"


def test_a_throttled_step_sent_write_does_not_send_the_step_twice(world: World) -> None:
    """Before: the "step sent" write was throttled after the provider took the message; the step
    stayed due, the queue message was deleted, and the next dispatch's fresh message (receive
    count 1, so no reconcile) sent it again."""
    world.enroll("enr_once")

    def the_step_sent_write(service: str, operation: str, params: dict[str, Any]) -> bool:
        return operation == "UpdateItem" and "step_index" in str(params.get("ExpressionAttributeNames"))

    with aws_faults() as faults, faults.failing(the_step_sent_write, times=1):
        assert send_step(world.send_context(), world.request("enr_once"), now=NOW, redelivered=False) is Outcome.SENT
    assert faults.injected == "dynamodb.UpdateItem"
    assert world.models.enrollment.get("enr_once").step_index == 1
    # A fresh message for the same step, as the next dispatch would enqueue if the step stayed due.
    later = NOW + timedelta(minutes=5)
    assert send_step(world.send_context(), world.request("enr_once"), now=later, redelivered=False) is Outcome.STALE
    assert world.box().deliveries(step_message_id("enr_once", 0, world.inbox.address)) == 1


def test_a_step_attempted_before_is_reconciled_even_as_a_fresh_message(world: World) -> None:
    """Before: only a receive count above 1 led to the Sent check. The attempt is now recorded on
    the enrollment, so any later message for the step checks Sent first."""
    world.enroll("enr_fresh")
    box = world.box()

    def crash_after_delivery(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("the function died after the provider took the message")

    original = sys.modules["sendwell.services.sending"]._record_sent
    sys.modules["sendwell.services.sending"]._record_sent = crash_after_delivery
    try:
        with pytest.raises(SystemExit):
            send_step(world.send_context(), world.request("enr_fresh"), now=NOW, redelivered=False)
    finally:
        sys.modules["sendwell.services.sending"]._record_sent = original
    later = NOW + timedelta(minutes=10)
    outcome = send_step(world.send_context(), world.request("enr_fresh"), now=later, redelivered=False)
    assert outcome is Outcome.RECONCILED
    assert box.deliveries(step_message_id("enr_fresh", 0, world.inbox.address)) == 1


def test_a_throttled_claim_is_retried_not_deferred_an_hour(world: World) -> None:
    """Before: a throttled claim read as a failed condition and came back as "the daily cap"."""
    world.enroll("enr_claim")
    table = world.models.inbox
    world.models.inbox.get("ibx_main").update(actions=[table.usage_day.set("2026-11-23"), table.sent_today.set(3)])
    with aws_faults() as faults, faults.counting(fail_at=1, kind="throttle"):
        assert send_step(world.send_context(), world.request("enr_claim"), now=NOW, redelivered=False) is Outcome.SENT
    assert faults.injected == "dynamodb.UpdateItem"
    assert world.models.inbox.get("ibx_main").sent_today == 4


def test_a_throttled_reply_write_keeps_the_cursor_and_stops_no_follow_up_later(world: World) -> None:
    """Before: the reply's write was throttled, polling saved the cursor anyway, and the prospect
    who replied got the follow-up."""
    world.enroll("enr_reply", step=1, due=NOW + timedelta(days=3))
    world.box().incoming.append(reply(world.inbox, "enr_reply", date=NOW))
    world.models.inbox.get("ibx_main").update(
        actions=[world.models.inbox.poll_shard.set("0"), world.models.inbox.poll_slot.set(polling.slots_due(NOW)[0])]
    )

    def enrollment_writes(service: str, operation: str, params: dict[str, Any]) -> bool:
        return operation == "UpdateItem" and "EnrollmentsTable" in params.get("TableName", "")

    with aws_faults() as faults, faults.failing(enrollment_writes):
        [result] = polling.poll_due_inboxes(world.poll_context(), now=NOW)
    assert result.failure is not None
    assert world.models.inbox.get("ibx_main").poll_cursor is None  # not moved past the reply
    assert world.models.enrollment.get("enr_reply").state == EnrollmentState.ACTIVE
    # The next poll reads the reply again, and this time its effect is stored.
    result = polling.poll_inbox(world.poll_context(), world.models.inbox.get("ibx_main"), now=NOW)
    assert result.failure is None
    assert world.models.enrollment.get("enr_reply").state == EnrollmentState.REPLIED
    assert world.models.inbox.get("ibx_main").poll_cursor == "1"


# ---------------------------------------------------------------------------------------------
# 2. The catch-up after a reconnect reads from the last successful poll


def test_the_catch_up_reads_from_the_last_good_poll_not_the_failure(world: World) -> None:
    """Before: the catch-up polled from the failure time with no cursor and overwrote the cursor,
    so a reply between the last good poll and the failure was never seen."""
    world.enroll("enr_gap", step=1, due=NOW + timedelta(days=3))
    last_good_poll = NOW - timedelta(hours=6)
    failed_at = NOW - timedelta(hours=2)
    box = world.box()
    box.incoming.append(reply(world.inbox, "enr_other", date=last_good_poll - timedelta(hours=1)))
    inbox = world.models.inbox.get("ibx_main")
    inbox.update(
        actions=[world.models.inbox.poll_cursor.set("1"), world.models.inbox.last_polled_at.set(last_good_poll)]
    )
    # The reply arrived after the last good poll and before the failure.
    box.incoming.append(reply(world.inbox, "enr_gap", date=NOW - timedelta(hours=4)))
    polling.poll_inbox(world.poll_context(), inbox, now=NOW, since=failed_at)
    assert world.models.enrollment.get("enr_gap").state == EnrollmentState.REPLIED


# ---------------------------------------------------------------------------------------------
# 3. A report made with replaced credentials does not disconnect


def test_a_report_made_with_old_credentials_does_not_disconnect_a_renewed_inbox(world: World) -> None:
    """Before: a report made with the old credentials, arriving after the inbox was renewed while
    connected, disconnected it and sent three notices."""
    inbox = world.models.inbox.get("ibx_main")
    failure = Failure(FailureKind.AUTH_LOST, "smtp:535 5.7.8", "the password was changed", "Sign in again.")
    report = AuthFailureReport.of(inbox, failure, at=NOW, source="send")
    # The owner renewed the inbox's sign-in while it stayed connected (a later credentials version).
    inbox.update(actions=[world.models.inbox.credentials_version.add(1)])
    forget_sent_emails()
    aws = world.aws
    ctx = IncidentContext(
        models=world.models,
        mailer=_ses(aws),
        events=SnsPublisher(aws.client("sns"), aws.settings.inbox_events_topic_arn),
        once=IdempotentRunner(aws.settings.idempotency_table, boto3_client=aws.client("dynamodb")),
        workspace_name="Acme",
        admin_emails=("admin@agency.example",),
        public_base_url="https://sendwell.example.test",
    )
    assert handle_report(ctx, report, now=NOW + timedelta(minutes=1)) is Verdict.IGNORED
    assert world.models.inbox.get("ibx_main").status == InboxStatus.CONNECTED
    assert emails_to("admin@agency.example") == []


def _ses(aws: Deployment) -> Any:
    from sendwell.adapters.aws import SesMailer

    return SesMailer(aws.client("ses"), aws.settings.sender_address)


# ---------------------------------------------------------------------------------------------
# 5. Polling goes on for every other inbox


def test_one_inbox_whose_credentials_cannot_be_decrypted_does_not_stop_the_others(world: World) -> None:
    """Before: the KMS error of one inbox aborted the whole run. (Its row holds them as rows did
    before credentials had an item: the old way of reading them fails as KMS would.)"""
    broken = world.add_inbox("ibx_broken", credentials=b"not a KMS ciphertext", poll_shard="0", poll_slot=DUE_SLOT)
    healthy = world.add_inbox("ibx_healthy", poll_shard="0", poll_slot=DUE_SLOT)
    world.enroll("enr_healthy", inbox=healthy, step=1, due=NOW + timedelta(days=3))
    world.box(healthy).incoming.append(reply(healthy, "enr_healthy", date=NOW))
    results = {r.inbox_id: r for r in polling.poll_due_inboxes(world.poll_context(), now=NOW)}
    assert results[broken.inbox_id].failure is not None
    assert results[healthy.inbox_id].failure is None
    assert world.models.enrollment.get("enr_healthy").state == EnrollmentState.REPLIED


def test_the_poll_function_registers_its_lambda_context_with_idempotency(world: World) -> None:
    """Before: it did not, so a crash mid-message left an in-progress record for 7 days."""
    handler = world.aws.handler("PollWorkerFunction")
    module = sys.modules[handler.__module__]
    context = LambdaContext(function_name="PollWorkerFunction")
    body = polling.PollBatch(due=epoch(NOW), inbox_ids=[]).to_body()
    handler({"Records": [{"messageId": "m1", "receiptHandle": "r1", "body": body, "eventSource": "aws:sqs"}]}, context)
    assert module.PARTS.once._config.lambda_context is context


# ---------------------------------------------------------------------------------------------
# 7. Follow-ups wait while the inbox's replies are not known to be current


def test_a_follow_up_waits_while_polling_is_behind(world: World) -> None:
    """Before: with polling down for a day, a due follow-up went to a prospect whose reply was
    waiting unread."""
    stale = NOW - timedelta(days=1)
    world.models.inbox.get("ibx_main").update(actions=[world.models.inbox.last_polled_at.set(stale)])
    world.enroll("enr_follow", step=1, due=NOW - timedelta(minutes=1))  # the older one: read first
    world.enroll("enr_first", step=0)
    queue = SqsQueue(world.aws.client("sqs"), world.aws.settings.send_queue_url)
    report = dispatch_due_steps(world.models, queue, now=NOW)
    assert report.held_for_replies == 1 and report.enqueued == 1  # the first email still goes
    outcome = send_step(world.send_context(), world.request("enr_follow", 1), now=NOW, redelivered=False)
    assert outcome is Outcome.HELD_FOR_REPLIES
    assert world.box().delivered == []
    # Once polled again, it goes.
    world.models.inbox.get("ibx_main").update(actions=[world.models.inbox.last_polled_at.set(NOW)])
    later = NOW + timedelta(minutes=2)
    assert send_step(world.send_context(), world.request("enr_follow", 1), now=later, redelivered=False) is Outcome.SENT


# ---------------------------------------------------------------------------------------------
# 8. The daily cap counts in the inbox's local day at claim time


def test_the_cap_day_is_the_local_day_at_claim_time(world: World) -> None:
    """Before: the cap counted in the day dispatch saw; a message that waited across local
    midnight counted against the previous day, exceeding the new day's cap."""
    inbox = world.models.inbox.get("ibx_main")
    inbox.update(actions=[world.models.inbox.usage_day.set("2026-11-23"), world.models.inbox.sent_today.set(50)])
    world.enroll("enr_midnight")
    after_midnight = datetime(2026, 11, 24, 0, 5, tzinfo=UTC)
    request = world.request("enr_midnight", local_day="2026-11-23")  # dispatch saw the 23rd
    assert send_step(world.send_context(), request, now=after_midnight, redelivered=False) is Outcome.SENT
    stored = world.models.inbox.get("ibx_main")
    assert stored.usage_day == "2026-11-24" and stored.sent_today == 1


def test_a_capped_inbox_leaves_the_step_to_dispatch_instead_of_walking_it_to_the_dlq(world: World) -> None:
    """Before: a message deferred by the cap kept answering "daily cap" and walked to the DLQ."""
    inbox = world.models.inbox.get("ibx_main")
    inbox.update(actions=[world.models.inbox.usage_day.set("2026-11-23"), world.models.inbox.sent_today.set(50)])
    world.enroll("enr_capped")
    outcome = send_step(world.send_context(), world.request("enr_capped"), now=NOW, redelivered=False)
    assert outcome is Outcome.INBOX_UNAVAILABLE
    enrollment = world.models.enrollment.get("enr_capped")
    assert enrollment.state == EnrollmentState.ACTIVE and enrollment.due_at is not None  # still pending


# ---------------------------------------------------------------------------------------------
# 9. Queue and claim leaks


def test_a_malformed_message_goes_to_the_dlq_alone_and_its_group_goes_on(world: World) -> None:
    """Before: a malformed message failed, and with it every later message of its inbox's group."""
    world.enroll("enr_after")
    good = world.request("enr_after")
    records = [
        _record("m-bad", "{not json", group="ibx_main"),
        _record("m-good", good.to_json(), group="ibx_main"),
    ]
    handler = world.aws.handler("SendFunction")
    module = sys.modules[handler.__module__]
    module.PARTS = _with_mailboxes(module.PARTS, world.mailboxes)
    module.utcnow = lambda: NOW
    result = handler({"Records": records}, LambdaContext(function_name="SendFunction"))
    assert result["batchItemFailures"] == []
    dead = world.aws.queue_messages("SendDeadLetterQueue")
    assert [m["Body"] for m in dead] == ["{not json"]
    assert world.models.enrollment.get("enr_after").step_index == 1


def test_a_step_whose_campaign_is_gone_releases_the_claim_and_the_cap(world: World) -> None:
    """Before: it held the claim and consumed a unit of the cap."""
    world.enroll("enr_orphan")
    world.models.campaign.get("cmp_ibx_main").delete()
    outcome = send_step(world.send_context(), world.request("enr_orphan"), now=NOW, redelivered=False)
    assert outcome is Outcome.FAILED
    stored = world.models.inbox.get("ibx_main")
    assert stored.sent_today == 0 and stored.send_claim is None
    assert world.models.enrollment.get("enr_orphan").state == EnrollmentState.FAILED


def test_a_crash_after_the_claim_does_not_count_the_step_twice(world: World) -> None:
    """Before: the redelivery claimed again and counted the step a second time."""
    world.enroll("enr_crashy")
    table = world.models.inbox
    world.models.inbox.get("ibx_main").update(actions=[table.usage_day.set("2026-11-23"), table.sent_today.set(0)])
    with aws_faults() as faults, faults.counting(fail_at=2, kind="crash"), pytest.raises(Crash):
        send_step(world.send_context(), world.request("enr_crashy"), now=NOW, redelivered=False)
    assert world.models.inbox.get("ibx_main").sent_today == 1  # the claim was made
    later = NOW + timedelta(minutes=6)  # after the lease
    assert send_step(world.send_context(), world.request("enr_crashy"), now=later, redelivered=True) is Outcome.SENT
    assert world.models.inbox.get("ibx_main").sent_today == 1


def _record(message_id: str, body: str, *, group: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": group, "SentTimestamp": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:send.fifo",
        "awsRegion": "us-east-1",
    }


def _with_mailboxes(parts: Any, mailboxes: MemoryMailboxes) -> Any:
    import dataclasses

    return dataclasses.replace(parts, context=dataclasses.replace(parts.context, mailboxes=mailboxes))


# ---------------------------------------------------------------------------------------------
# A write whose answer was lost, retried, finds its own effect


def test_a_pause_whose_answer_was_lost_is_not_reported_as_a_conflict(world: World) -> None:
    """Before: the retry of the pause found the inbox paused (by itself) and answered 409."""

    def the_pause(service: str, operation: str, params: dict[str, Any]) -> bool:
        return operation == "UpdateItem" and "paused" in str(params.get("ExpressionAttributeNames"))

    with aws_faults() as faults, faults.failing(the_pause, kind="lost_response", times=1):
        inbox = inboxes.set_paused(world.models, "ibx_main", paused=True, now=NOW, actor="admin@agency.example")
    assert faults.injected == "dynamodb.UpdateItem"
    assert inbox.paused and world.models.inbox.get("ibx_main").paused


def test_a_first_sign_in_whose_answer_was_lost_is_not_refused_as_a_rival(world: World) -> None:
    """Before: the retry of the first sign-in's write found the identity set (by itself) and the
    owner got "the inbox changed" although it had reconnected."""
    inbox = world.add_inbox("ibx_first", status=InboxStatus.PENDING.value, provider="gmail")
    ctx = reconnect.ReconnectContext(
        models=world.models,
        cipher=KmsCipher(world.aws.client("kms"), world.aws.settings.credentials_key_id),
        credentials=world.store,
        authorizers={},
        login_check=_NoLoginCheck(),
        public_base_url="https://sendwell.example.test",
    )
    link = links.create_link(world.models, inbox_id="ibx_first", created_by="admin@agency.example", now=NOW).link

    def the_credentials(service: str, operation: str, params: dict[str, Any]) -> bool:
        return operation == "TransactWriteItems" and "identity_issuer" in str(params.get("TransactItems"))

    with aws_faults() as faults, faults.failing(the_credentials, kind="lost_response", times=1):
        reconnect._store_credentials(ctx, inbox, link, {"refresh_token": "1//x"}, ("accounts.google.com", "109"), NOW)
    assert faults.injected == "dynamodb.TransactWriteItems"
    stored = world.models.inbox.get("ibx_first")
    assert (stored.identity_issuer, stored.identity_subject) == ("accounts.google.com", "109")


class _NoLoginCheck:
    def check(self, inbox: Inbox, password: str) -> list[Any]:
        return []
