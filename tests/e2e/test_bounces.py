"""What a returned message does, polled from Gmail at the sandbox: soft bounces send the step again
later, sender-side blocks never mark the prospect bounced and pause a refused inbox, and a bounce
that names none of our Message-IDs is matched by its failed recipient."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from sendwell.adapters.aws import SesMailer, SnsPublisher
from sendwell.adapters.once import IdempotentRunner
from sendwell.ids import step_message_id
from sendwell.models import Enrollment, EnrollmentState
from sendwell.services import activity, bounces, suppression
from sendwell.services.campaigns import enrollment_id_for
from sendwell.services.dispatch import dispatch_due_steps
from sendwell.services.polling import PollContext, poll_inbox, polling_scheduled
from sendwell.services.sending import Outcome
from tests.deployment import Deployment, emails_to, forget_sent_emails
from tests.provider_sandbox import ProviderSandbox, SendWorld

ALICE = "alice.archer@gmail.com"
ADMIN = "ops@agency.example"
FULL = ("4.2.2", "452 4.2.2 The email account that you tried to reach is over quota.")
BLOCKED = ("5.7.1", "550 5.7.1 Service unavailable; client host [203.0.113.9] blocked using zen.spamhaus.org")


@pytest.fixture
def gmail(aws: Deployment, providers: ProviderSandbox) -> SendWorld:
    return SendWorld(aws, providers, provider="gmail", address=ALICE, credentials=providers.connect_google(ALICE))


def _context(world: SendWorld, aws: Deployment) -> PollContext:
    return PollContext(
        models=world.models,
        mailboxes=world.fresh_mailboxes(),
        auth_failures=world.reporter,
        events=SnsPublisher(aws.client("sns"), aws.settings.inbox_events_topic_arn),
        once=IdempotentRunner(aws.settings.idempotency_table, boto3_client=aws.client("dynamodb")),
        mailer=SesMailer(aws.client("ses"), aws.settings.sender_address),
        admin_emails=(ADMIN,),
        workspace_name="Agency",
    )


def _events(aws: Deployment) -> tuple[Any, str]:
    return aws, aws.subscribe_queue(aws.settings.inbox_events_topic_arn, "integration", raw=True)


def _drain(aws: Deployment, url: str) -> list[dict[str, Any]]:
    return [json.loads(message["Body"]) for message in aws.drain(url)]


def dsn(recipient: str, code: tuple[str, str], *, original_id: str | None, n: int) -> bytes:
    """A delivery status notification as Gmail's MTA writes it; with the original's headers when
    ``original_id`` is given, else with nothing of ours in it but the failed recipient."""
    status, diagnostic = code
    original = f"Message-ID: {original_id}\r\n" if original_id else ""
    return (
        f"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\nTo: {ALICE}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\nDate: Mon, 23 Nov 2026 10:31:00 +0000\r\n"
        f"Message-ID: <dsn-{n}@mx.google.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain\r\n\r\nYour message to {recipient} was not delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; googlemail.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n"
        f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}To: {recipient}\r\n"
        "Subject: Quick question\r\n--b1--\r\n"
    ).encode()


def _enroll(world: SendWorld, email: str) -> str:
    enrollment_id = enrollment_id_for("cmp_oauth", email)  # as an import derives it
    world.enroll(enrollment_id, email)
    return enrollment_id


def _reset_cursor(world: SendWorld, cursor: str | None) -> None:
    world.inbox().update(actions=[world.models.inbox.poll_cursor.set(cursor)])


def test_a_soft_bounce_sends_the_step_again_later_under_a_new_message_id(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    enrollment_id = _enroll(gmail, "full@client.example")
    assert gmail.send(enrollment_id, 0) is Outcome.SENT
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=1))  # baseline cursor
    baseline = gmail.inbox().poll_cursor
    first = step_message_id(enrollment_id, 0, ALICE)
    providers.sandbox.deliver_gmail(ALICE, dsn("full@client.example", FULL, original_id=first, n=1))
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=5))
    assert result.outcomes == {"soft_bounce": 1}
    back = gmail.models.enrollment.get(enrollment_id, consistent_read=True)
    assert back.state == EnrollmentState.ACTIVE and back.step_index == 0
    assert back.step_attempt == 1 and back.soft_bounces == 1
    assert back.due_at is not None and back.due_at >= int((gmail.start + bounces.SOFT_RETRY_AFTER[0]).timestamp())
    assert not suppression.is_suppressed(gmail.models, "full@client.example")

    # The same mail read again (a crash before the cursor was saved) changes nothing.
    _reset_cursor(gmail, baseline)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=10))
    again = gmail.models.enrollment.get(enrollment_id, consistent_read=True)
    assert (again.soft_bounces, again.step_attempt, again.due_at) == (1, 1, back.due_at)

    # The step goes out again under its own Message-ID: the returned copy in Sent is not taken for it.
    assert gmail.send(enrollment_id, 0, later=timedelta(hours=5)) is Outcome.SENT
    assert gmail.found_in_sent(step_message_id(enrollment_id, 0, ALICE, attempt=1)) is not None
    sent = gmail.models.enrollment.get(enrollment_id, consistent_read=True)
    assert sent.step_index == 1 and sent.step_attempt == 0


def _returned_each_time(
    gmail: SendWorld,
    ctx: PollContext,
    providers: ProviderSandbox,
    enrollment_id: str,
    report: tuple[str, str],
    *,
    times: int,
    every: timedelta,
) -> list[tuple[int, Enrollment]]:
    """Send step 0, have it come back with ``report``, poll; ``times`` over. The enrollment after each."""
    email = gmail.models.enrollment.get(enrollment_id).email
    after = []
    for attempt in range(times):
        later = every * attempt
        assert gmail.send(enrollment_id, 0, later=later) is Outcome.SENT
        ours = step_message_id(enrollment_id, 0, ALICE, attempt=attempt)
        providers.sandbox.deliver_gmail(ALICE, dsn(email, report, original_id=ours, n=attempt))
        poll_inbox(ctx, gmail.inbox(), now=gmail.start + later + timedelta(minutes=5))
        after.append((attempt, gmail.models.enrollment.get(enrollment_id, consistent_read=True)))
    return after


def test_soft_bounces_past_the_limit_treat_the_address_as_gone(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    enrollment_id = _enroll(gmail, "full@client.example")
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start)
    for attempt, enrollment in _returned_each_time(
        gmail, ctx, providers, enrollment_id, FULL, times=bounces.MAX_SOFT_BOUNCES + 1, every=timedelta(days=4)
    ):
        if attempt < bounces.MAX_SOFT_BOUNCES:
            assert enrollment.state == EnrollmentState.ACTIVE and enrollment.step_attempt == attempt + 1
    assert enrollment.state == EnrollmentState.BOUNCED and enrollment.due_at is None
    assert "treated as gone" in (enrollment.state_reason or "")
    assert suppression.is_suppressed(gmail.models, "full@client.example")


def test_sender_side_blocks_never_bounce_the_prospect_and_pause_a_refused_inbox_once(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    """Before: a block for spam, policy or reputation marked a valid prospect BOUNCED, and nobody
    heard that the inbox was being refused."""
    forget_sent_emails()
    _, url = _events(aws)
    prospects = [f"p{i}@client.example" for i in range(6)]
    ids = [_enroll(gmail, email) for email in prospects]
    for i, enrollment_id in enumerate(ids):
        assert gmail.send(enrollment_id, 0, later=timedelta(minutes=2 * i)) is Outcome.SENT
    ctx = _context(gmail, aws)
    now = gmail.start + timedelta(minutes=15)
    poll_inbox(ctx, gmail.inbox(), now=now)
    baseline = gmail.inbox().poll_cursor
    gmail.inbox().update(actions=polling_scheduled(gmail.models.inbox))  # connected: it has a poll slot
    _drain(aws, url)
    refused = range(bounces.BLOCK_PAUSE_MIN)
    for i in refused:
        ours = step_message_id(ids[i], 0, ALICE)
        providers.sandbox.deliver_gmail(ALICE, dsn(prospects[i], BLOCKED, original_id=ours, n=i))
    result = poll_inbox(ctx, gmail.inbox(), now=now + timedelta(minutes=5))
    assert result.outcomes == {"sender_blocked": bounces.BLOCK_PAUSE_MIN} and result.paused_for_blocks

    for i in refused:
        enrollment = gmail.models.enrollment.get(ids[i], consistent_read=True)
        assert enrollment.state == EnrollmentState.ACTIVE, enrollment.state_reason
        assert enrollment.step_index == 0 and enrollment.step_attempt == 1 and enrollment.sender_blocks == 1
        assert not suppression.is_suppressed(gmail.models, prospects[i])
    inbox = gmail.inbox()
    assert inbox.paused and "refused" in (inbox.paused_reason or "")
    assert inbox.blocks_today == bounces.BLOCK_PAUSE_MIN
    assert inbox.poll_shard is not None  # a paused inbox is still polled: replies still stop sequences
    [notice] = emails_to(ADMIN)
    assert ALICE in notice.subject
    assert [e["type"] for e in _drain(aws, url)] == ["inbox.paused"]
    log = activity.recent(gmail.models, activity.inbox_key(gmail.inbox_id), limit=50)
    assert [e.kind for e in log].count("inbox.paused_for_blocks") == 1

    # Read again: counted once, told once.
    _reset_cursor(gmail, baseline)
    poll_inbox(ctx, gmail.inbox(), now=now + timedelta(minutes=10))
    assert gmail.inbox().blocks_today == bounces.BLOCK_PAUSE_MIN
    assert len(emails_to(ADMIN)) == 1 and _drain(aws, url) == []

    # Nothing goes out from the paused inbox, though the steps are due again a day later.
    queued: list[str] = []

    class Queue:
        def send_batch(self, messages: Any) -> None:
            queued.extend(json.loads(m.body)["enrollment_id"] for m in messages)

    dispatch_due_steps(gmail.models, Queue(), now=now + timedelta(days=2))
    assert queued == []


def test_a_prospect_refused_for_the_inbox_too_often_is_held_not_bounced(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    enrollment_id = _enroll(gmail, "valid@client.example")
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start)
    *_, (_, held) = _returned_each_time(
        gmail, ctx, providers, enrollment_id, BLOCKED, times=bounces.MAX_SENDER_BLOCKS + 1, every=timedelta(days=2)
    )
    assert held.state == EnrollmentState.PAUSED and held.due_at is None
    assert "sending inbox" in (held.state_reason or "")
    assert not suppression.is_suppressed(gmail.models, "valid@client.example")


def test_a_bounce_naming_none_of_our_message_ids_is_matched_by_its_failed_recipient(
    gmail: SendWorld, aws: Deployment, providers: ProviderSandbox
) -> None:
    """Before: 124 real bounces carried no Message-ID of ours, and the 68 that named the failed
    recipient were dropped as unmatched."""
    gone = _enroll(gmail, "gone@client.example")
    other = _enroll(gmail, "here@client.example")
    assert gmail.send(gone, 0) is Outcome.SENT
    assert gmail.send(other, 0, later=timedelta(minutes=2)) is Outcome.SENT
    ctx = _context(gmail, aws)
    poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=5))
    unknown = ("5.1.1", "550 5.1.1 <gone@client.example>: Recipient address rejected: User unknown")
    providers.sandbox.deliver_gmail(ALICE, dsn("Gone@Client.example", unknown, original_id=None, n=1))
    providers.sandbox.deliver_gmail(ALICE, dsn("stranger@elsewhere.example", unknown, original_id=None, n=2))
    result = poll_inbox(ctx, gmail.inbox(), now=gmail.start + timedelta(minutes=10))
    assert result.outcomes == {"bounce": 1, "unmatched": 1}
    assert gmail.models.enrollment.get(gone, consistent_read=True).state == EnrollmentState.BOUNCED
    assert gmail.models.enrollment.get(other, consistent_read=True).state == EnrollmentState.ACTIVE
    assert suppression.is_suppressed(gmail.models, "gone@client.example")
    assert not suppression.is_suppressed(gmail.models, "stranger@elsewhere.example")
