"""What ops see when the whole story runs through the real handlers: on moto, a real SMTP server, a real
Dovecot and the provider sandbox, two inboxes connect through admin links (a password, Google
sign-in), send, then lose access (a password change; an app misconfiguration, then a revoked grant),
are disconnected with notices, a reminder can't be sent, and one inbox reconnects through the link in
its notice. Every EMF document and every log line printed meanwhile is kept, and checked: each metric
an alarm watches was emitted, each emitted metric is on the dashboard, and no line holds any secret
the scenario used. (The alarms and the dashboard themselves: ``tests/unit/test_operations.py``.)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlencode, urljoin, urlsplit

import boto3
import pytest
import requests
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

from local.imapserver import DovecotServer
from local.mailserver import SmtpTestServer
from local.sandbox import Sandbox
from local.stack import Handler, LambdaContext, http_event, http_routes, load_handler
from sendwell.adapters.credentials import CredentialStore
from sendwell.clock import epoch
from sendwell.models import InboxStatus, Models, new_step, new_window
from sendwell.observability import NAMESPACE
from sendwell.services import polling, schedule
from sendwell.services.sending import Outcome
from tests.deployment import EVENTS, deployed, emails_to, emitted, forget_sent_emails
from tests.provider_sandbox import trusting_session
from tests.template import PARAMETERS, PUBLIC_BASE_URL, REGION, TEMPLATE
from tests.unit.test_operations import alarms, dashboard_metrics, watched

GOOGLE_CLIENT_ID = "4242-ops.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "GOCSPX-ops-scenario-client-secret"
ADMIN = PARAMETERS["AdminEmails"]
ANA = "ana.ops@outreach-agency.example"  # a custom SMTP/IMAP inbox
ALICE = "alice.ops@acme-outreach.com"  # a Gmail inbox
OWNER = "dana.ops@client.example"
PASSWORD = "Tr0ub4dor&3 ops"
TYPO = "Tr0ub4dor&3 opz"
NEW_PASSWORD = "correct horse battery staple 42"
LINK_URL = re.compile(re.escape(PUBLIC_BASE_URL) + r"/r/([A-Za-z0-9_-]{43})")
STARTED = datetime.now(UTC)


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str

    def field(self, name: str) -> str:
        found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', self.body)
        assert found, f"no {name} field"
        return found[1]


@dataclass
class Capture:
    """Everything the functions print (Powertools JSON logs and EMF), and every record the root
    logger's handlers see (third-party libraries log there), as the Lambda runtime would keep them."""

    stdout: io.StringIO = field(default_factory=io.StringIO)
    root: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        return [*self.stdout.getvalue().splitlines(), *self.root]

    def emf(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.getvalue().splitlines() if line.startswith('{"_aws"')]

    def logs(self) -> list[dict[str, Any]]:
        documents = (json.loads(line) for line in self.stdout.getvalue().splitlines() if line.startswith("{"))
        return [d for d in documents if "_aws" not in d]


