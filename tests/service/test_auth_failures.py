"""The auth-failure lifecycle on moto: disconnect once, notify once per incident, remind, never on a
transient fault. Reports are built by the real classifier from what the client libraries raise, and
go through the real handlers (several "containers" on threads where concurrency matters)."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from google.auth import exceptions as google_exceptions
from moto.ses.models import Message

from local.stack import Handler, LambdaContext, load_handler
from sendwell.adapters.aws import SesMailer, SnsPublisher, SqsQueue
from sendwell.adapters.once import IdempotentRunner
from sendwell.classify import (
    classify_gmail_response,
    classify_google_refresh_error,
    classify_google_transport_error,
    classify_graph_response,
    classify_msal_exception,
    classify_msal_result,
    classify_smtp_error,
)
from sendwell.clock import epoch
from sendwell.failures import Failure, FailureKind
from sendwell.models import EnrollmentState, InboxStatus, LinkState, StepAttribute
from sendwell.ports.messages import AuthFailureReport
from sendwell.services import activity, attention, auth_failures, inbox_health, links
from sendwell.services.attention import Attention
from sendwell.services.auth_failures import IncidentContext, Verdict
from tests.deployment import Deployment, sent_emails
from tests.template import REGION, TEMPLATE

INBOX = "ibx_sales"
ADDRESS = "sales@client.example"
OWNER = "dana@client.example"
ADMIN = "admin@agency.example"
T0 = datetime(2026, 11, 23, 9, 0, 5, tzinfo=UTC)

# --------------------------------------------------------------------------------- provider failures


def invalid_grant() -> Failure:
    """What google-auth raises when the user changed their password or revoked access."""
    data = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    return classify_google_refresh_error(
        google_exceptions.RefreshError("invalid_grant: Token has been expired or revoked.", data, retryable=False)
    )


def invalid_client() -> Failure:
    data = {"error": "invalid_client", "error_description": "The OAuth client was deleted."}
    return classify_google_refresh_error(
        google_exceptions.RefreshError("invalid_client: The OAuth client was deleted.", data, retryable=False)
    )


def expired_microsoft_secret() -> Failure:
    return classify_msal_result(
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000222: The provided client secret keys for app "
            "'6731de76-14a6-49ae-97bc-6eba6914391e' are expired. Trace ID: 0c3e0b52-9d3a-4f1e-b7c6-2a1d0e9f8b00",
            "error_codes": [7000222],
        }
    )


GOOGLE_502_PAGE = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 502 (Server Error)!!1</title>\n"
    "  <p><b>502.</b> <ins>That\u2019s an error.</ins>\n  <p>The server encountered a temporary error and could "
    "not complete your request.<p>Please try again in 30 seconds.  <ins>That\u2019s all we know.</ins>\n"
)


def transient_storm() -> list[Failure]:
    """5xx, timeouts, 429s and HTML 502s, as each provider's client library reports them."""
    gmail_503 = {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}
    gmail_429 = {
        "error": {
            "code": 429,
            "message": "Too many concurrent requests for user.",
            "errors": [{"message": "Too many concurrent requests for user.", "reason": "rateLimitExceeded"}],
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    graph_429 = json.dumps(
        {"error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}}
    )
    google_timeout = google_exceptions.TransportError("HTTPSConnectionPool: Read timed out. (read timeout=120)")
    google_timeout.__cause__ = TimeoutError("The read operation timed out")
    failures = [
        classify_gmail_response(503, gmail_503, {"Content-Type": "application/json"}),
        classify_gmail_response(502, GOOGLE_502_PAGE, {"Content-Type": "text/html; charset=UTF-8"}),
        classify_gmail_response(429, gmail_429, {"Content-Type": "application/json"}),
        classify_google_refresh_error(google_exceptions.RefreshError(GOOGLE_502_PAGE, retryable=False)),
        classify_google_refresh_error(
            google_exceptions.RefreshError(
                "internal_failure: Backend Error",
                {"error": "internal_failure", "error_description": "Backend Error"},
                retryable=True,
            )
        ),
        classify_google_transport_error(google_timeout),
        classify_graph_response(429, graph_429, {"Retry-After": "30", "Content-Type": "application/json"}),
        classify_graph_response(504, "<html><body><h1>504 Gateway Time-out</h1></body></html>", {}),
        classify_msal_exception(TimeoutError("timed out")),
        classify_smtp_error(TimeoutError("timed out")),
        classify_smtp_error(ConnectionResetError(104, "Connection reset by peer")),
    ]
    assert {f.kind for f in failures} == {FailureKind.TRANSIENT, FailureKind.RATE_LIMITED}
    return failures


def report(
    failure: Failure, *, at: datetime, inbox_id: str = INBOX, provider: str = "gmail", source: str = "send"
) -> AuthFailureReport:
    return AuthFailureReport(
        inbox_id=inbox_id,
        provider=provider,
        kind=failure.kind.value,
        code=failure.code,
        reason=failure.reason,
        fix=failure.fix,
        at=at.isoformat(),
        source=source,
    )


# --------------------------------------------------------------------------------- the deployment


def seed_inbox(aws: Deployment, inbox_id: str = INBOX, *, address: str = ADDRESS, provider: str = "gmail") -> None:
    aws.models.inbox(
        inbox_id=inbox_id,
        provider=provider,
        address=address,
        display_name="Sales <script>alert(1)</script>",
        owner_email=OWNER,
        created_at=T0 - timedelta(days=30),
        status=InboxStatus.CONNECTED.value,
        poll_shard="1",
        poll_slot=0,
    ).save()


def seed_campaign_with_pending_step(aws: Deployment, inbox_id: str = INBOX) -> None:
    campaign = aws.models.campaign(
        campaign_id="cmp_q4", name="Q4 outreach", created_at=T0 - timedelta(days=2), inbox_ids=[inbox_id], steps=[]
    )
    campaign.steps = [
        StepAttribute(subject="Quick question, {{ first_name }}", text="Hi {{ first_name }}, ..."),
        StepAttribute(subject="Following up", text="Any thoughts?", delay_seconds=3 * 86400),
    ]
    campaign.save()
    aws.models.campaign(
        campaign_id="cmp_other", name="Other inbox", created_at=T0, inbox_ids=["ibx_other"], steps=[]
    ).save()
    aws.models.enrollment(
        enrollment_id="enr_jorg",
        campaign_id="cmp_q4",
        inbox_id=inbox_id,
        email="jorg.muller@beispiel.de",
        fields={"first_name": "Jörg"},
        created_at=T0 - timedelta(days=1),
        step_index=1,
        due_inbox=inbox_id,
        due_at=epoch(T0 + timedelta(hours=2)),
    ).save()


def sqs_event(reports: Sequence[AuthFailureReport], template: dict[str, Any]) -> dict[str, Any]:
    """An SQS batch as Lambda delivers it, shaped like events/auth_failure.json."""
    records = []
    for item in reports:
        body = item.to_json()
        records.append(
            {
                **template,
                "messageId": str(uuid.uuid4()),
                "body": body,
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's own checksum
            }
        )
    return {"Records": records}


def deliver(handler: Handler, event: dict[str, Any]) -> set[str]:
    """Invoke like Lambda's SQS integration; returns the ids of the records SQS would deliver again."""
    try:
        result = handler(event, LambdaContext(function_name="AuthFailureFunction", aws_request_id=str(uuid.uuid4())))
    except BatchProcessingError:  # every record failed: the whole batch comes back
        return {record["messageId"] for record in event["Records"]}
    return {item["itemIdentifier"] for item in result["batchItemFailures"]}


def deliver_until_done(handler: Handler, event: dict[str, Any], *, max_receives: int = 5) -> int:
    """Redeliver failed records (as SQS does after the visibility timeout); returns the rounds needed."""
    pending = event["Records"]
    for round_number in range(1, max_receives + 1):
        failed = deliver(handler, {"Records": pending})
        pending = [record for record in pending if record["messageId"] in failed]
        if not pending:
            return round_number
    raise AssertionError(f"{len(pending)} records still failing after {max_receives} receives")


def handler_context(handler: Handler) -> IncidentContext:
    context: IncidentContext = inspect.unwrap(handler).__globals__["PARTS"].context
    return context


def reconnect_tokens(emails: Sequence[Message]) -> list[str]:
    return [m for email in emails for m in re.findall(r'href="https://sendwell\.example\.test/r/([\w-]+)"', email.body)]


@dataclass
class EventTap:
    """An SQS queue subscribed to the inbox-events topic, as an integration would subscribe."""

    aws: Deployment
    url: str

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(message["Body"]) for message in self.aws.drain(self.url)]


@pytest.fixture
def inbox_events(aws: Deployment) -> EventTap:
    return EventTap(aws, aws.subscribe_queue(aws.settings.inbox_events_topic_arn, "integration-tap"))


@pytest.fixture
def verdicts(monkeypatch: pytest.MonkeyPatch) -> list[Verdict]:
    """Every verdict handle_report returns, from handlers loaded after this fixture."""
    seen: list[Verdict] = []
    real = auth_failures.handle_report

    def recording(ctx: IncidentContext, item: AuthFailureReport, *, now: datetime) -> Verdict:
        verdict = real(ctx, item, now=now)
        seen.append(verdict)  # list.append is atomic: safe from several threads
        return verdict

    monkeypatch.setattr(auth_failures, "handle_report", recording)
    return seen


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The incident id of every ``connected -> disconnected`` write that succeeded.

    Counted at the conditional write itself: a report that made the transition and then failed on
    a notice (and was redelivered) still counts once, which a count of returned verdicts would miss.
    """
    won: list[str] = []
    real = auth_failures._disconnect

    def recording(ctx: IncidentContext, inbox: Any, item: AuthFailureReport, now: datetime) -> bool:
        transitioned = real(ctx, inbox, item, now)
        if transitioned:
            won.append(inbox.incident_id)
        return transitioned

    monkeypatch.setattr(auth_failures, "_disconnect", recording)
    return won


@pytest.fixture
def record_template(sample_event: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = sample_event("auth_failure.json")["Records"][0]
    return record


def emitted_metrics(output: str) -> Counter[str]:
    """Sum of each metric in the CloudWatch EMF documents a handler printed."""
    totals: Counter[str] = Counter()
    for line in output.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for definition in document["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                values = document[metric["Name"]]
                totals[metric["Name"]] += int(sum(values) if isinstance(values, list) else values)
    return totals


def incident_context(aws: Deployment, **options: Any) -> IncidentContext:
    """The reminders function's wiring, with ``now`` left to the test."""
    once = IdempotentRunner(aws.settings.idempotency_table, boto3_client=aws.client("dynamodb"))
    once.register_lambda_context(LambdaContext(function_name="RemindersFunction"))
    return IncidentContext(
        models=aws.models,
        mailer=SesMailer(aws.client("ses"), aws.settings.sender_address),
        events=SnsPublisher(aws.client("sns"), aws.settings.inbox_events_topic_arn),
        once=once,
        workspace_name=aws.settings.workspace_name,
        admin_emails=aws.settings.admin_emails,
        public_base_url=aws.settings.public_base_url,
        **options,
    )


def reconnect_tasks(aws: Deployment) -> SqsQueue:
    """The reconnect queue, where the reminders function queues an unfinished reconnect again."""
    return SqsQueue(aws.client("sqs"), aws.settings.reconnect_queue_url)


# --------------------------------------------------------------------------------- disconnect once


@pytest.mark.usefixtures("atomic_dynamodb")
def test_fifty_concurrent_invalid_grant_reports_disconnect_once_and_notify_once(
    aws: Deployment, inbox_events: EventTap, transitions: list[str], record_template: dict[str, Any]
) -> None:
    seed_inbox(aws)
    seed_campaign_with_pending_step(aws)
    first_failure = datetime.now(UTC) - timedelta(seconds=30)
    reports = [
        report(invalid_grant(), at=first_failure + timedelta(milliseconds=40 * i), source=("send", "poll")[i % 2])
        for i in range(50)
    ]
    batches = [sqs_event(reports[i : i + 10], record_template) for i in range(0, 50, 10)]
    # Five concurrent Lambda containers, each with its own module state, start on the same signal.
    containers = [load_handler("AuthFailureFunction", TEMPLATE) for _ in batches]
    start = threading.Barrier(len(containers))

    def run(handler: Handler, event: dict[str, Any]) -> set[str]:
        start.wait()
        return deliver(handler, event)

    with ThreadPoolExecutor(len(containers)) as pool:
        failed = set().union(*pool.map(run, containers, batches))
    # Records that met a notice in progress elsewhere fail and come back; redelivered, they finish.
    retry = [record for batch in batches for record in batch["Records"] if record["messageId"] in failed]
    if retry:
        deliver_until_done(containers[0], {"Records": retry})
    # Powertools keeps metrics in one dict shared by every Metrics object of the process; five
    # containers in one process can leave a metric behind that a real container would have flushed.
    Metrics().clear_metrics()

    inbox = aws.models.inbox.get(INBOX)
    assert transitions == [inbox.incident_id]
    assert inbox.status == InboxStatus.DISCONNECTED
    assert inbox.status_code == "google:invalid_grant"
    assert inbox.status_reason == invalid_grant().reason and inbox.status_fix == invalid_grant().fix
    assert inbox.failed_at is not None and inbox.failed_at >= first_failure
    assert inbox.poll_shard is None  # no more polling until the reconnect

    emails = sent_emails()
    assert sorted(d for e in emails for d in e.destinations["ToAddresses"]) == [ADMIN, OWNER, ADDRESS]
    assert all(e.subject == f"Action needed: {ADDRESS} was disconnected" for e in emails)
    tokens = reconnect_tokens(emails)
    assert len(set(tokens)) == 3  # a fresh link in each
    assert {links.verify(aws.models, token, now=datetime.now(UTC)).inbox_id for token in tokens} == {INBOX}

    events = inbox_events.messages()
    assert len(events) == 1
    body = json.loads(events[0]["Message"])
    assert body["type"] == "inbox.disconnected" and body["inbox_id"] == INBOX
    assert body["code"] == "google:invalid_grant" and body["incident_id"] == inbox.incident_id
    assert body["campaign_ids"] == ["cmp_q4"] and body["dedup_key"] == f"{inbox.incident_id}:disconnected"
    assert {name: a["Value"] for name, a in events[0]["MessageAttributes"].items()} == {
        "event_type": "inbox.disconnected",
        "provider": "gmail",
        "inbox_id": INBOX,
    }

    # Pending steps stay pending: the follow-up is still due, at the same time.
    enrollment = aws.models.enrollment.get("enr_jorg")
    assert enrollment.state == EnrollmentState.ACTIVE and enrollment.step_index == 1
    assert enrollment.due_at == epoch(T0 + timedelta(hours=2)) and enrollment.due_inbox is not None
    # The campaign shows why it is paused, once, and its log says so.
    assert aws.models.campaign.get("cmp_q4").disconnected_inbox_ids == {INBOX}
    assert aws.models.campaign.get("cmp_other").disconnected_inbox_ids is None
    log = activity.recent(aws.models, activity.campaign_key("cmp_q4"))
    assert [entry.kind for entry in log] == ["inbox.disconnected"]
    assert "paused because the inbox was disconnected" in log[0].message and "password was changed" in log[0].message
    inbox_log = [entry.kind for entry in activity.recent(aws.models, activity.inbox_key(INBOX))]
    assert sorted(inbox_log) == ["inbox.disconnected", "notice.sent"]


def test_transient_storms_never_disconnect_or_notify(
    aws: Deployment,
    inbox_events: EventTap,
    verdicts: list[Verdict],
    record_template: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_inbox(aws)
    seed_inbox(aws, "ibx_support", address="support@client.example", provider="outlook")
    now = datetime.now(UTC)
    storm = [
        report(failure, at=now, inbox_id=inbox_id, provider=provider)
        for failure in transient_storm()
        for inbox_id, provider in ((INBOX, "gmail"), ("ibx_support", "outlook"))
        for _ in range(2)
    ]
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    handler = aws.handler("AuthFailureFunction")
    for start in range(0, len(storm), 10):
        assert deliver(handler, sqs_event(storm[start : start + 10], record_template)) == set()

    assert set(verdicts) == {Verdict.IGNORED} and len(verdicts) == len(storm)
    for inbox_id in (INBOX, "ibx_support"):
        inbox = aws.models.inbox.get(inbox_id)
        assert inbox.status == InboxStatus.CONNECTED and inbox.incident_id is None and inbox.attention_at is None
    assert sent_emails() == [] and inbox_events.messages() == []
    assert links.list_links(aws.models, INBOX) == []
    metrics = emitted_metrics(capsys.readouterr().out)
    kinds = Counter(item.kind for item in storm)
    assert metrics["TransientFailures"] == kinds["transient"]
    assert metrics["RateLimitedFailures"] == kinds["rate_limited"]
    assert metrics["InboxesDisconnected"] == 0


def test_app_configuration_errors_raise_one_ops_notice_per_code_an_hour_and_disconnect_nobody(
    aws: Deployment,
    inbox_events: EventTap,
    record_template: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_inbox(aws)
    seed_inbox(aws, "ibx_support", address="support@client.example", provider="outlook")
    now = datetime.now(UTC)
    reports = [report(invalid_client(), at=now, source=source) for source in ("send", "poll") * 3]
    reports += [report(expired_microsoft_secret(), at=now, inbox_id="ibx_support", provider="outlook")] * 4
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
    assert deliver(aws.handler("AuthFailureFunction"), sqs_event(reports, record_template)) == set()

    emails = sent_emails()
    assert sorted(e.subject for e in emails) == [
        "Action needed: the Google app configuration is failing",
        "Action needed: the Microsoft 365 app configuration is failing",
    ]
    assert all(e.destinations["ToAddresses"] == [ADMIN] for e in emails)
    assert "aadsts:7000222" in next(e.body for e in emails if "Microsoft" in e.subject)
    for inbox_id in (INBOX, "ibx_support"):
        assert aws.models.inbox.get(inbox_id).status == InboxStatus.CONNECTED
    assert inbox_events.messages() == []
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["AppConfigErrors"] == 10 and metrics["AppConfigFailures"] == 10

    # The same error an hour later is a new notice: ops hear again while it is not fixed.
    ctx = incident_context(aws)
    later = now + timedelta(hours=1)
    for _ in range(3):
        assert auth_failures.handle_report(ctx, report(invalid_client(), at=later), now=later) is Verdict.APP_CONFIG
    assert len(sent_emails()) == 3


def test_a_report_about_a_lost_grant_that_predates_the_reconnect_is_ignored(aws: Deployment) -> None:
    seed_inbox(aws)
    inbox = aws.models.inbox.get(INBOX)
    inbox.update(actions=[aws.models.inbox.reconnected_at.set(T0)])
    ctx = incident_context(aws)
    stale = report(invalid_grant(), at=T0 - timedelta(minutes=3))  # failed with the old grant, queued meanwhile
    assert auth_failures.handle_report(ctx, stale, now=T0 + timedelta(minutes=1)) is Verdict.IGNORED
    assert aws.models.inbox.get(INBOX).status == InboxStatus.CONNECTED
    fresh = report(invalid_grant(), at=T0 + timedelta(minutes=2))
    assert auth_failures.handle_report(ctx, fresh, now=T0 + timedelta(minutes=2)) is Verdict.DISCONNECTED
    assert auth_failures.handle_report(ctx, fresh, now=T0 + timedelta(minutes=3)) is Verdict.ABSORBED
    assert len(sent_emails()) == 3


# --------------------------------------------------------------------------------- SES and SNS failing


def test_a_failing_ses_call_retried_later_sends_each_notice_once(
    aws: Deployment,
    inbox_events: EventTap,
    monkeypatch: pytest.MonkeyPatch,
    transitions: list[str],
    verdicts: list[Verdict],
    record_template: dict[str, Any],
) -> None:
    seed_inbox(aws)
    handler = aws.handler("AuthFailureFunction")
    context = handler_context(handler)
    event = sqs_event([report(invalid_grant(), at=datetime.now(UTC))], record_template)
    message_id = event["Records"][0]["messageId"]

    # First delivery: SNS is down. The inbox is disconnected whatever happens to the notices.
    def sns_unavailable(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "Internal error"}}, "Publish")

    with monkeypatch.context() as patch:
        patch.setattr(context.events, "publish", sns_unavailable)
        assert deliver(handler, event) == {message_id}
    assert aws.models.inbox.get(INBOX).status == InboxStatus.DISCONNECTED
    assert sent_emails() == [] and inbox_events.messages() == []

    # Second delivery: SNS works, SES throttles the second email.
    real_send = context.mailer.send
    sends = Counter[str]()

    def throttled_on_the_second_email(email: Any) -> str:
        sends["calls"] += 1
        if sends["calls"] == 2:
            throttled = {"Error": {"Code": "Throttling", "Message": "Maximum sending rate exceeded."}}
            raise ClientError(throttled, "SendEmail")
        return real_send(email)

    with monkeypatch.context() as patch:
        patch.setattr(context.mailer, "send", throttled_on_the_second_email)
        assert deliver(handler, event) == {message_id}
    assert [e.destinations["ToAddresses"] for e in sent_emails()] == [[ADMIN]]

    # Third delivery finishes; a duplicate delivery after that changes nothing.
    assert deliver(handler, event) == set()
    assert deliver(handler, event) == set()

    assert transitions == [aws.models.inbox.get(INBOX).incident_id]
    assert verdicts == [Verdict.ABSORBED, Verdict.ABSORBED]  # the two deliveries that did not fail
    assert sorted(d for e in sent_emails() for d in e.destinations["ToAddresses"]) == [ADMIN, OWNER, ADDRESS]
    assert len(inbox_events.messages()) == 1
    # The link made for the email SES refused was never seen by anyone: it is revoked.
    states = Counter(link.state for link in links.list_links(aws.models, INBOX))
    assert states == {LinkState.ACTIVE: 3, LinkState.REVOKED: 1}


def test_a_notice_that_keeps_failing_ends_in_the_dead_letter_queue(aws: Deployment, inbox_events: EventTap) -> None:
    seed_inbox(aws)
    aws.client("ses").delete_identity(Identity="agency.example")  # SES now refuses every notice
    sqs = aws.client("sqs")
    queue, dead_letters = aws.stack.refs["AuthFailureQueue"], aws.stack.refs["AuthFailureDeadLetterQueue"]
    body = report(invalid_grant(), at=datetime.now(UTC)).to_json()
    sqs.send_message(QueueUrl=queue, MessageBody=body)
    handler = aws.handler("AuthFailureFunction")
    receives = 0
    while received := sqs.receive_message(QueueUrl=queue, AttributeNames=["All"]).get("Messages", []):
        receives += 1
        message = received[0]
        event = {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": message["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": message["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": aws.stack.attributes[("AuthFailureQueue", "Arn")],
                    "awsRegion": REGION,
                }
            ]
        }
        if deliver(handler, event):  # failed: visible again at once instead of after the timeout
            sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        else:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        assert receives <= 5
    assert receives == 5  # the queue's maxReceiveCount
    dead = sqs.receive_message(QueueUrl=dead_letters).get("Messages", [])
    assert [m["Body"] for m in dead] == [body]
    # The inbox state does not depend on the notices; the SNS event went out once regardless.
    inbox = aws.models.inbox.get(INBOX)
    assert inbox.status == InboxStatus.DISCONNECTED and inbox.status_code == "google:invalid_grant"
    assert sent_emails() == []
    assert len(inbox_events.messages()) == 1
    assert Counter(link.state for link in links.list_links(aws.models, INBOX)) == {LinkState.REVOKED: 5}


