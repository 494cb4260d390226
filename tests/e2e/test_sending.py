"""Sending: each step once, within every limit, through a real SMTP server and a real IMAP Sent folder."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.stack import load_handler
from sendwell.adapters.aws import SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.credentials import CredentialStore
from sendwell.adapters.imap import ImapMailbox
from sendwell.adapters.mailboxes import ProviderMailboxes
from sendwell.clock import epoch
from sendwell.ids import step_message_id
from sendwell.models import EnrollmentState, InboxStatus, new_step, new_window
from sendwell.ports.messages import AuthFailureReport, SendRequest
from sendwell.services import activity, schedule, sending
from sendwell.services.dispatch import dispatch_due_steps
from sendwell.services.sending import Outcome, RetryLater, SendContext, send_step
from tests.deployment import Deployment
from tests.dovecot import DovecotServer
from tests.smtp_server import TEST_PASSWORD, TEST_USER, SmtpTestServer
from tests.template import TEMPLATE

pytestmark = pytest.mark.dovecot

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, 10:00 UTC


class World:
    """A deployment with one custom inbox on a real SMTP server and a real Dovecot, and a campaign."""

    def __init__(self, aws: Deployment, smtp: SmtpTestServer, dovecot: DovecotServer) -> None:
        self.aws, self.smtp, self.dovecot = aws, smtp, dovecot
        self.models = aws.models
        self.store = CredentialStore.with_kms(self.models, aws.client("kms"), aws.settings.credentials_key_id)
        self.mailboxes = ProviderMailboxes(aws.settings, self.store)
        self.inbox_id = "ibx_custom"
        dovecot.add_user(TEST_USER, TEST_PASSWORD)
        inbox = self.models.inbox(
            inbox_id=self.inbox_id,
            provider="custom",
            address=TEST_USER,
            display_name="Ana from Sendwell",
            owner_email="owner@agency.example",
            created_at=NOW - timedelta(days=30),
            status=InboxStatus.CONNECTED.value,
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security="none",
            imap_host=dovecot.host,
            imap_port=dovecot.port,
            imap_security="none",
            username=TEST_USER,
            daily_cap=50,
            min_gap_seconds=60,
            jitter_seconds=0,
        )
        inbox.window.tz = "Europe/Berlin"
        inbox.save()
        self.store.seed(inbox, {"password": TEST_PASSWORD})
        self.campaign = self.models.campaign(
            campaign_id="cmp_1",
            name="Q4",
            created_at=NOW,
            inbox_ids=[self.inbox_id],
            steps=[
                new_step(
                    subject="Quick question, {{ first_name }}",
                    text="Hi {{ first_name }},\nare you the right person?",
                    html=None,
                    delay_seconds=0,
                    new_thread=False,
                ),
                new_step(
                    subject="ignored for follow-ups",
                    text="Bumping this, {{ first_name | default('there') }}.",
                    html=None,
                    delay_seconds=3 * 86400,
                    new_thread=False,
                ),
                new_step(subject="ignored", text="Last note.", html=None, delay_seconds=4 * 86400, new_thread=False),
            ],
            window=new_window(days="0,1,2,3,4", start="09:00", end="17:00", tz="Europe/Berlin"),
        )
        self.campaign.save()
        self.reports: list[AuthFailureReport] = []

    def enroll(self, enrollment_id: str, email: str, fields: dict[str, str], *, due: datetime = NOW) -> None:
        self.models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id="cmp_1",
            inbox_id=self.inbox_id,
            email=email,
            fields=fields,
            created_at=NOW,
            due_inbox=self.inbox_id,
            due_at=int(due.timestamp()),
        ).save()
        schedule.wake(self.models, self.inbox_id, at=due)

    def polled(self, at: datetime) -> None:
        """The poll function keeps the inbox's replies current; follow-ups wait otherwise."""
        self.models.inbox(self.inbox_id).update(actions=[self.models.inbox.last_polled_at.set(at)])

    def context(self) -> SendContext:
        sqs = self.aws.client("sqs")
        return SendContext(
            models=self.models,
            mailboxes=self.mailboxes,
            auth_failures=SqsAuthFailureReporter(SqsQueue(sqs, self.aws.settings.auth_failure_queue_url)),
            unsubscribe_base_url="https://sendwell.example.test/u",
        )

    def request(self, enrollment_id: str, step: int = 0) -> SendRequest:
        return SendRequest(
            enrollment_id=enrollment_id,
            step_index=step,
            inbox_id=self.inbox_id,
            local_day="2026-11-23",
            min_gap_seconds=60,
        )

    def sqs_event(self, request: SendRequest, *, receive_count: int = 1) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": f"m-{request.enrollment_id}-{request.step_index}-{receive_count}",
                    "receiptHandle": "handle",
                    "body": request.to_json(),
                    "attributes": {
                        "ApproximateReceiveCount": str(receive_count),
                        "MessageGroupId": request.inbox_id,
                        "MessageDeduplicationId": f"{request.enrollment_id}-{request.step_index}",
                        "SentTimestamp": "1",
                        "SenderId": "x",
                        "ApproximateFirstReceiveTimestamp": "1",
                        "SequenceNumber": "1",
                    },
                    "messageAttributes": {},
                    "md5OfBody": "x",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:test-SendQueue.fifo",
                    "awsRegion": "us-east-1",
                }
            ]
        }

    def sent_to(self, address: str) -> list[bytes]:
        return [m.data for m in self.smtp.received if address in m.rcpt_tos]