class _RootCapture(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # The fake providers' own servers (aiosmtpd logs as "mail.log") are not sendwell's lines.
        if not record.name.startswith("mail.log"):
            self.lines.append(self.format(record))


@dataclass
class World:
    models: Models
    session: boto3.Session
    env: dict[str, str]
    capture: Capture
    sandbox: Sandbox
    smtp: SmtpTestServer
    dovecot: DovecotServer
    http: requests.Session  # the person's browser to the provider's pages
    handlers: dict[str, Handler] = field(default_factory=dict)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        with contextlib.redirect_stdout(self.capture.stdout):
            if function not in self.handlers:
                self.handlers[function] = load_handler(function, TEMPLATE)
                # A logger configured by an earlier test keeps its old stream, maybe that test's capture,
                # closed by now: point it here too (not with setStream(), which flushes the old one).
                for handler in logging.getLogger("sendwell").handlers:
                    if isinstance(handler, logging.StreamHandler):
                        handler.stream = self.capture.stdout
            context = LambdaContext(function_name=function, aws_request_id=str(uuid.uuid4()))
            return self.handlers[function](event, context)

    def tick(self, function: str, sample: str) -> Any:
        return self.invoke(function, json.loads((EVENTS / sample).read_text()))

    def dispatch(self) -> int:
        """One dispatch tick, through the scheduler and its workers: how many steps are on the send queue."""
        if self.tick("DispatchFunction", "dispatch.json")["inboxes"]:
            assert self.deliver("DispatchQueue", "DispatchWorkerFunction") == []
        attributes = self.session.client("sqs").get_queue_attributes(
            QueueUrl=self.env["SENDWELL_SEND_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def deliver(self, queue: str, function: str) -> list[str]:
        """Hand everything on ``queue`` to ``function`` as one SQS batch; the ids of failed records."""
        sqs = self.session.client("sqs")
        url = self.env[
            {
                "SendQueue": "SENDWELL_SEND_QUEUE_URL",
                "AuthFailureQueue": "SENDWELL_AUTH_FAILURE_QUEUE_URL",
                "ReconnectQueue": "SENDWELL_RECONNECT_QUEUE_URL",
                "DispatchQueue": "SENDWELL_DISPATCH_QUEUE_URL",
                "PollQueue": "SENDWELL_POLL_QUEUE_URL",
            }[queue]
        ]
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        assert received, f"nothing on {queue}"
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{url.rsplit('/', 1)[1]}",
                "awsRegion": REGION,
            }
            for m in received
        ]
        failed = [item["itemIdentifier"] for item in self.invoke(function, {"Records": records})["batchItemFailures"]]
        for message in received:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return failed

    def inbox_status(self, inbox_id: str) -> str:
        return str(self.models.inbox.get(inbox_id, consistent_read=True).status)

    def overdue(self, inbox_id: str, *, attention: timedelta) -> None:
        """Time passes: the inbox's reminder is now this long overdue."""
        table, now = self.models.inbox, epoch(datetime.now(UTC))
        self.models.inbox.get(inbox_id).update(actions=[table.attention_at.set(now - int(attention.total_seconds()))])

    def poll(self, *inbox_ids: str) -> int:
        """Time passes to the inboxes' poll slots: one poll tick, through the scheduler and its
        workers. How many polls failed."""
        table = self.models.inbox
        for _ in range(2):  # a second try when the minute turned between the slots and the tick
            slot = polling.slots_due(datetime.now(UTC))[0]
            for inbox_id in inbox_ids:
                table.get(inbox_id).update(actions=[table.poll_shard.set("0"), table.poll_slot.set(slot)])
            if self.tick("PollFunction", "poll.json")["inboxes"] >= len(inbox_ids):
                break
        seen, sqs, url = len(self.capture.logs()), self.session.client("sqs"), self.env["SENDWELL_POLL_QUEUE_URL"]
        while int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        ):
            assert self.deliver("PollQueue", "PollWorkerFunction") == []
        return sum(int(d.get("failed", 0)) for d in self.capture.logs()[seen:] if d.get("message") == "polled")

    def notices(self, to: str) -> list[str]:
        return [m.body for m in emails_to(to)]