# --------------------------------------------------------------------------------- reminders


def test_reminders_come_at_24_and_72_hours_then_stop(aws: Deployment) -> None:
    seed_inbox(aws)
    ctx = incident_context(aws)
    assert auth_failures.handle_report(ctx, report(invalid_grant(), at=T0), now=T0) is Verdict.DISCONNECTED
    assert len(sent_emails()) == 3

    def run(at: datetime) -> list[Attention]:
        due = attention.due_for_attention(aws.models, now=at)
        return [attention.attend(ctx, reconnect_tasks(aws), inbox_id, now=at) for inbox_id in due]

    assert run(T0 + timedelta(hours=23, minutes=59)) == []
    assert run(T0 + timedelta(hours=24)) == [Attention.REMINDED]
    assert run(T0 + timedelta(hours=24, minutes=15)) == []  # the next run finds nothing more
    first_reminders = sent_emails()[3:]
    assert len(first_reminders) == 3
    assert {e.subject for e in first_reminders} == {f"Reminder: {ADDRESS} is still disconnected"}
    assert all("disconnected since 23 November 2026 at 09:00 UTC" in e.body for e in first_reminders)
    assert run(T0 + timedelta(hours=48)) == []
    assert run(T0 + timedelta(hours=72)) == [Attention.REMINDED]
    assert run(T0 + timedelta(days=30)) == []
    assert len(sent_emails()) == 9
    assert len(set(reconnect_tokens(sent_emails()))) == 9  # every email has its own link
    inbox = aws.models.inbox.get(INBOX)
    assert inbox.reminders_sent == 2 and inbox.attention_at is None and inbox.attention_shard is None
    assert inbox.status == InboxStatus.DISCONNECTED