@pytest.fixture
def world(aws: Deployment, smtp_server: SmtpTestServer, dovecot: DovecotServer) -> World:
    return World(aws, smtp_server, dovecot)


def test_a_due_step_is_sent_threaded_and_advanced(world: World) -> None:
    world.enroll("enr_a", "dana@client.example", {"first_name": "Dana"})
    assert send_step(world.context(), world.request("enr_a"), now=NOW, redelivered=False) is Outcome.SENT
    [raw] = world.sent_to("dana@client.example")
    assert b"Subject: Quick question, Dana" in raw
    assert f"Message-ID: {step_message_id('enr_a', 0, TEST_USER)}".encode() in raw
    assert b"List-Unsubscribe: <https://sendwell.example.test/u/enr_a>" in raw
    enrollment = world.models.enrollment.get("enr_a")
    assert enrollment.step_index == 1 and enrollment.due_at == int(NOW.timestamp()) + 3 * 86400
    # The follow-up threads under the first message and keeps its subject.
    later = NOW + timedelta(days=3)
    follow_up = SendRequest("enr_a", 1, world.inbox_id, "2026-11-26", 60)
    world.polled(later)
    assert send_step(world.context(), follow_up, now=later, redelivered=False) is Outcome.SENT
    second = world.sent_to("dana@client.example")[1]
    assert b"Subject: Re: Quick question, Dana" in second
    assert f"In-Reply-To: {step_message_id('enr_a', 0, TEST_USER)}".encode() in second