@dataclass
class Browser:
    """One person's browser, minus the browser: cookies kept, each request an API Gateway event."""

    world: World
    cookies: dict[str, str] = field(default_factory=dict)

    def get(self, url: str) -> Page:
        return self._send("GET", url, b"", None)

    def post(self, url: str, form: Mapping[str, str]) -> Page:
        return self._send("POST", url, urlencode(form).encode(), "application/x-www-form-urlencoded")

    def post_json(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        page = self._send("POST", url, json.dumps(body).encode(), "application/json")
        assert page.status == 201, page.body
        loaded: dict[str, Any] = json.loads(page.body)
        return loaded

    def _send(self, method: str, url: str, body: bytes, content_type: str | None) -> Page:
        assert url.startswith(PUBLIC_BASE_URL), url
        split = urlsplit(url)
        route, params = next(
            (r, m.groupdict())
            for r in http_routes(TEMPLATE)
            if r.method == method and (m := r.pattern.match(split.path))
        )
        host = urlsplit(PUBLIC_BASE_URL).netloc
        headers = {"host": host, "user-agent": "Mozilla/5.0 (ops test)"}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if content_type:
            headers["content-type"] = content_type
        target = split.path + (f"?{split.query}" if split.query else "")
        result = self.world.invoke(route.function, http_event(route, method, target, headers, body, params, host))
        for cookie in result.get("cookies") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.cookies[name] = value
                self.world.capture.secrets.add(value)
        headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        page = Page(result["statusCode"], headers, result.get("body") or "")
        if 'name="csrf_token"' in page.body:
            self.world.capture.secrets.add(page.field("csrf_token"))
        return page

    def open_link(self, url: str) -> Page:
        self.world.capture.secrets.add(url.rsplit("/", 1)[1])
        assert self.get(url).status == 303
        landing = self.get(f"{PUBLIC_BASE_URL}/connect")
        assert landing.status == 200, landing.body
        return landing

    def sign_in_with_google(self, landing: Page, account: str) -> Page:
        start = self.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": landing.field("csrf_token")})
        assert start.status == 303, start.body
        consent = self.world.http.get(start.headers["location"], timeout=10)
        action = re.search(r'<form method="post" action="([^"]+)"', consent.text)
        request_id = re.search(r'name="request_id" value="([^"]+)"', consent.text)
        assert action and request_id, consent.text
        answer = self.world.http.post(
            urljoin(consent.url, action[1]),
            data={
                "request_id": request_id[1],
                "account": account,
                "scope": re.findall(r'name="scope" value="([^"]+)"', consent.text),
                "decision": "allow",
            },
            allow_redirects=False,
            timeout=10,
        )
        callback = answer.headers["Location"]
        self.world.capture.secrets.add(parse_qs(urlsplit(callback).query)["code"][0])
        return self.get(callback)


def seed_campaign(models: Models, inbox_id: str, prospects: list[str]) -> None:
    """A two-step campaign, open all week, whose prospects' first step fell due five minutes ago."""
    models.campaign(
        campaign_id=f"cmp_{inbox_id}",
        name="Q4 outreach",
        created_at=STARTED,
        inbox_ids=[inbox_id],
        steps=[
            new_step(
                subject="Quick question, {{ first_name }}",
                text="Hi {{ first_name }}",
                html=None,
                delay_seconds=0,
                new_thread=False,
            ),
            new_step(subject="re", text="Bumping this.", html=None, delay_seconds=3 * 86400, new_thread=False),
        ],
        window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
    ).save()
    for number, email in enumerate(prospects):
        enrollment_id = f"enr_{inbox_id}_{number}"
        models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id=f"cmp_{inbox_id}",
            inbox_id=inbox_id,
            email=email,
            fields={"first_name": email.split(".")[0].title()},
            created_at=STARTED,
            due_inbox=inbox_id,
            due_at=epoch(datetime.now(UTC) - timedelta(minutes=5)) + number,
        ).save()
    schedule.wake(models, inbox_id, at=datetime.now(UTC) - timedelta(minutes=5))  # as an import does


