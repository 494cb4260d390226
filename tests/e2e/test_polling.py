"""Polling through the real providers' shapes: replies and bounces stop sequences, exactly once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from sendwell.adapters.aws import SnsPublisher
from sendwell.adapters.once import IdempotentRunner
from sendwell.ids import step_message_id
from sendwell.models import EnrollmentState
from sendwell.services import activity, polling
from sendwell.services.dispatch import dispatch_due_steps
from sendwell.services.polling import PollContext, poll_inbox
from sendwell.services.sending import Outcome
from tests.deployment import Deployment
from tests.provider_sandbox import ProviderSandbox, SendWorld, mime

ALICE = "alice.archer@gmail.com"
OLIVIA = "olivia@contoso.example"


class Events:
    """The SNS topic of inbox events, read through an SQS subscription as an integration would."""

    def __init__(self, aws: Deployment) -> None:
        self.aws = aws
        self.url = aws.subscribe_queue(aws.settings.inbox_events_topic_arn, "integration", raw=True)

    def drain(self) -> list[dict[str, Any]]:
        return [json.loads(message["Body"]) for message in self.aws.drain(self.url)]


def _context(world: SendWorld, aws: Deployment) -> PollContext:
    return PollContext(
        models=world.models,
        mailboxes=world.fresh_mailboxes(),
        auth_failures=world.reporter,
        events=SnsPublisher(aws.client("sns"), aws.settings.inbox_events_topic_arn),
        once=IdempotentRunner(aws.settings.idempotency_table, boto3_client=aws.client("dynamodb")),
    )


@pytest.fixture
def gmail(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    return SendWorld(aws, providers, provider="gmail", address=ALICE, credentials=providers.connect_google(ALICE))


@pytest.fixture
def outlook(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    return SendWorld(
        aws, providers, provider="outlook", address=OLIVIA, credentials=providers.connect_microsoft(OLIVIA)
    )


def _log(world: SendWorld) -> list[activity.Entry]:
    return activity.recent(world.models, activity.campaign_key("cmp_oauth"), limit=200)


def _bounce(to: str, original_id: str, recipient: str) -> bytes:
    return (
        f"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\nTo: {to}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\nDate: Mon, 23 Nov 2026 10:31:00 +0000\r\n"
        "Message-ID: <dsn-1@mx.google.com>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nAddress not found\r\n\r\n"
        f"Your message wasn't delivered to {recipient} because the address couldn't be found.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; googlemail.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does not exist.\r\n"
        f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_id}\r\nTo: {recipient}\r\n"
        "--b1--\r\n"
    ).encode()


def test_a_gmail_reply_and_a_bounce_stop_their_sequences_once(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    events = Events(aws)
    gmail.enroll("enr_reply", "dana@client.example", "Dana")
    gmail.enroll("enr_bounce", "gone@client.example", "Gus")
    gmail.enroll("enr_quiet", "quiet@client.example", "Quinn")
    assert gmail.send("enr_reply", 0) is Outcome.SENT
    assert gmail.send("enr_bounce", 0, later=timedelta(minutes=2)) is Outcome.SENT
    assert gmail.send("enr_quiet", 0, later=timedelta(minutes=4)) is Outcome.SENT
    ctx = _context(gmail, aws)
    first = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=5))  # baseline cursor
    assert first.failure is None
    baseline = gmail.inbox().poll_cursor
    assert baseline
    sandbox = providers.sandbox
    ours = step_message_id("enr_reply", 0, ALICE)
    sandbox.deliver_gmail(ALICE, mime("dana@client.example", ALICE, "Re: Quick question, Dana", in_reply_to=ours))
    sandbox.deliver_gmail(ALICE, _bounce(ALICE, step_message_id("enr_bounce", 0, ALICE), "gone@client.example"))
    sandbox.deliver_gmail(ALICE, mime("newsletter@vendor.example", ALICE, "Our November update"))
    # Their follow-ups are due already: the poll must stop them before dispatch sends them.
    for enrollment_id in ("enr_reply", "enr_bounce", "enr_quiet"):
        item = gmail.models.enrollment.get(enrollment_id)
        item.update(actions=[gmail.models.enrollment.due_at.set(int(gmail.start.timestamp()))])
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=10))
    assert result.failure is None and result.fetched == 3
    assert result.outcomes == {"reply": 1, "bounce": 1, "other": 1}
    replied, bounced = gmail.models.enrollment.get("enr_reply"), gmail.models.enrollment.get("enr_bounce")
    assert replied.state == EnrollmentState.REPLIED and replied.due_inbox is None
    assert bounced.state == EnrollmentState.BOUNCED and "5.1.1" in (bounced.state_reason or "")
    assert {e["type"] for e in events.drain()} == {"enrollment.replied", "enrollment.bounced"}
    log_before = len(_log(gmail))
    # The same window polled again (the cursor moved back as after a crash): nothing happens twice.
    inbox = gmail.inbox()
    inbox.update(actions=[gmail.models.inbox.poll_cursor.set(baseline)])
    again = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=15))
    assert again.fetched == 3
    assert events.drain() == [] and len(_log(gmail)) == log_before
    # A poll with nothing new costs one history.list call.
    calls = sandbox.request_count("/gmail/v1/users/me/history")
    total = sandbox.request_count("/gmail/")
    assert poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=20)).fetched == 0
    assert sandbox.request_count("/gmail/v1/users/me/history") == calls + 1
    assert sandbox.request_count("/gmail/") == total + 1
    # Dispatch only sends the prospect who stayed quiet.
    queue_messages: list[str] = []

    class Queue:
        def send_batch(self, messages: Any) -> None:
            queue_messages.extend(json.loads(m.body)["enrollment_id"] for m in messages)

    dispatch_due_steps(gmail.models, Queue(), now=gmail.start + timedelta(days=3, hours=1))
    assert "enr_reply" not in queue_messages and "enr_bounce" not in queue_messages


def _feedback_report(to: str, original_id: str, recipient: str) -> bytes:
    """An RFC 5965 feedback report, as a mailbox provider's feedback loop sends it, in our thread."""
    return (
        f"From: Feedback Loop <fbl@feedback.example>\r\nTo: {to}\r\nSubject: Re: Quick question\r\n"
        f"Date: Mon, 23 Nov 2026 10:32:00 +0000\r\nMessage-ID: <fbl-1@feedback.example>\r\n"
        f"In-Reply-To: {original_id}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="f1"\r\n\r\n'
        "--f1\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--f1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        f"User-Agent: FBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {recipient}\r\n"
        f"--f1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_id}\r\nTo: {recipient}\r\n"
        "--f1--\r\n"
    ).encode()