def test_no_reminder_after_a_reconnect(aws: Deployment) -> None:
    seed_inbox(aws)
    seed_inbox(aws, "ibx_support", address="support@client.example")
    ctx = incident_context(aws, reminder_delays=(timedelta(hours=1), timedelta(hours=3)))
    for inbox_id in (INBOX, "ibx_support"):
        assert auth_failures.handle_report(ctx, report(invalid_grant(), at=T0, inbox_id=inbox_id), now=T0) is (
            Verdict.DISCONNECTED
        )
    assert {aws.models.inbox.get(i).attention_at for i in (INBOX, "ibx_support")} == {epoch(T0 + timedelta(hours=1))}
    table = aws.models.inbox
    reconnected = T0 + timedelta(minutes=30)
    # The reconnect takes the inbox off the attention index...
    aws.models.inbox.get(INBOX).update(
        actions=[
            table.status.set(InboxStatus.CONNECTED.value),
            table.reconnected_at.set(reconnected),
            table.attention_shard.remove(),
            table.attention_at.remove(),
        ]
    )
    # ...and even where it did not, the status is checked again before anything is sent.
    aws.models.inbox.get("ibx_support").update(
        actions=[table.status.set(InboxStatus.CONNECTED.value), table.reconnected_at.set(reconnected)]
    )
    sent_before = len(sent_emails())
    due = attention.due_for_attention(aws.models, now=T0 + timedelta(hours=1))
    assert due == ["ibx_support"]
    assert attention.attend(ctx, reconnect_tasks(aws), "ibx_support", now=T0 + timedelta(hours=1)) is Attention.CLEARED
    assert attention.due_for_attention(aws.models, now=T0 + timedelta(days=10)) == []
    assert len(sent_emails()) == sent_before