def run_story(world: World) -> None:
    admin = Browser(world)
    capture = world.capture
    inbox = f"{PUBLIC_BASE_URL}/admin/inboxes"
    common = {"owner_email": OWNER, "timezone": "UTC", "min_gap_seconds": 60}
    ana = admin.post_json(
        inbox,
        {
            "provider": "custom",
            "address": ANA,
            "display_name": "Ana from Outreach",
            "smtp_host": world.smtp.host,
            "smtp_port": world.smtp.port,
            "smtp_security": "none",
            "imap_host": world.dovecot.host,
            "imap_port": world.dovecot.port,
            "imap_security": "none",
            **common,
        },
    )["inbox_id"]
    alice = admin.post_json(inbox, {"provider": "gmail", "address": ALICE, "display_name": "Alice", **common})[
        "inbox_id"
    ]
    ana_link = admin.post_json(f"{inbox}/{ana}/links", {"expires_in_days": 3})["url"]
    alice_link = admin.post_json(f"{inbox}/{alice}/links", {"expires_in_days": 3})["url"]

    # Ana mistypes her password once, then connects; Alice signs in with Google.
    browser = Browser(world)
    landing = browser.open_link(ana_link)
    assert (
        browser.post(
            f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": landing.field("csrf_token"), "password": TYPO}
        ).status
        == 422
    )
    done = browser.post(
        f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": landing.field("csrf_token"), "password": PASSWORD}
    )
    assert done.status == 200, done.body
    browser = Browser(world)
    assert browser.sign_in_with_google(browser.open_link(alice_link), ALICE).status == 200
    store = CredentialStore.with_kms(
        world.models, world.session.client("kms"), world.env["SENDWELL_CREDENTIALS_KEY_ID"]
    )
    grant = store.load(world.models.inbox.get(alice))
    capture.secrets |= {grant["access_token"], grant["refresh_token"]}
    # The reconnect worker finishes both (their first poll, then connected).
    assert world.deliver("ReconnectQueue", "ReconnectWorkerFunction") == []
    assert {world.inbox_status(ana), world.inbox_status(alice)} == {InboxStatus.CONNECTED}

    # Each inbox sends its first due step: through the SMTP server and through the Gmail API.
    seed_campaign(world.models, ana, ["jorg.prospect@client-one.example", "kim.prospect@client-two.example"])
    seed_campaign(world.models, alice, ["lee.prospect@client-three.example", "max.prospect@client-four.example"])
    assert world.dispatch() == 2
    assert world.deliver("SendQueue", "SendFunction") == []
    assert len(world.smtp.received) == 1 and len(world.sandbox.sent_messages(ALICE)) == 1

    # Ana changes her mailbox password; Alice's access token expires while Google refuses the app's
    # client once. The next (overdue) poll finds both.
    world.smtp.users[ANA] = NEW_PASSWORD
    world.dovecot.add_user(ANA, NEW_PASSWORD)
    world.sandbox.expire_access_tokens(ALICE)
    world.sandbox.inject_fault(ALICE, "token", "invalid_client", times=1)
    assert world.poll(ana, alice) == 2
    assert world.deliver("AuthFailureQueue", "AuthFailureFunction") == []
    assert (world.inbox_status(ana), world.inbox_status(alice)) == (InboxStatus.DISCONNECTED, InboxStatus.CONNECTED)

    # Then Google revokes Alice's grant: a real disconnect.
    world.sandbox.revoke_google_grant(ALICE)
    assert world.poll(alice) == 1
    assert world.deliver("AuthFailureQueue", "AuthFailureFunction") == []
    assert world.inbox_status(alice) == InboxStatus.DISCONNECTED

    # Dispatch holds the second prospect of each inbox: nothing is sent, nothing is lost.
    assert world.dispatch() == 0

    # A day later SES refuses the reminder (the sending identity was removed, then restored).
    ses = world.session.client("ses")
    ses.delete_identity(Identity=PARAMETERS["SesIdentity"])
    world.overdue(ana, attention=timedelta(minutes=1))
    assert world.tick("RemindersFunction", "reminders.json").get("failed") == 1
    ses.verify_domain_identity(Domain=PARAMETERS["SesIdentity"])

    # Ana reconnects through the link in her disconnect notice, with the new password.
    notice_tokens = {token for body in world.notices(OWNER) + world.notices(ADMIN) for token in LINK_URL.findall(body)}
    capture.secrets |= notice_tokens
    notice = next(body for body in world.notices(OWNER) if ANA in body and LINK_URL.search(body))
    browser = Browser(world)
    landing = browser.open_link(f"{PUBLIC_BASE_URL}/r/{LINK_URL.findall(notice)[0]}")
    done = browser.post(
        f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": landing.field("csrf_token"), "password": NEW_PASSWORD}
    )
    assert done.status == 200, done.body
    assert world.deliver("ReconnectQueue", "ReconnectWorkerFunction") == []
    assert world.inbox_status(ana) == InboxStatus.CONNECTED
    capture.secrets |= {PASSWORD, TYPO, NEW_PASSWORD, GOOGLE_CLIENT_SECRET, ana_link.rsplit("/", 1)[1]}