def test_a_spam_complaint_stops_its_sequence_and_is_not_read_as_a_reply(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    """Before: a feedback report threaded on our message was read as the prospect's reply."""
    events = Events(aws)
    gmail.enroll("enr_complains", "angry@client.example", "Angus")
    assert gmail.send("enr_complains", 0) is Outcome.SENT
    ctx = _context(gmail, aws)
    assert poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=5)).failure is None
    ours = step_message_id("enr_complains", 0, ALICE)
    providers.sandbox.deliver_gmail(ALICE, _feedback_report(ALICE, ours, "angry@client.example"))
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=10))
    assert result.outcomes == {"complaint": 1}
    stopped = gmail.models.enrollment.get("enr_complains")
    assert stopped.state == EnrollmentState.COMPLAINED and stopped.due_inbox is None
    assert [e["type"] for e in events.drain()] == ["enrollment.complained"]


def test_a_crash_before_the_cursor_is_saved_loses_nothing(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = Events(aws)
    gmail.enroll("enr_c", "carl@client.example", "Carl")
    assert gmail.send("enr_c", 0) is Outcome.SENT
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=1))
    ours = step_message_id("enr_c", 0, ALICE)
    providers.sandbox.deliver_gmail(ALICE, mime("carl@client.example", ALICE, "Re: hi", in_reply_to=ours))
    original = polling._save_cursor

    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("the poll function died before saving its cursor")

    monkeypatch.setattr(polling, "_save_cursor", crash)
    with pytest.raises(SystemExit):
        poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=2))
    monkeypatch.setattr(polling, "_save_cursor", original)
    entries = len(_log(gmail))
    redo = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=3))
    assert redo.fetched == 1 and redo.outcomes == {"reply": 1}
    assert gmail.models.enrollment.get("enr_c").state == EnrollmentState.REPLIED
    assert [e["type"] for e in events.drain()] == ["enrollment.replied"]
    assert len(_log(gmail)) == entries


def test_a_reply_that_names_only_the_gmail_thread_is_found(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    gmail.enroll("enr_t", "tess@client.example", "Tess")
    assert gmail.send("enr_t", 0) is Outcome.SENT
    thread = gmail.models.enrollment.get("enr_t").thread_id
    assert thread
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=1))
    providers.sandbox.deliver_gmail(ALICE, mime("tess@client.example", ALICE, "Re: question"), thread_id=thread)
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=2))
    assert result.outcomes == {"reply": 1}
    assert gmail.models.enrollment.get("enr_t").state == EnrollmentState.REPLIED