# --------------------------------------------------------------------------------- degraded


def test_transient_failures_for_24_hours_send_one_degraded_notice(aws: Deployment) -> None:
    seed_inbox(aws)
    seed_inbox(aws, "ibx_recovers", address="recovers@client.example")
    ctx = incident_context(aws)
    table = aws.models.inbox
    for inbox_id in (INBOX, "ibx_recovers"):  # what a poll does on the first transient failure of a spell
        aws.models.inbox.get(inbox_id).update(actions=inbox_health.degraded_watch(table, now=T0))
    # One inbox recovers after two hours (a successful poll clears the spell).
    aws.models.inbox.get("ibx_recovers").update(
        actions=[table.transient_since.remove(), table.degraded_notified.set(False)]
    )

    assert attention.due_for_attention(aws.models, now=T0 + timedelta(hours=23)) == []
    due = attention.due_for_attention(aws.models, now=T0 + timedelta(hours=24))
    assert sorted(due) == sorted([INBOX, "ibx_recovers"])
    outcomes = {i: attention.attend(ctx, reconnect_tasks(aws), i, now=T0 + timedelta(hours=24)) for i in due}
    assert outcomes == {INBOX: Attention.DEGRADED, "ibx_recovers": Attention.CLEARED}
    assert attention.due_for_attention(aws.models, now=T0 + timedelta(days=3)) == []

    emails = sent_emails()
    assert len(emails) == 1 and emails[0].destinations["ToAddresses"] == [ADMIN]
    assert emails[0].subject == f"{ADDRESS} is having trouble reaching Google"
    assert "since 23 November 2026 at 09:00 UTC" in emails[0].body and "<script>" not in emails[0].body
    inbox = aws.models.inbox.get(INBOX)
    assert inbox.status == InboxStatus.CONNECTED and inbox.degraded_notified is True
    assert [e.kind for e in activity.recent(aws.models, activity.inbox_key(INBOX))] == ["inbox.degraded"]