@pytest.fixture(scope="module")
def story(sandbox: Sandbox, dovecot: DovecotServer) -> Iterator[Capture]:
    capture = Capture()
    sendwell_logger = logging.getLogger("sendwell")
    saved_streams = [(h, h.stream) for h in sendwell_logger.handlers if isinstance(h, logging.StreamHandler)]
    saved_levels = (logging.root.level, sendwell_logger.level)
    root_capture = _RootCapture(capture.root)
    with (
        pytest.MonkeyPatch.context() as env,
        deployed(
            env,
            prefix="ops",
            metrics=True,
            variables={
                "SENDWELL_GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID,
                "SENDWELL_GOOGLE_AUTH_URL": sandbox.google_auth_url,
                "SENDWELL_GOOGLE_TOKEN_URL": sandbox.google_token_url,
                "SENDWELL_GOOGLE_CERTS_URL": sandbox.google_certs_url,
                "SENDWELL_GMAIL_API_URL": sandbox.base_url,
                "SENDWELL_CA_BUNDLE": sandbox.ca_bundle_path,
                # As strict as it gets: every debug line of the functions and of the libraries they use.
                "POWERTOOLS_LOG_LEVEL": "DEBUG",
            },
        ) as aws,
        SmtpTestServer(users={ANA: PASSWORD}, security="plain") as smtp,
        trusting_session(sandbox) as http,
    ):
        aws.client("ssm").put_parameter(
            Name=aws.env["SENDWELL_GOOGLE_CLIENT_SECRET_PARAMETER"], Value=GOOGLE_CLIENT_SECRET, Type="SecureString"
        )
        sandbox.reset()
        sandbox.add_google_account(ALICE, name="Alice Archer")
        sandbox.add_client(
            "google", GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, [f"{PUBLIC_BASE_URL}/oauth/callback/google"]
        )
        dovecot.add_user(ANA, PASSWORD)
        forget_sent_emails()
        DEFAULT_PROVIDERS.clear()  # Powertools' SSM cache outlives a test
        Metrics().clear_metrics()  # and so does its metric set
        world = World(
            models=aws.models,
            session=aws.session,
            env=aws.env,
            capture=capture,
            sandbox=sandbox,
            smtp=smtp,
            dovecot=dovecot,
            http=http,
        )
        # The Lambda runtime's root handler is in place before a function's module is imported.
        logging.root.addHandler(root_capture)
        logging.root.setLevel(logging.DEBUG)
        try:
            run_story(world)
            yield capture
        finally:
            logging.root.removeHandler(root_capture)
            logging.root.setLevel(saved_levels[0])
            sendwell_logger.setLevel(saved_levels[1])
            for handler, stream in saved_streams:
                handler.setStream(stream)
            DEFAULT_PROVIDERS.clear()
            Metrics().clear_metrics()


@pytest.mark.dovecot
def test_every_alarmed_metric_is_emitted_and_every_emitted_metric_is_on_the_dashboard(story: Capture) -> None:
    totals = emitted(story.emf())
    alarmed = {w.metric for w in map(watched, alarms(TEMPLATE).values()) if w.namespace == NAMESPACE}
    assert alarmed == {
        "DispatchLagSeconds",
        "InboxesReady",  # the scheduler reports it every minute: no report means dispatch is down
        "PollLagSeconds",
        "InboxesDisconnected",
        "AppConfigErrors",
        "NoticeFailures",
        "SendsUnconfirmed",
        "FollowUpsHeldForReplies",
        "ReconnectsRequeued",  # every reminders run reports it; the fault harness stages a requeue
        "HardBounces",  # the bounce-rate alarm's numerator; every poll reports it, zero included
        "Complaints",  # the complaint-rate alarm's
        "InboxesPausedForBlocks",
    }
    # SendsUnconfirmed counts a step whose delivery could not be confirmed, which the story does
    # not stage (tests/service/test_fault_causes.py and the fault harness do).
    assert alarmed - {"SendsUnconfirmed"} <= set(totals), alarmed - set(totals)
    on_dashboard = {metric for namespace, metric, _ in dashboard_metrics() if namespace == NAMESPACE}
    assert set(totals) <= on_dashboard, set(totals) - on_dashboard
    # The story's own figures: what ops would read off the dashboard afterwards.
    assert totals["EmailsSent"] == 2 and totals["LinksCreated"] == 2
    assert totals["InboxesDisconnected"] == 2 and totals["AppConfigErrors"] == 1
    assert totals.get("AuthLostFailures", 0) + totals.get("UserActionFailures", 0) == 2
    assert totals["AppConfigFailures"] == 1
    assert totals["DisconnectedBacklogSteps"] == 2 and totals["NoticeFailures"] >= 1
    assert totals["InboxesReconnected"] >= 3 and totals["ReconnectLoginFailed"] == 1
    assert totals["DispatchLagSeconds"] >= 300  # the story's steps were due minutes before the tick


