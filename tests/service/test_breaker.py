"""The mass-disconnect breaker on moto, through the real handlers, with the production settle time.

Reports go through the AuthFailureFunction as SQS delivers them. A settling report is queued again
with a delay (``Later`` keeps what the handler queued, and the test delivers it once the clock has
moved past the delay); dispatch and polls are the real functions, the mailboxes in memory. The
permission losses are real payloads: Gmail's SMTP 535 for a refused password, and google-auth's
``invalid_grant`` for a Google grant.
"""

from __future__ import annotations

import dataclasses
import json
import os
import smtplib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from google.auth import exceptions as google_exceptions

from sendwell import wiring
from sendwell.adapters.credentials import CredentialStore
from sendwell.classify import classify_google_refresh_error, classify_smtp_error
from sendwell.failures import Failure
from sendwell.models import Inbox, InboxStatus
from sendwell.ports.messages import AuthFailureReport
from sendwell.services import activity, breaker
from tests.deployment import deployed, emails_to, forget_sent_emails, sent_emails
from tests.faults import aws_faults
from tests.memory_providers import MemoryMailboxes
from tests.service.test_auth_failures import emitted_metrics
from tests.service.test_fault_harness import ADMIN, Harness, deliver_queue

# Gmail's answer to a password that no longer works (support.google.com/a/answer/3726730).
GMAIL_535 = (
    b"5.7.8 Username and Password not accepted. For more information, go to\n"
    b"5.7.8  https://support.google.com/mail/?p=BadCredentials d2e1a72fcca58-7390d9a2b1asm1234567b3a.12 - gsmtp"
)
SETTLE = timedelta(minutes=3)  # past the production settle time (120 s), as the visibility timeout is


def refused_password() -> Failure:
    return classify_smtp_error(smtplib.SMTPAuthenticationError(535, GMAIL_535), host="smtp.gmail.com")


def expired_google_grant() -> Failure:
    """What every inbox of an app whose consent screen is in Testing gets after 7 days."""
    data = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    return classify_google_refresh_error(
        google_exceptions.RefreshError("invalid_grant: Token has been expired or revoked.", data, retryable=False)
    )


@dataclass
class Later:
    """Stands in for the handler's own queue, as ``SqsAuthFailureReporter`` is called."""

    queued: list[tuple[AuthFailureReport, int | None]] = field(default_factory=list)

    def report(self, report: AuthFailureReport, *, delay_seconds: int | None = None) -> None:
        self.queued.append((report, delay_seconds))

    def take(self) -> list[tuple[AuthFailureReport, int | None]]:
        taken, self.queued = self.queued, []
        return taken


LATER = Later()


@pytest.fixture
def world() -> Iterator[Harness]:
    variables = {"SENDWELL_BREAKER_SETTLE_SECONDS": "120"}  # the production default, not the tests' 0
    with (
        pytest.MonkeyPatch.context() as env,
        deployed(env, prefix="breaker", variables=variables, metrics=True) as aws,
        aws_faults() as faults,
    ):
        store = CredentialStore.with_kms(aws.models, aws.client("kms"), aws.settings.credentials_key_id)
        forget_sent_emails()
        harness = Harness(aws=aws, faults=faults, mailboxes=MemoryMailboxes(store))
        module = sys.modules[harness.handler("AuthFailureFunction").__module__]
        module.PARTS = dataclasses.replace(module.PARTS, later=LATER)
        LATER.take()
        yield harness


def record(world: Harness, inbox: Inbox, failure: Failure, source: str = "send") -> dict[str, Any]:
    return record_of(world, AuthFailureReport.of(inbox, failure, at=world.now, source=source))