# Conditional writes are atomic in DynamoDB; moto's, across threads, are not unless serialised.
@pytest.mark.usefixtures("atomic_dynamodb")
def test_the_same_message_delivered_twice_concurrently_is_sent_once(world: World, aws: Deployment) -> None:
    world.enroll("enr_twice", "lee@client.example", {"first_name": "Lee"})
    handlers = [load_handler("SendFunction", TEMPLATE), load_handler("SendFunction", TEMPLATE)]
    event = world.sqs_event(world.request("enr_twice"))
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def deliver(handler: Callable[..., Any]) -> None:
        barrier.wait()
        from local.stack import LambdaContext

        try:
            results.append(handler(event, LambdaContext(function_name="SendFunction")))
        except Exception as error:  # noqa: BLE001 - a failed record is an acceptable outcome here
            results.append(error)

    threads = [threading.Thread(target=deliver, args=(h,)) for h in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(world.sent_to("lee@client.example")) == 1
    assert world.models.enrollment.get("enr_twice").step_index == 1


def test_a_crash_after_the_provider_accepted_is_reconciled_not_resent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.enroll("enr_crash", "kim@client.example", {"first_name": "Kim"})
    original = sending._record_sent

    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("the function died after SMTP accepted the message")

    monkeypatch.setattr(sending, "_record_sent", crash)
    with pytest.raises(SystemExit):
        send_step(world.context(), world.request("enr_crash"), now=NOW, redelivered=False)
    assert len(world.sent_to("kim@client.example")) == 1
    monkeypatch.setattr(sending, "_record_sent", original)
    # Before the lease expires, a redelivery can't take the inbox.
    with pytest.raises(RetryLater):
        send_step(world.context(), world.request("enr_crash"), now=NOW + timedelta(seconds=30), redelivered=True)
    # After it, the redelivery finds our Message-ID in the IMAP Sent folder and records it.
    outcome = send_step(world.context(), world.request("enr_crash"), now=NOW + timedelta(minutes=6), redelivered=True)
    assert outcome is Outcome.RECONCILED
    assert len(world.sent_to("kim@client.example")) == 1
    [entry] = [e for e in activity.recent(world.models, activity.campaign_key("cmp_1")) if e.kind == "step.reconciled"]
    assert "not sent again" in entry.message
    assert world.models.enrollment.get("enr_crash").step_index == 1
    assert world.models.inbox.get(world.inbox_id).sent_today == 1  # counted once, not twice


def test_a_lost_smtp_acknowledgement_is_held_unconfirmed_never_resent(world: World) -> None:
    """Before: the connection lost after DATA read as a transient failure, the retry found no copy
    in Sent (it is saved after SMTP succeeds) and sent the step again."""
    world.enroll("enr_ack", "ida@client.example", {"first_name": "Ida"})
    world.smtp.hang_up_after_data = True
    with pytest.raises(RetryLater):
        send_step(world.context(), world.request("enr_ack"), now=NOW, redelivered=False)
    world.smtp.clear_replies()
    assert len(world.sent_to("ida@client.example")) == 1  # the server took it
    later = NOW + timedelta(minutes=6)
    outcome = send_step(world.context(), world.request("enr_ack"), now=later, redelivered=True)
    assert outcome is Outcome.UNCONFIRMED
    assert len(world.sent_to("ida@client.example")) == 1
    enrollment = world.models.enrollment.get("enr_ack")
    assert enrollment.state == "unconfirmed" and enrollment.due_at is None  # never dispatched again
    [entry] = [e for e in activity.recent(world.models, activity.campaign_key("cmp_1")) if e.kind == "step.unconfirmed"]
    assert "could not be confirmed" in entry.message


def test_a_crash_between_smtp_and_the_sent_copy_is_held_unconfirmed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the function dying after the server took the message and before the copy reached
    Sent left nothing to reconcile against, and the redelivery sent it again."""
    world.enroll("enr_copy", "joe@client.example", {"first_name": "Joe"})

    original = ImapMailbox.append_sent

    def die(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("the function died before the copy was saved in Sent")

    monkeypatch.setattr(ImapMailbox, "append_sent", die)
    with pytest.raises(SystemExit):
        send_step(world.context(), world.request("enr_copy"), now=NOW, redelivered=False)
    monkeypatch.setattr(ImapMailbox, "append_sent", original)
    later = NOW + timedelta(minutes=6)
    assert send_step(world.context(), world.request("enr_copy"), now=later, redelivered=True) is Outcome.UNCONFIRMED
    assert len(world.sent_to("joe@client.example")) == 1


def test_a_redelivery_with_nothing_in_sent_sends_it(world: World) -> None:
    world.enroll("enr_lost", "max@client.example", {"first_name": "Max"})
    outcome = send_step(world.context(), world.request("enr_lost"), now=NOW, redelivered=True)
    assert outcome is Outcome.SENT
    assert len(world.sent_to("max@client.example")) == 1


@pytest.mark.usefixtures("atomic_dynamodb")
def test_overlapping_dispatch_ticks_enqueue_each_step_once(world: World, aws: Deployment) -> None:
    for number in range(3):
        world.enroll(f"enr_d{number}", f"p{number}@client.example", {"first_name": "P"})
    sqs = aws.client("sqs")
    queue = SqsQueue(sqs, aws.settings.send_queue_url)
    reports: list[Any] = []
    threads = [
        threading.Thread(target=lambda: reports.append(dispatch_due_steps(world.models, queue, now=NOW)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = aws.queue_messages("SendQueue")
    bodies = [json.loads(m["Body"]) for m in messages]
    # One inbox: one step per tick (its gap), and each tick chose the same earliest step.
    assert len(bodies) == 1
    assert sum(r.enqueued for r in reports) == 4  # every tick asked; the FIFO queue kept one
    assert messages[0]["Attributes"]["MessageDeduplicationId"] == f"{bodies[0]['enrollment_id']}-0"


def test_a_reply_recorded_between_claim_and_send_suppresses_the_send(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.enroll("enr_reply", "ivy@client.example", {"first_name": "Ivy"})
    original = sending._claim_inbox_slot

    def claim_then_reply(*args: Any, **kwargs: Any) -> Any:
        inbox = original(*args, **kwargs)
        enrollment = world.models.enrollment.get("enr_reply")
        enrollment.update(actions=[world.models.enrollment.state.set(EnrollmentState.REPLIED.value)])
        return inbox

    monkeypatch.setattr(sending, "_claim_inbox_slot", claim_then_reply)
    assert send_step(world.context(), world.request("enr_reply"), now=NOW, redelivered=False) is Outcome.STALE
    assert world.sent_to("ivy@client.example") == []
    inbox = world.models.inbox.get(world.inbox_id)
    assert inbox.sent_today == 0 and inbox.send_claim is None  # the slot was given back


def test_missing_variable_and_header_injection_fail_only_that_enrollment(world: World) -> None:
    world.enroll("enr_missing", "no.name@client.example", {})
    world.enroll("enr_inject", "evil@client.example", {"first_name": "Eve\r\nBcc: everyone@client.example"})
    world.enroll("enr_fine", "fine@client.example", {"first_name": "Finn"})
    ctx = world.context()
    assert send_step(ctx, world.request("enr_missing"), now=NOW, redelivered=False) is Outcome.FAILED
    assert send_step(ctx, world.request("enr_inject"), now=NOW + timedelta(minutes=2), redelivered=False) is (
        Outcome.FAILED
    )
    assert send_step(ctx, world.request("enr_fine"), now=NOW + timedelta(minutes=4), redelivered=False) is Outcome.SENT
    missing = world.models.enrollment.get("enr_missing")
    assert missing.state == EnrollmentState.FAILED and "first_name" in (missing.state_reason or "")
    assert missing.due_inbox is None
    injected = world.models.enrollment.get("enr_inject")
    assert injected.state == EnrollmentState.FAILED and "subject" in (injected.state_reason or "")
    assert [len(world.sent_to(a)) for a in ("no.name@client.example", "evil@client.example")] == [0, 0]
    assert not any(b"everyone@client.example" in m.data for m in world.smtp.received)
    assert len(world.sent_to("fine@client.example")) == 1


def test_transient_smtp_failures_retry_and_never_report_auth(world: World, aws: Deployment) -> None:
    world.enroll("enr_t", "tia@client.example", {"first_name": "Tia"})
    world.smtp.reply_with("MAIL", "421 4.7.0 Try again later, closing connection.")
    with pytest.raises(RetryLater):
        send_step(world.context(), world.request("enr_t"), now=NOW, redelivered=False)
    assert aws.queue_messages("AuthFailureQueue") == []
    inbox = world.models.inbox.get(world.inbox_id)
    assert inbox.status == InboxStatus.CONNECTED and inbox.transient_since is not None
    assert world.models.enrollment.get("enr_t").step_index == 0
    world.smtp.clear_replies()
    # The retry is a redelivery: it checks Sent first (nothing there), then sends.
    assert send_step(world.context(), world.request("enr_t"), now=NOW + timedelta(minutes=2), redelivered=True) is (
        Outcome.SENT
    )
    assert world.models.inbox.get(world.inbox_id).transient_since is None


def test_a_sending_limit_pauses_the_inbox_until_later(world: World, aws: Deployment) -> None:
    world.enroll("enr_lim", "lim@client.example", {"first_name": "Lim"})
    world.smtp.reply_with("RCPT", "550 5.4.5 Daily user sending limit exceeded.")
    outcome = send_step(world.context(), world.request("enr_lim"), now=NOW, redelivered=False)
    assert outcome is Outcome.INBOX_UNAVAILABLE
    inbox = world.models.inbox.get(world.inbox_id)
    assert inbox.rate_limited_until is not None and inbox.rate_limited_until > NOW
    assert inbox.status == InboxStatus.CONNECTED
    assert aws.queue_messages("AuthFailureQueue") == []
    report = dispatch_due_steps(
        world.models, SqsQueue(aws.client("sqs"), aws.settings.send_queue_url), now=NOW + timedelta(minutes=5)
    )
    assert report.skipped_inboxes == {world.inbox_id: "provider sending limit"}


def test_a_changed_password_reports_an_auth_failure_and_keeps_the_step(world: World, aws: Deployment) -> None:
    world.enroll("enr_auth", "ann@client.example", {"first_name": "Ann"})
    world.smtp.users[TEST_USER] = "a new password the inbox owner chose"
    outcome = send_step(world.context(), world.request("enr_auth"), now=NOW, redelivered=False)
    assert outcome is Outcome.AUTH_FAILURE
    [message] = aws.queue_messages("AuthFailureQueue")
    report = AuthFailureReport.from_json(message["Body"])
    assert report.kind == "auth_lost" and report.code.startswith("smtp:535")
    assert TEST_PASSWORD not in message["Body"]
    enrollment = world.models.enrollment.get("enr_auth")
    assert enrollment.step_index == 0 and enrollment.due_inbox is not None  # still pending, nothing lost
    assert world.models.inbox.get(world.inbox_id).send_claim is None  # and unclaimed


def test_a_rejected_recipient_bounces_only_that_enrollment(world: World) -> None:
    world.enroll("enr_gone", "gone@client.example", {"first_name": "Gus"})
    world.smtp.reply_with("RCPT", "550 5.1.1 The email account that you tried to reach does not exist.")
    outcome = send_step(world.context(), world.request("enr_gone"), now=NOW, redelivered=False)
    assert outcome is Outcome.RECIPIENT_REJECTED
    enrollment = world.models.enrollment.get("enr_gone")
    assert enrollment.state == EnrollmentState.BOUNCED and enrollment.due_inbox is None


def test_the_gap_and_the_daily_cap_hold_at_the_claim(world: World) -> None:
    inbox = world.models.inbox.get(world.inbox_id)
    inbox.update(actions=[world.models.inbox.daily_cap.set(2)])
    for number in range(3):
        world.enroll(f"enr_c{number}", f"c{number}@client.example", {"first_name": "C"})
    ctx = world.context()
    assert send_step(ctx, world.request("enr_c0"), now=NOW, redelivered=False) is Outcome.SENT
    with pytest.raises(RetryLater) as gap:
        send_step(ctx, world.request("enr_c1"), now=NOW + timedelta(seconds=20), redelivered=False)
    assert 30 <= gap.value.delay_seconds <= 60
    assert send_step(ctx, world.request("enr_c1"), now=NOW + timedelta(seconds=61), redelivered=False) is Outcome.SENT
    # Capped for today: the message is done and the step stays due; dispatch offers it again on the
    # inbox's next local day (retrying the message would walk it to the dead-letter queue).
    outcome = send_step(ctx, world.request("enr_c2"), now=NOW + timedelta(minutes=5), redelivered=False)
    assert outcome is Outcome.INBOX_UNAVAILABLE
    assert world.models.enrollment.get("enr_c2").due_at is not None
    # The next local day the counter starts again.
    next_day = SendRequest("enr_c2", 0, world.inbox_id, "2026-11-24", 60)
    assert send_step(ctx, next_day, now=NOW + timedelta(days=1), redelivered=False) is Outcome.SENT
    assert world.models.inbox.get(world.inbox_id).sent_today == 1


def test_dispatch_retimes_a_step_outside_the_window_across_the_clock_change(world: World, aws: Deployment) -> None:
    saturday_evening = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # Berlin still on CET (UTC+1)
    world.enroll("enr_dst", "dst@client.example", {"first_name": "Di"}, due=saturday_evening)
    queue = SqsQueue(aws.client("sqs"), aws.settings.send_queue_url)
    report = dispatch_due_steps(world.models, queue, now=saturday_evening + timedelta(minutes=1))
    assert report.enqueued == 0 and report.rescheduled == 1
    # Monday 30 March 09:00 in Berlin is CEST (UTC+2) after Sunday's change: 07:00 UTC, when dispatch
    # looks at the inbox again. The step itself is untouched, still due: never dropped.
    assert world.models.enrollment.get("enr_dst").due_at == epoch(saturday_evening)
    next_look = world.models.inbox.get(world.inbox_id).next_send_at
    assert datetime.fromtimestamp(next_look, UTC) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert aws.queue_messages("SendQueue") == []


def test_dispatch_moves_steps_past_the_daily_cap_to_the_next_local_day(world: World, aws: Deployment) -> None:
    inbox = world.models.inbox.get(world.inbox_id)
    inbox.update(
        actions=[
            world.models.inbox.daily_cap.set(1),
            world.models.inbox.usage_day.set("2026-11-23"),
            world.models.inbox.sent_today.set(1),
            world.models.inbox.last_sent_at.set(NOW),
        ]
    )
    world.enroll("enr_cap", "cap@client.example", {"first_name": "Cap"})
    queue = SqsQueue(aws.client("sqs"), aws.settings.send_queue_url)
    report = dispatch_due_steps(world.models, queue, now=NOW + timedelta(minutes=10))
    assert report.enqueued == 0 and report.rescheduled == 1
    next_look = datetime.fromtimestamp(world.models.inbox.get(world.inbox_id).next_send_at, UTC)
    assert next_look == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # Tuesday 09:00 Berlin (CET)
    assert world.models.enrollment.get("enr_cap").due_at == epoch(NOW)  # the step itself untouched


def test_a_message_for_a_disconnected_inbox_is_acknowledged_and_the_step_stays_due(world: World) -> None:
    world.enroll("enr_off", "off@client.example", {"first_name": "Off"})
    inbox = world.models.inbox.get(world.inbox_id)
    inbox.update(actions=[world.models.inbox.status.set(InboxStatus.DISCONNECTED.value)])
    outcome = send_step(world.context(), world.request("enr_off"), now=NOW, redelivered=False)
    assert outcome is Outcome.INBOX_UNAVAILABLE  # not a retry that would walk it to the DLQ
    assert world.sent_to("off@client.example") == []
    enrollment = world.models.enrollment.get("enr_off")
    assert enrollment.step_index == 0 and enrollment.due_inbox is not None


def test_a_suppressed_address_is_never_sent_and_its_slot_is_given_back(world: World) -> None:
    """An address suppressed after it was queued (the send-time check; dispatch's is stop_address)."""
    from sendwell.models import SuppressionReason
    from sendwell.services import suppression

    world.enroll("enr_supp", "gone@client.example", {"first_name": "Gus"})
    assert suppression.suppress(
        world.models, "gone@client.example", reason=SuppressionReason.BOUNCED, now=NOW, source="a test"
    )
    assert send_step(world.context(), world.request("enr_supp"), now=NOW, redelivered=False) is Outcome.SUPPRESSED
    assert world.sent_to("gone@client.example") == []
    enrollment = world.models.enrollment.get("enr_supp")
    assert enrollment.state == EnrollmentState.SUPPRESSED.value and enrollment.due_inbox is None
    inbox = world.models.inbox.get(world.inbox_id)
    assert inbox.sent_today == 0 and inbox.send_claim is None