@pytest.mark.dovecot
def test_metrics_carry_the_namespace_and_the_one_dimension_the_alarms_expect(story: Capture) -> None:
    documents = story.emf()
    assert len(documents) >= 10
    for document in documents:
        for definition in document["_aws"]["CloudWatchMetrics"]:
            assert definition["Namespace"] == NAMESPACE and definition["Dimensions"] == [["service"]]
        assert document["service"] == "sendwell"
    assert set(sys.modules["send_app"].OUTCOME_METRICS) == set(Outcome)  # every outcome of a send is counted


_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _with_base64_decoded(line: str) -> str:
    """The line, plus whatever text it carries in base64 (KMS plaintexts travel that way)."""
    decoded = []
    for blob in _BASE64.findall(line):
        with contextlib.suppress(binascii.Error, ValueError):
            decoded.append(base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "ignore"))
    return " ".join([line, *decoded])


def _around(line: str, found: str) -> str:
    """Where a secret was found, with the secret itself cut short: a failure shows the leak, not the secret."""
    start = line.index(found)
    return line[max(0, start - 120) : start] + found[:6] + "…"


def _variants(secret: str) -> set[str]:
    """A secret as it could appear in a line: raw, URL-encoded, or escaped inside JSON."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


@pytest.mark.dovecot
def test_no_log_line_holds_a_secret_the_scenario_used(story: Capture) -> None:
    lines = [_with_base64_decoded(line) for line in story.lines()]
    # The net was cast wide: the functions' own JSON logs and the libraries' debug lines.
    assert len(story.logs()) >= 20 and any(line.startswith("DEBUG botocore") for line in story.root)
    assert any(line.startswith("DEBUG urllib3") for line in story.root)
    assert len(story.secrets) >= 15  # passwords, link tokens, cookies, CSRF tokens, code, tokens, client secret
    leaks = [
        (secret[:6] + "…", _around(line, variant))
        for secret in story.secrets
        for variant in _variants(secret)
        for line in lines
        if len(secret) >= 6 and variant in line
    ]
    assert not leaks, "\n".join(f"{secret}: {line}" for secret, line in leaks)


@pytest.mark.dovecot
def test_logs_are_structured_with_the_ids_ops_search_by(story: Capture) -> None:
    logs = story.logs()
    (sent, *_) = [log for log in logs if log["message"] == "send finished" and log.get("outcome") == "sent"]
    for key in ("inbox_id", "campaign_id", "enrollment_id", "message_id", "function_name", "function_request_id"):
        assert sent.get(key), key
    assert re.fullmatch(r"<sw\.enr_ibx_\w+\.0@[\w.-]+>", sent["message_id"])
    handled = [log for log in logs if log["message"] == "auth failure handled"]
    assert len(handled) == 3 and all(log["inbox_id"].startswith("ibx_") for log in handled)
    (fanned_out, *_) = [log for log in logs if log["message"] == "inboxes fanned out"]
    assert fanned_out["inboxes"] == 2 and fanned_out["function_name"] == "DispatchFunction"
    (dispatched, *_) = [log for log in logs if log["message"] == "dispatched"]
    assert dispatched["enqueued"] >= 1 and dispatched["function_name"] == "DispatchWorkerFunction"
    assert dispatched["lag_seconds"] >= 300
    polled = [log for log in logs if log["message"] == "polled"]
    assert polled and {log["function_name"] for log in polled} == {"PollWorkerFunction"}