def record_of(world: Harness, report: AuthFailureReport) -> dict[str, Any]:
    world.serial += 1
    return {
        "messageId": f"m-{report.inbox_id}-{world.serial}",
        "receiptHandle": "handle",
        "body": report.to_json(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": world.aws.stack.attributes[("AuthFailureQueue", "Arn")],
        "awsRegion": "us-east-1",
    }


def deliver(world: Harness, records: list[dict[str, Any]]) -> set[str]:
    """One delivery in batches of ten; the ids SQS would deliver again."""
    failed: set[str] = set()
    for start in range(0, len(records), 10):
        batch = records[start : start + 10]
        result = world.invoke("AuthFailureFunction", {"Records": batch}, fail_at=None, kind="")
        assert result is not None, "the invocation failed"
        failed |= {item["itemIdentifier"] for item in result["batchItemFailures"]}
    return failed


def come_back(world: Harness) -> list[dict[str, Any]]:
    """What the handler queued again, delivered once its delay has passed."""
    queued = LATER.take()
    assert all(delay is not None and 0 < delay <= SETTLE.total_seconds() for _, delay in queued), queued
    world.now += SETTLE
    return [record_of(world, report) for report, _ in queued]


def deliver_until_settled(world: Harness, records: list[dict[str, Any]]) -> None:
    pending = records
    for _ in range(4):
        assert deliver(world, pending) == set()
        pending = come_back(world)
        if not pending:
            return
    raise AssertionError(f"{len(pending)} reports never settled")


def stored(world: Harness, inbox: Inbox) -> Inbox:
    return world.aws.models.inbox.get(inbox.inbox_id, consistent_read=True)


def trip(world: Harness, count: int, capsys: pytest.CaptureFixture[str] | None = None) -> list[Inbox]:
    inboxes = [world.add_inbox() for _ in range(count)]
    for inbox in inboxes:
        world.enroll(inbox)
    records = [record(world, inbox, refused_password()) for inbox in inboxes]
    # The first delivery: every loss is too recent to judge, so each inbox is held, and its report
    # queued again to come back once the others have had time to report.
    assert deliver(world, records) == set()
    assert [delay for _, delay in LATER.queued] == [120] * count
    for inbox in inboxes:
        current = stored(world, inbox)
        assert (current.status, current.held_reason) == (InboxStatus.CONNECTED, "settling")
    if capsys is not None:
        assert emitted_metrics(capsys.readouterr().out)["AppConfigErrors"] == 0
    assert deliver(world, come_back(world)) == set()
    assert LATER.queued == []
    return inboxes


def sent_to_owners(inboxes: list[Inbox]) -> int:
    return sum(len(emails_to(address)) for inbox in inboxes for address in (inbox.owner_email, inbox.address))


def test_fifty_inboxes_failing_at_once_raise_one_alarm_disconnect_none_and_mail_no_owner(
    world: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = [world.add_inbox() for _ in range(10)]
    inboxes = trip(world, 50, capsys)

    for inbox in inboxes:
        current = stored(world, inbox)
        assert current.status == InboxStatus.CONNECTED and current.held_reason == "breaker"
        assert current.incident_id is None
    assert all(stored(world, inbox).held_since is None for inbox in healthy)
    # One alarm: the report that tripped it is counted, the 49 held after it are not.
    assert emitted_metrics(capsys.readouterr().out)["AppConfigErrors"] == 1
    # One notice, to the admins, with the evidence; nobody else hears anything.
    emails = sent_emails()
    assert [e.destinations["ToAddresses"] for e in emails] == [[ADMIN]]
    assert "50 of 60 connected" in emails[0].body and "smtp:535 5.7.8" in emails[0].body
    assert sent_to_owners(inboxes) == 0
    # The held inboxes' due steps wait: dispatch enqueues nothing for them.
    world.invoke("DispatchFunction", {}, fail_at=None, kind="")
    deliver_queue(world, "DispatchQueue", "DispatchWorkerFunction", fail_at=None, kind="")
    queued = world.aws.client("sqs").receive_message(
        QueueUrl=world.aws.stack.refs["SendQueue"], MaxNumberOfMessages=10, AttributeNames=["All"]
    )
    held_ids = {inbox.inbox_id for inbox in inboxes}
    bodies = [json.loads(m["Body"]) for m in queued.get("Messages", [])]
    assert not [b for b in bodies if b["inbox_id"] in held_ids]

    # More reports of the same trip (polls keep failing) neither alarm nor mail again.
    world.now += timedelta(minutes=5)
    deliver_until_settled(world, [record(world, inbox, refused_password(), "poll") for inbox in inboxes[:10]])
    assert emitted_metrics(capsys.readouterr().out)["AppConfigErrors"] == 0
    assert len(sent_emails()) == 1

    # The cause is fixed: each held inbox's next poll signs in, and that releases it, silently.
    world.now += timedelta(minutes=5)
    world.poll(*inboxes)
    for inbox in inboxes:
        current = stored(world, inbox)
        assert current.status == InboxStatus.CONNECTED and current.held_since is None and current.held_reason is None
    assert len(sent_emails()) == 1 and sent_to_owners(inboxes) == 0


def test_a_real_loss_during_the_breaker_window_is_disconnected_and_told(world: Harness) -> None:
    trip(world, 6)
    assert len(sent_emails()) == 1

    # Another provider's single loss: weighed against its own provider, where it is alone.
    google = world.add_inbox(provider="gmail")
    # A conclusive loss at the tripped provider: nothing to weigh, it disconnects at once.
    deleted = world.add_inbox()
    gone = classify_google_refresh_error(
        google_exceptions.RefreshError(
            "invalid_grant: Account has been deleted",
            {"error": "invalid_grant", "error_description": "Account has been deleted"},
            retryable=False,
        )
    )
    assert gone.conclusive
    assert deliver(world, [record(world, deleted, gone)]) == set()
    assert stored(world, deleted).status == InboxStatus.DISCONNECTED

    deliver_until_settled(world, [record(world, google, expired_google_grant())])
    current = stored(world, google)
    assert current.status == InboxStatus.DISCONNECTED and current.held_since is None
    for address in (ADMIN, google.owner_email, google.address, deleted.owner_email):
        assert any(address in e.destinations["ToAddresses"] for e in sent_emails()), address


def test_an_inbox_still_failing_once_the_breaker_has_closed_is_disconnected_properly(world: Harness) -> None:
    inboxes = trip(world, 6)
    still_failing = inboxes[0]
    # The others' polls sign in again; 40 minutes on, the window holds no other inbox's loss.
    world.now += timedelta(minutes=40)
    deliver_until_settled(world, [record(world, still_failing, refused_password(), "poll")])
    current = stored(world, still_failing)
    assert current.status == InboxStatus.DISCONNECTED and current.held_reason is None
    assert len(emails_to(still_failing.owner_email)) == 1
    log = [entry.kind for entry in activity.recent(world.aws.models, activity.inbox_key(still_failing.inbox_id))]
    assert "inbox.held" in log and "inbox.disconnected" in log


def test_a_poll_that_signs_in_after_the_failure_ends_the_settling_silently(world: Harness) -> None:
    inbox = world.add_inbox()
    assert deliver(world, [record(world, inbox, refused_password(), "poll")]) == set()
    assert stored(world, inbox).held_reason == "settling"
    world.now += timedelta(minutes=1)
    world.poll(inbox)  # the memory mailbox signs in fine
    again = come_back(world)
    assert deliver(world, again) == set() and LATER.queued == []
    current = stored(world, inbox)
    assert current.status == InboxStatus.CONNECTED and current.held_since is None
    assert sent_emails() == []


def test_the_loss_log_counts_an_inbox_once_however_many_reports_it_sends(world: Harness) -> None:
    inbox = world.add_inbox()
    records = [record(world, inbox, refused_password()) | {"messageId": f"m-{n}"} for n in range(30)]
    deliver(world, records)
    marks = list(world.aws.models.activity.query(breaker.losses_key("custom")))
    assert [mark.details["inbox_id"] for mark in marks] == [inbox.inbox_id]


def test_the_handler_queues_a_settling_report_on_its_own_queue_with_the_delay(world: Harness) -> None:
    """What ``Later`` stands in for: the wired reporter, on the real queue (moto keeps the delay)."""
    module = sys.modules[world.handler("AuthFailureFunction").__module__]
    real = wiring.incidents(os.environ).later
    inbox = world.add_inbox()
    real.report(AuthFailureReport.of(inbox, refused_password(), at=world.now, source="send"), delay_seconds=120)
    sqs, url = world.aws.client("sqs"), world.aws.settings.auth_failure_queue_url
    delayed = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert delayed["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
    assert module.PARTS.later is LATER


def test_an_owner_whose_inboxes_go_down_together_gets_one_email_with_one_link(world: Harness) -> None:
    """Three losses at once settle together (too few to trip the breaker): each inbox is
    disconnected, and their owner hears once, with a link for all three."""
    owner = "erin@client.example"
    inboxes = [world.add_inbox(owner_email=owner) for _ in range(3)]
    deliver_until_settled(world, [record(world, inbox, refused_password()) for inbox in inboxes])
    assert all(stored(world, inbox).status == InboxStatus.DISCONNECTED for inbox in inboxes)
    (to_owner,) = emails_to(owner)
    assert to_owner.subject == "Action needed: 3 inboxes of yours are disconnected"
    assert all(inbox.address in to_owner.body for inbox in inboxes)
    assert len(emails_to(ADMIN)) == 3  # the admins hear of each incident