def test_a_degraded_check_before_the_configured_delay_waits_for_it(aws: Deployment) -> None:
    seed_inbox(aws)
    ctx = incident_context(aws, degraded_after=timedelta(hours=36))
    aws.models.inbox.get(INBOX).update(actions=inbox_health.degraded_watch(aws.models.inbox, now=T0))
    assert attention.attend(ctx, reconnect_tasks(aws), INBOX, now=T0 + timedelta(hours=24)) is Attention.RESCHEDULED
    assert aws.models.inbox.get(INBOX).attention_at == epoch(T0 + timedelta(hours=36))
    assert sent_emails() == []
    assert attention.attend(ctx, reconnect_tasks(aws), INBOX, now=T0 + timedelta(hours=36)) is Attention.DEGRADED
    assert len(sent_emails()) == 1


# --------------------------------------------------------------------------------- the reminders function


def test_reminders_handler_runs_on_its_sample_event(
    aws: Deployment, sample_event: Callable[[str], dict[str, Any]]
) -> None:
    seed_inbox(aws)
    now = datetime.now(UTC)
    due = epoch(now - timedelta(minutes=5))
    aws.models.inbox.get(INBOX).update(
        actions=[
            aws.models.inbox.status.set(InboxStatus.DISCONNECTED.value),
            aws.models.inbox.status_code.set("smtp:535 5.7.8"),
            aws.models.inbox.status_reason.set("The mail server rejected the username and password."),
            aws.models.inbox.status_fix.set("Reconnect this inbox with the current password."),
            aws.models.inbox.failed_at.set(now - timedelta(hours=24, minutes=5)),
            aws.models.inbox.incident_id.set("inc_0123456789abcdef"),
            aws.models.inbox.attention_shard.set("2"),
            aws.models.inbox.attention_at.set(due),
        ]
    )
    result = aws.invoke("RemindersFunction", sample_event("reminders.json"))
    assert result == {"reminded": 1}
    emails = sent_emails()
    assert sorted(d for e in emails for d in e.destinations["ToAddresses"]) == [ADMIN, OWNER, ADDRESS]
    assert all("The mail server rejected the username and password." in e.body for e in emails)
    inbox = aws.models.inbox.get(INBOX)
    assert inbox.reminders_sent == 1 and inbox.attention_at == due + 48 * 3600
    # The next scheduled run, a quarter of an hour later, has nothing to do.
    assert aws.invoke("RemindersFunction", sample_event("reminders.json")) == {}
    assert len(sent_emails()) == 3


def test_reminders_handler_counts_a_failing_notice_and_retries_it_next_run(
    aws: Deployment, sample_event: Callable[[str], dict[str, Any]]
) -> None:
    seed_inbox(aws)
    ctx = incident_context(aws, reminder_delays=(timedelta(minutes=1),))
    failed_at = datetime.now(UTC) - timedelta(minutes=10)
    auth_failures.handle_report(ctx, report(invalid_grant(), at=failed_at), now=failed_at)
    aws.client("ses").delete_identity(Identity="agency.example")
    assert aws.invoke("RemindersFunction", sample_event("reminders.json")) == {"failed": 1}
    assert aws.models.inbox.get(INBOX).reminders_sent == 0  # still due
    aws.client("ses").verify_domain_identity(Domain="agency.example")
    assert aws.invoke("RemindersFunction", sample_event("reminders.json")) == {"reminded": 1}
    subjects = Counter(e.subject for e in sent_emails())
    assert subjects == {
        f"Action needed: {ADDRESS} was disconnected": 3,
        f"Reminder: {ADDRESS} is still disconnected": 3,
    }