@pytest.mark.parametrize(
    ("inbox", "deliver", "lose_cursor", "enrollment_id", "prospect", "first_name", "subject"),
    [
        pytest.param(
            "gmail",
            "deliver_gmail",
            "expire_gmail_history",
            "enr_h",
            "hal@client.example",
            "Hal",
            "Re: hi",
            id="expired-gmail-history",
        ),
        pytest.param(
            "outlook",
            "deliver_graph",
            "expire_graph_delta",
            "enr_o",
            "omar@client.example",
            "Omar",
            "RE: hi",
            id="lost-outlook-delta",
        ),
    ],
)
def test_a_reply_is_found_after_the_provider_lost_the_poll_cursor(
    inbox: str,
    deliver: str,
    lose_cursor: str,
    enrollment_id: str,
    prospect: str,
    first_name: str,
    subject: str,
    aws: Deployment,
    providers: ProviderSandbox,
    request: pytest.FixtureRequest,
) -> None:
    world: SendWorld = request.getfixturevalue(inbox)
    world.enroll(enrollment_id, prospect, first_name)
    assert world.send(enrollment_id, 0) is Outcome.SENT
    ctx = _context(world, aws)
    poll_inbox(ctx, world.inbox(), now=world.start + timedelta(minutes=1))
    ours = step_message_id(enrollment_id, 0, world.address)
    getattr(providers.sandbox, deliver)(world.address, mime(prospect, world.address, subject, in_reply_to=ours))
    getattr(providers.sandbox, lose_cursor)(world.address)
    result = poll_inbox(ctx, world.inbox(), now=world.start + timedelta(minutes=2))
    assert result.failure is None and result.outcomes.get("reply") == 1
    assert world.models.enrollment.get(enrollment_id).state == EnrollmentState.REPLIED


def test_poll_auth_errors_are_reported_and_transient_ones_never_are(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    ctx = _context(gmail, aws)
    for fault in ("server_error_500", "html_502", "rate_limit_429"):
        providers.sandbox.inject_fault(ALICE, "read", fault, times=1)
        result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=1))
        assert result.failure is not None
    assert aws.queue_messages("AuthFailureQueue") == []
    assert gmail.inbox().transient_since is not None
    providers.sandbox.revoke_google_grant(ALICE)
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=5))
    [report] = aws.queue_messages("AuthFailureQueue")
    body = json.loads(report["Body"])
    assert body["kind"] == "auth_lost" and body["source"] == "poll" and result.failure


def test_a_sending_limit_report_pauses_the_inbox_not_the_prospect(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start)
    limit = (
        f"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\nTo: {ALICE}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\nDate: Mon, 23 Nov 2026 10:31:00 +0000\r\n"
        "Message-ID: <limit-1@mx.google.com>\r\n\r\n"
        "You have reached a limit for sending mail. Your message was not sent.\r\n"
        "550 5.4.5 Daily user sending limit exceeded. Please try again in 24 hours.\r\n"
    ).encode()
    providers.sandbox.deliver_gmail(ALICE, limit)
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=1))
    assert result.outcomes == {"sender_limit": 1}
    assert gmail.inbox().rate_limited_until is not None


@pytest.mark.dovecot
def test_an_imap_reply_stops_the_sequence_through_dovecot(aws: Deployment, smtp_server: Any, dovecot: Any) -> None:
    import imaplib
    import time

    from tests.e2e.test_sending import NOW, World
    from tests.smtp_server import TEST_USER

    world = World(aws, smtp_server, dovecot)
    world.enroll("enr_imap", "ida@client.example", {"first_name": "Ida"})
    ctx = world.context()
    from sendwell.services.sending import send_step

    assert send_step(ctx, world.request("enr_imap"), now=NOW, redelivered=False) is Outcome.SENT
    poll = PollContext(
        models=world.models,
        mailboxes=world.mailboxes,
        auth_failures=ctx.auth_failures,
        events=SnsPublisher(aws.client("sns"), aws.settings.inbox_events_topic_arn),
        once=IdempotentRunner(aws.settings.idempotency_table, boto3_client=aws.client("dynamodb")),
    )
    inbox = world.models.inbox.get(world.inbox_id)
    assert poll_inbox(poll, inbox, now=NOW).failure is None  # sets the UIDVALIDITY+UID cursor
    reply = mime(
        "ida@client.example",
        TEST_USER,
        "Re: Quick question, Ida",
        in_reply_to=step_message_id("enr_imap", 0, TEST_USER),
    )
    client = dovecot.connect(TEST_USER)
    client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), reply)
    client.logout()
    result = poll_inbox(poll, world.models.inbox.get(world.inbox_id), now=NOW + timedelta(minutes=5))
    assert result.outcomes == {"reply": 1}
    assert world.models.enrollment.get("enr_imap").state == EnrollmentState.REPLIED
