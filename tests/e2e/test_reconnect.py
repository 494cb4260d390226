"""Reconnecting through a link, over HTTP: the real handler on moto, the provider sandbox over HTTPS
(google-auth and msal code paths), a real SMTP server (aiosmtpd) and a real Dovecot.

Requests go to the handler as API Gateway v2 events (the way ``local.stack`` serves them); the
provider's consent page is submitted the way a browser would submit it. The browser itself (Chromium)
walks the same pages in ``test_reconnect_browser.py``.
"""

from __future__ import annotations

import dataclasses
import imaplib
import itertools
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from aws_lambda_powertools.utilities.parameters import base as parameter_providers

from local.imapserver import DovecotServer
from local.mailserver import SmtpTestServer
from local.sandbox import GMAIL_SEND, Sandbox
from local.stack import LambdaContext, Route, http_event, http_routes
from sendwell.adapters.credentials import CredentialStore
from sendwell.failures import Failure, FailureKind, ProviderFailure
from sendwell.ids import step_message_id
from sendwell.models import (
    BacklogMode,
    EnrollmentState,
    Inbox,
    InboxStatus,
    LinkState,
    Models,
    new_window,
)
from sendwell.pacing import InboxUsage, pace_backlog
from sendwell.ports.mailbox import Mailbox
from sendwell.services import activity, attention, catch_up, links, reconnect
from sendwell.services.auth_failures import IncidentContext
from sendwell.services.limits import campaign_window, jitter_for, limits_of
from sendwell.writes import WriteNotDone
from tests.browser import ServerLogs
from tests.deployment import Deployment, add_disconnected_inbox, deployed, emails_to, forget_sent_emails, sent_emails
from tests.faults import aws_faults
from tests.provider_sandbox import sandbox_environment, trusting_session
from tests.template import PARAMETERS, PUBLIC_BASE_URL, TEMPLATE

GOOGLE_CLIENT_ID = "1234567890-reconnect.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-reconnect-secret"
MICROSOFT_CLIENT_ID = "0b6d8c62-7f1e-4d8e-9a43-5c2f1e7d9b10"
MICROSOFT_SECRET = "Qm8~reconnect.secret"
ADMIN = "admin@agency.example"  # the workspace admin (tests.template PARAMETERS)
OWNER = "dana@client.example"
ALICE = "alice@acme-outreach.com"  # the Gmail inbox
MALLORY = "mallory@acme-outreach.com"  # another account at the same provider
BOB = "bob@contoso.com"  # the Microsoft 365 inbox
BERLIN = ZoneInfo("Europe/Berlin")
HEADERS = {
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


# --------------------------------------------------------------------------------------------- helpers


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str
    url: str

    @property
    def location(self) -> str:
        return self.headers["location"]

    def text(self) -> str:
        """The visible words, roughly: tags dropped, whitespace folded."""
        main = self.body.split("<main>", 1)[-1].split("</main>", 1)[0]
        inline = re.sub(r"</?(strong|code|em)>", "", main)
        return " ".join(re.sub(r"<[^>]+>", " ", inline).split())

    def field(self, name: str) -> str:
        found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', self.body)
        assert found, f"no field {name} on {self.url}"
        return found[1]


@dataclass
class Visitor:
    """One person's browser, minus the browser: cookies kept, every request an API Gateway event."""

    handler: Any
    routes: list[Route]
    cookies: dict[str, str] = field(default_factory=dict)
    pages: list[Page] = field(default_factory=list)

    def get(self, url: str) -> Page:
        return self._send("GET", url, b"")

    def post(self, url: str, form: dict[str, str]) -> Page:
        return self._send("POST", url, urlencode(form).encode())

    def _send(self, method: str, url: str, body: bytes) -> Page:
        split = urlsplit(url)
        assert not split.netloc or url.startswith(PUBLIC_BASE_URL), url
        target = split.path + (f"?{split.query}" if split.query else "")
        route, params = next(
            (r, m.groupdict()) for r in self.routes if r.method == method and (m := r.pattern.match(split.path))
        )
        headers = {"host": urlsplit(PUBLIC_BASE_URL).netloc, "user-agent": "Mozilla/5.0 (test)"}
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body:
            headers["content-type"] = "application/x-www-form-urlencoded"
        event = http_event(route, method, target, headers, body, params, headers["host"])
        result = self.handler(
            event, LambdaContext(function_name="ReconnectApiFunction", aws_request_id=str(uuid.uuid4()))
        )
        for cookie in result.get("cookies") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        page = Page(
            status=result["statusCode"],
            headers={k.lower(): v for k, v in (result.get("headers") or {}).items()},
            body=result.get("body") or "",
            url=url,
        )
        self.pages.append(page)
        return page


@dataclass
class World:
    aws: Deployment
    sandbox: Sandbox
    http: requests.Session  # the person's connection to the provider (trusts the sandbox's CA)
    store: CredentialStore

    @property
    def models(self) -> Models:
        return self.aws.models

    def visitor(self) -> Visitor:
        routes = [r for r in http_routes(TEMPLATE) if r.function == "ReconnectApiFunction"]
        return Visitor(self.aws.handler("ReconnectApiFunction"), routes)

    def context(self) -> reconnect.ReconnectContext:
        """The context the handler built at its cold start (its real adapters)."""
        self.aws.handler("ReconnectApiFunction")
        context: reconnect.ReconnectContext = sys.modules["reconnect_api_app"].CONTEXT
        return context

    def worker(self) -> catch_up.CatchUpContext:
        """The reconnect worker's context, as its handler built it at its cold start."""
        self.aws.handler("ReconnectWorkerFunction")
        context: catch_up.CatchUpContext = sys.modules["reconnect_worker_app"].PARTS.context
        return context

    def run_worker(self) -> list[str]:
        """The reconnect worker's real handler on every task queued now; the ids of failed tasks."""
        return self.aws.deliver("ReconnectQueue", "ReconnectWorkerFunction")

    def inbox(self, inbox_id: str) -> Inbox:
        return self.models.inbox.get(inbox_id, consistent_read=True)

    def add_inbox(self, inbox_id: str, provider: str, address: str, **extra: Any) -> Inbox:
        return add_disconnected_inbox(
            self.models,
            inbox_id,
            provider,
            address,
            owner=OWNER,
            attention_shard="1",
            follow_ups=["Bumping this.", "Last note."],
            **extra,
        )

    def link(self, inbox_id: str, *, created_by: str = ADMIN, **options: Any) -> str:
        issued = links.create_link(
            self.models, inbox_id=inbox_id, created_by=created_by, now=datetime.now(UTC), **options
        )
        return f"{PUBLIC_BASE_URL}/r/{issued.token}"

    def consent(
        self, auth_url: str, *, account: str, drop_scopes: tuple[str, ...] = (), decision: str = "allow"
    ) -> str:
        """Choose ``account`` and answer the consent page; the URL the provider sends the browser back to."""
        page = self.http.get(auth_url, timeout=10)
        assert page.status_code == 200, page.text
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        request_id = re.search(r'name="request_id" value="([^"]+)"', page.text)
        assert action and request_id
        scopes = [s for s in re.findall(r'name="scope" value="([^"]+)"', page.text) if s not in drop_scopes]
        form = {"request_id": request_id[1], "account": account, "scope": scopes, "decision": decision}
        answer = self.http.post(urljoin(page.url, action[1]), data=form, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        location: str = answer.headers["Location"]
        return location

    def sign_in(self, visitor: Visitor, link_url: str, *, account: str, **consent: Any) -> Page:
        """Open the link, press the one button, answer the provider: the page the person ends on."""
        assert visitor.get(link_url).status == 303
        landing = visitor.get(f"{PUBLIC_BASE_URL}/connect")
        assert landing.status == 200, landing.text()
        start = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": landing.field("csrf_token")})
        assert start.status == 303, start.text()
        return visitor.get(self.consent(start.location, account=account, **consent))


@pytest.fixture(scope="module")
def deployment(sandbox: Sandbox) -> Iterator[Deployment]:
    """One deployment on moto for the module (as ``tests.deployment.aws`` builds it, pointed at the
    sandbox); each test works on inboxes of its own, and ``world`` empties the tables after it."""
    environment = sandbox_environment(
        sandbox, google_client_id=GOOGLE_CLIENT_ID, microsoft_client_id=MICROSOFT_CLIENT_ID
    )
    with (
        pytest.MonkeyPatch.context() as env,
        deployed(env, functions=["ReconnectApiFunction"], variables=environment) as deployment,
    ):
        ssm = deployment.client("ssm")
        ssm.put_parameter(
            Name=deployment.env["SENDWELL_GOOGLE_CLIENT_SECRET_PARAMETER"], Value=GOOGLE_SECRET, Type="SecureString"
        )
        ssm.put_parameter(
            Name=deployment.env["SENDWELL_MICROSOFT_CLIENT_SECRET_PARAMETER"],
            Value=MICROSOFT_SECRET,
            Type="SecureString",
        )
        # Powertools keeps one SSM client (and its cache) per process: start from a clean one.
        parameter_providers.DEFAULT_PROVIDERS.clear()
        yield deployment
        parameter_providers.DEFAULT_PROVIDERS.clear()


@pytest.fixture
def world(deployment: Deployment, sandbox: Sandbox) -> Iterator[World]:
    sandbox.reset()
    sandbox.add_google_account(ALICE, name="Alice Archer")
    sandbox.add_google_account(MALLORY, name="Mallory")
    sandbox.add_microsoft_account(BOB, name="Bob Brown")
    sandbox.add_client("google", GOOGLE_CLIENT_ID, GOOGLE_SECRET, [f"{PUBLIC_BASE_URL}/oauth/callback/google"])
    sandbox.add_client(
        "microsoft", MICROSOFT_CLIENT_ID, MICROSOFT_SECRET, [f"{PUBLIC_BASE_URL}/oauth/callback/microsoft"]
    )
    forget_sent_emails()
    models = deployment.models
    with trusting_session(sandbox) as http:
        store = CredentialStore.with_kms(models, deployment.client("kms"), deployment.settings.credentials_key_id)
        yield World(deployment, sandbox, http, store)
    for model in (
        models.inbox,
        models.credentials,
        models.campaign,
        models.enrollment,
        models.link,
        models.session,
        models.activity,
    ):
        with model.batch_write() as batch:
            for item in model.scan():
                batch.delete(item)


def google_inbox(world: World, inbox_id: str = "ibx_gmail") -> Inbox:
    """A Gmail inbox connected once as Alice (identity recorded), now disconnected."""
    alice = world.sandbox.add_google_account(ALICE, name="Alice Archer")
    old = {"refresh_token": "1//0-revoked", "access_token": "ya29.old", "expires_at": 0, "scopes": []}
    inbox = world.add_inbox(
        inbox_id,
        "gmail",
        ALICE,
        identity_issuer="https://accounts.google.com",
        identity_subject=alice.sub,
        credentials_version=3,
    )
    world.store.seed(inbox, old)
    return inbox


def assert_secure(page: Page) -> None:
    for name, value in HEADERS.items():
        assert page.headers.get(name) == value, (page.url, name)
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "form-action 'self' " in csp


# ------------------------------------------------------------------------------------------- the flow


def test_google_reconnect_proves_the_mailbox_stores_the_grant_and_tells_everyone(
    world: World, server_logs: ServerLogs
) -> None:
    google_inbox(world)
    older = world.link("ibx_gmail")
    link = world.link("ibx_gmail")
    visitor = world.visitor()

    opened = visitor.get(link)
    assert opened.status == 303 and opened.location == f"{PUBLIC_BASE_URL}/connect"
    set_cookie = next(iter(visitor.cookies))
    assert set_cookie == "__Host-sendwell-session"
    landing = visitor.get(f"{PUBLIC_BASE_URL}/connect")
    assert "Reconnect alice@acme-outreach.com" in landing.text()
    assert "Acme Outreach" in landing.text() and "(Google)" in landing.text()
    assert "The password was changed or access was revoked." in landing.text()
    assert 'action="/connect/oauth"' in landing.body and "Continue with Google" in landing.body

    start = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": landing.field("csrf_token")})
    auth = parse_qs(urlsplit(start.location).query)
    assert start.location.startswith(world.sandbox.google_auth_url)
    assert auth["code_challenge_method"] == ["S256"] and len(auth["code_challenge"][0]) == 43
    assert auth["access_type"] == ["offline"] and auth["prompt"] == ["consent"] and auth["login_hint"] == [ALICE]
    assert set(auth["scope"][0].split()) == {
        "openid",
        "email",
        "https://www.googleapis.com/auth/gmail.send",
        "https://www.googleapis.com/auth/gmail.readonly",
    }
    session = next(iter(world.models.session.scan()))
    assert session.oauth_state == auth["state"][0]  # bound to this session, server side

    done = visitor.get(world.consent(start.location, account=ALICE))
    assert done.status == 200, done.text()
    assert "alice@acme-outreach.com is connected" in done.text()
    # The page answers before the catch-up, and says what happens next.
    assert "What happens next" in done.text() and "nobody who replied gets a follow-up" in done.text()
    assert "spread over its sending hours" in done.text()
    assert "__Host-sendwell-session" not in visitor.cookies  # the session cookie is cleared
    # ... and the session can start nothing more: a second submit or a reload shows this success.
    assert [s.finished_at is not None for s in world.models.session.scan()] == [True]
    waiting = world.inbox("ibx_gmail")
    assert waiting.status == InboxStatus.RECONNECTING and waiting.reconnect_link  # dispatch skips it
    assert emails_to(ADMIN) == []

    assert world.run_worker() == []
    inbox = world.inbox("ibx_gmail")
    assert inbox.status == InboxStatus.CONNECTED and not inbox.paused
    assert inbox.status_reason is None and inbox.failed_at is None
    assert inbox.incident_id is None and inbox.reminders_sent == 0  # reminders stop
    assert inbox.reconnect_link is None and inbox.reconnect_outcome is None  # nothing left to finish
    assert inbox.poll_shard is not None and inbox.last_polled_at is not None  # caught up, polled again
    assert inbox.credentials_version == 4
    stored = world.store.load(inbox)
    assert stored["refresh_token"].startswith("1//0") and stored["refresh_token"] != "1//0-revoked"
    assert GMAIL_SEND in stored["scopes"] and stored["expires_at"] > time.time()
    campaign = world.models.campaign.get("cmp_ibx_gmail")
    assert not campaign.disconnected_inbox_ids
    assert {link.state for link in links.list_links(world.models, "ibx_gmail")} == {LinkState.USED, LinkState.REVOKED}
    assert links.token_hash(older.rsplit("/", 1)[1]) in {
        lk.token_hash for lk in links.list_links(world.models, "ibx_gmail") if lk.state == LinkState.REVOKED
    }

    (to_admin,) = emails_to(ADMIN)
    assert to_admin.subject == f"{ALICE} is reconnected"
    (to_owner,) = emails_to(OWNER)
    assert to_owner.subject == f"Thanks: {ALICE} is connected again"
    kinds = [e.kind for e in activity.recent(world.models, activity.inbox_key("ibx_gmail"))]
    assert kinds[:2] == ["inbox.reconnected", "inbox.reconnecting"]
    assert [e.kind for e in activity.recent(world.models, activity.campaign_key("cmp_ibx_gmail"))] == [
        "campaign.resumed"
    ]

    token = link.rsplit("/", 1)[1]
    for page in visitor.pages:
        assert_secure(page)
        assert token not in page.body and token not in page.headers.get("location", "")
    logs = server_logs.text()
    assert "reconnect link opened" in logs and "inbox reconnected" in logs  # the handlers' lines are here
    assert token not in logs


def test_microsoft_reconnect_with_msal_records_tenant_and_object_id_on_first_sign_in(world: World) -> None:
    bob = world.sandbox.add_microsoft_account(BOB, name="Bob Brown")
    world.add_inbox("ibx_m365", "outlook", BOB, status=InboxStatus.PENDING.value, failed_at=None)
    visitor = world.visitor()
    link = world.link("ibx_m365")
    visitor.get(link)
    landing = visitor.get(f"{PUBLIC_BASE_URL}/connect")
    assert "Connect bob@contoso.com" in landing.text() and "Sign in with Microsoft" in landing.body

    done = world.sign_in(world.visitor(), link, account=BOB)
    assert done.status == 200 and "bob@contoso.com is connected" in done.text()
    assert world.run_worker() == []
    inbox = world.inbox("ibx_m365")
    assert inbox.status == InboxStatus.CONNECTED
    assert (inbox.identity_issuer, inbox.identity_subject) == (bob.tid, bob.oid)
    stored = world.store.load(inbox)
    assert {"Mail.Send", "Mail.Read"} <= set(stored["scopes"]) and stored["refresh_token"].startswith("0.A")
    assert [m.subject for m in emails_to(ADMIN)] == [f"{BOB} is reconnected"]


def test_a_failing_mail_service_leaves_the_inbox_connected_and_the_notices_go_out_on_the_retry(
    world: World, deployment: Deployment
) -> None:
    google_inbox(world)
    ses = deployment.client("ses")
    ses.delete_identity(Identity=PARAMETERS["SesIdentity"])  # SES now refuses every notice
    try:
        page = world.sign_in(world.visitor(), world.link("ibx_gmail"), account=ALICE)
        assert page.status == 200 and f"{ALICE} is connected" in page.text()
        assert len(world.run_worker()) == 1  # the task fails: SQS delivers it again
        assert world.inbox("ibx_gmail").status == InboxStatus.CONNECTED  # the inbox doesn't wait for SES
        assert world.inbox("ibx_gmail").reconnect_link is not None and sent_emails() == []
    finally:
        ses.verify_domain_identity(Domain=PARAMETERS["SesIdentity"])
    assert world.run_worker() == []
    assert [m.subject for m in emails_to(ADMIN)] == [f"{ALICE} is reconnected"]
    assert len(emails_to(OWNER)) == 1 and world.inbox("ibx_gmail").reconnect_link is None
    assert world.run_worker() == []  # nothing left


def test_a_different_account_gets_the_mismatch_page_and_nothing_changes(world: World) -> None:
    before = google_inbox(world)
    sealed = bytes(world.models.credentials.get("ibx_gmail", consistent_read=True).ciphertext)
    link = world.link("ibx_gmail")
    page = world.sign_in(world.visitor(), link, account=MALLORY)

    assert page.status == 403
    assert f"You signed in as {MALLORY}; this link is for {ALICE}." in page.text()
    after = world.inbox("ibx_gmail")
    assert after.status == InboxStatus.DISCONNECTED
    assert bytes(world.models.credentials.get("ibx_gmail", consistent_read=True).ciphertext) == sealed
    assert after.credentials_version == before.credentials_version
    assert after.identity_subject == before.identity_subject
    assert links.verify(world.models, link.rsplit("/", 1)[1], now=datetime.now(UTC))  # still usable
    (entry,) = [e for e in activity.recent(world.models, activity.inbox_key("ibx_gmail")) if "mismatch" in e.kind]
    assert MALLORY in entry.message and entry.details["signed_in"] == MALLORY
    assert sent_emails() == []

    # The same link then works for the right account.
    assert world.sign_in(world.visitor(), link, account=ALICE).status == 200


def test_the_same_address_on_another_account_is_refused(world: World) -> None:
    google_inbox(world)
    world.sandbox.add_google_account(ALICE, sub="109999999999999999999")  # deleted and created again
    page = world.sign_in(world.visitor(), world.link("ibx_gmail"), account=ALICE)
    assert page.status == 403 and "not the same account" in page.text()
    assert world.inbox("ibx_gmail").status == InboxStatus.DISCONNECTED


def test_consent_without_the_send_scope_says_so_and_the_link_stays_usable(world: World) -> None:
    google_inbox(world)
    link = world.link("ibx_gmail")
    page = world.sign_in(world.visitor(), link, account=ALICE, drop_scopes=(GMAIL_SEND,))

    assert page.status == 403
    assert "Without permission to send email" in page.text() and 'href="/connect"' in page.body
    assert world.inbox("ibx_gmail").status == InboxStatus.DISCONNECTED
    assert world.inbox("ibx_gmail").credentials_version == 3
    assert world.sign_in(world.visitor(), link, account=ALICE).status == 200


def test_declining_consent_changes_nothing(world: World) -> None:
    google_inbox(world)
    link = world.link("ibx_gmail")
    page = world.sign_in(world.visitor(), link, account=ALICE, decision="deny")
    assert page.status == 200 and "You didn't allow access" in page.text()
    assert world.inbox("ibx_gmail").status == InboxStatus.DISCONNECTED
    assert links.verify(world.models, link.rsplit("/", 1)[1], now=datetime.now(UTC)).state == LinkState.ACTIVE


@dataclass(frozen=True)
class TimingOut:
    """A provider that stopped answering right after the sign-in: the catch-up poll can't run."""

    def open(self, inbox: Inbox) -> Mailbox:
        raise ProviderFailure(Failure(FailureKind.TRANSIENT, "timeout", "the provider did not answer in time"))


def test_when_the_catch_up_poll_fails_sending_stays_held(world: World) -> None:
    google_inbox(world)
    now = datetime.now(UTC)
    due = int(now.timestamp()) - 600
    world.models.enrollment(
        enrollment_id="enr_waiting",
        campaign_id="cmp_ibx_gmail",
        inbox_id="ibx_gmail",
        email="lead@prospects.example",
        created_at=now,
        step_index=1,
        due_inbox="ibx_gmail",
        due_at=due,
    ).save()
    ctx = world.context()
    opened, _ = reconnect.open_link(ctx, world.link("ibx_gmail").rsplit("/", 1)[1], now=now)
    csrf = reconnect.load_visit(ctx, opened.cookie, now=now).session.csrf_token
    sign_in = reconnect.start_authorization(ctx, opened.cookie, csrf, now=now)
    answer = {k: v[0] for k, v in parse_qs(urlsplit(world.consent(sign_in, account=ALICE)).query).items()}
    started = reconnect.finish_authorization(ctx, opened.cookie, "google", answer, now=now)
    worker = world.worker()
    worker = dataclasses.replace(worker, poll=dataclasses.replace(worker.poll, mailboxes=TimingOut()))
    result = catch_up.finish_reconnect(worker, started.task, now=now)
    assert result is not None

    assert result.catch_up_failed and result.backlog.held
    assert "could not be checked yet" in result.catch_up_summary()
    stored = world.inbox("ibx_gmail")
    assert stored.status == InboxStatus.CONNECTED and stored.paused  # signed in, but nothing goes out
    assert world.store.load(stored)["refresh_token"] != "1//0-revoked"
    assert world.models.enrollment.get("enr_waiting").due_at == due  # not re-timed: held as it was
    assert [e.kind for e in activity.recent(world.models, activity.campaign_key("cmp_ibx_gmail"))] == ["campaign.held"]


def test_a_link_for_a_connected_inbox_renews_its_sign_in_without_pausing_it(world: World) -> None:
    bob = world.sandbox.add_microsoft_account(BOB, name="Bob Brown")
    world.add_inbox(
        "ibx_m365",
        "outlook",
        BOB,
        status=InboxStatus.CONNECTED.value,
        status_reason=None,
        failed_at=None,
        identity_issuer=bob.tid,
        identity_subject=bob.oid,
        poll_shard="0",
        poll_slot=0,
    )
    visitor = world.visitor()
    link = world.link("ibx_m365")
    visitor.get(link)
    assert "signing in again renews" in visitor.get(f"{PUBLIC_BASE_URL}/connect").text()
    page = world.sign_in(world.visitor(), link, account=BOB)
    assert page.status == 200 and "new sign-in replaces the old one" in page.text()
    assert world.inbox("ibx_m365").status == InboxStatus.CONNECTED  # it never stops sending
    assert world.run_worker() == []
    assert [m.subject for m in emails_to(ADMIN)] == [f"{BOB} is reconnected"]
    inbox = world.inbox("ibx_m365")
    assert inbox.status == InboxStatus.CONNECTED and inbox.last_polled_at is None  # no catch-up needed
    assert world.store.load(inbox)["refresh_token"].startswith("0.A")


# ----------------------------------------------------------------------------------------- bad input


def test_expired_used_revoked_tampered_and_unknown_links_each_get_their_page(world: World) -> None:
    google_inbox(world)
    visitor = world.visitor()
    expired = links.create_link(
        world.models,
        inbox_id="ibx_gmail",
        created_by=ADMIN,
        now=datetime.now(UTC) - timedelta(hours=2),
        lifetime=timedelta(hours=1),
    )
    used = world.link("ibx_gmail")
    links.consume(
        world.models, links.verify(world.models, used.rsplit("/", 1)[1], now=datetime.now(UTC)), now=datetime.now(UTC)
    )
    revoked = links.create_link(world.models, inbox_id="ibx_gmail", created_by=ADMIN, now=datetime.now(UTC))
    links.revoke(world.models, revoked.link.link_id, inbox_id="ibx_gmail")
    good = world.link("ibx_gmail")
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")

    pages = {
        "expired": visitor.get(f"{PUBLIC_BASE_URL}/r/{expired.token}"),
        "used": visitor.get(used),
        "revoked": visitor.get(f"{PUBLIC_BASE_URL}/r/{revoked.token}"),
        "tampered": visitor.get(tampered),
        "unknown": visitor.get(f"{PUBLIC_BASE_URL}/r/{'x' * 43}"),
        "malformed": visitor.get(f"{PUBLIC_BASE_URL}/r/short"),
    }
    assert (pages["expired"].status, pages["used"].status) == (410, 410)
    assert "This link has expired" in pages["expired"].text()
    assert "This link has already been used" in pages["used"].text()
    invalid = {name: (p.status, p.body) for name, p in pages.items() if name not in ("expired", "used")}
    assert len(set(invalid.values())) == 1  # unknown, revoked, tampered, malformed: one answer
    assert next(iter(invalid.values()))[0] == 404
    for page in pages.values():
        assert_secure(page)
        assert ALICE not in page.body and "Sales desk" not in page.body  # nothing about the inbox
    assert visitor.cookies == {}
    assert world.inbox("ibx_gmail").status == InboxStatus.DISCONNECTED
    assert list(world.models.session.scan()) == []


def test_no_session_a_wrong_csrf_token_or_state_and_a_replayed_callback_are_refused(world: World) -> None:
    google_inbox(world)
    link = world.link("ibx_gmail")
    stranger = world.visitor()
    assert stranger.get(f"{PUBLIC_BASE_URL}/connect").status == 400  # no cookie
    visitor = world.visitor()
    visitor.get(link)
    landing = visitor.get(f"{PUBLIC_BASE_URL}/connect")
    forged = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": "forged"})
    assert forged.status == 400 and "couldn't be checked" in forged.text()

    start = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": landing.field("csrf_token")})
    callback = world.consent(start.location, account=ALICE)
    wrong_state = re.sub(r"state=[^&]+", "state=not-the-state", callback)
    assert visitor.get(wrong_state).status == 400
    # Another person's browser with the right URL has no session to match it.
    assert stranger.get(callback).status == 400
    assert world.inbox("ibx_gmail").status == InboxStatus.DISCONNECTED

    assert visitor.get(callback).status == 200  # the right browser, once
    visitor.cookies = {"__Host-sendwell-session": "replayed"}
    replay = visitor.get(callback)
    assert replay.status == 400 and "Open the reconnect link" in replay.text()


def test_a_replayed_code_with_a_fresh_state_is_refused_by_the_provider(world: World) -> None:
    google_inbox(world)
    link = world.link("ibx_gmail")
    visitor = world.visitor()
    visitor.get(link)
    csrf = visitor.get(f"{PUBLIC_BASE_URL}/connect").field("csrf_token")
    first = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": csrf})
    code = parse_qs(urlsplit(world.consent(first.location, account=ALICE)).query)["code"][0]
    world.http.post(  # someone redeems the code first (it leaked from a log, say)
        world.sandbox.google_token_url,
        data={"grant_type": "authorization_code", "code": code, "client_id": GOOGLE_CLIENT_ID},
        timeout=10,
    )
    second = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": csrf})
    state = parse_qs(urlsplit(second.location).query)["state"][0]
    page = visitor.get(f"{PUBLIC_BASE_URL}/oauth/callback/google?{urlencode({'code': code, 'state': state})}")
    assert page.status == 502 and "invalid_grant" in page.text()  # the PKCE verifier doesn't match
    assert world.inbox("ibx_gmail").status == InboxStatus.DISCONNECTED


def test_a_callback_for_the_other_provider_is_refused(world: World) -> None:
    google_inbox(world)
    visitor = world.visitor()
    visitor.get(world.link("ibx_gmail"))
    csrf = visitor.get(f"{PUBLIC_BASE_URL}/connect").field("csrf_token")
    start = visitor.post(f"{PUBLIC_BASE_URL}/connect/oauth", {"csrf_token": csrf})
    state = parse_qs(urlsplit(start.location).query)["state"][0]
    page = visitor.get(f"{PUBLIC_BASE_URL}/oauth/callback/microsoft?code=x&state={state}")
    assert page.status == 400
    assert next(iter(world.models.session.scan())).oauth_state == state  # the pending sign-in is untouched


# ------------------------------------------------------------------------------- custom SMTP + IMAP


NEW_PASSWORD = "n3w-Passw0rd-after-reset"


@pytest.fixture
def custom_inbox(world: World, smtp_server: SmtpTestServer, dovecot: DovecotServer) -> Inbox:
    """A custom inbox whose password was changed at the provider: SMTP and IMAP both refuse the old one.

    Each test has its own mailbox on the shared Dovecot (a new user is instant; a changed one isn't).
    """
    address = f"ana.{uuid.uuid4().hex[:8]}@sendwell-test.example.com"
    smtp_server.users = {address: NEW_PASSWORD}
    dovecot.add_user(address, NEW_PASSWORD)
    inbox = world.add_inbox(
        "ibx_custom",
        "custom",
        address,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        imap_host=dovecot.host,
        imap_port=dovecot.port,
        imap_security="none",
        username=address,
        credentials_version=1,
    )
    world.store.seed(inbox, {"password": "old-password"})
    return inbox


def failed_parts(page: Page) -> list[tuple[str, str]]:
    return re.findall(r"(SMTP|IMAP) (authentication|connection) failed", page.text())


@pytest.mark.dovecot
def test_a_double_submit_of_the_password_form_shows_success_both_times(
    world: World, custom_inbox: Inbox, smtp_server: SmtpTestServer, dovecot: DovecotServer
) -> None:
    """Before: the second submit of the same form (a double click, the back button) got an
    error page although the inbox was connected."""
    visitor = world.visitor()
    visitor.get(world.link("ibx_custom"))
    csrf = visitor.get(f"{PUBLIC_BASE_URL}/connect").field("csrf_token")
    cookies = dict(visitor.cookies)
    first = visitor.post(f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": csrf, "password": NEW_PASSWORD})
    visitor.cookies = cookies  # the second click was sent with the same cookie
    second = visitor.post(f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": csrf, "password": NEW_PASSWORD})
    assert first.status == second.status == 200, second.text()
    assert "is connected" in first.text() and "is connected" in second.text()
    assert world.run_worker() == []
    assert world.inbox("ibx_custom").status == InboxStatus.CONNECTED
    assert len(emails_to(ADMIN)) == 1  # one reconnect, one notice


@pytest.mark.dovecot
def test_two_links_finished_at_once_both_show_success_and_one_reconnect_is_told(
    world: World,
    custom_inbox: Inbox,
    smtp_server: SmtpTestServer,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: both reconnects stored their credentials, the one that came second to mark the inbox
    connected failed its condition, and its owner got an error page. Now both pages answer once the
    sign-in is stored; the later reconnect replaces the earlier one, and only it is finished and told."""
    now = datetime.now(UTC)
    ctx = world.context()
    sessions = []
    for _ in range(2):  # two links: the admin's and the one in the notice, say
        opened, _ = reconnect.open_link(ctx, world.link("ibx_custom").rsplit("/", 1)[1], now=now)
        sessions.append((opened.cookie, reconnect.load_visit(ctx, opened.cookie, now=now).session.csrf_token))
    store = reconnect._store_credentials
    started: list[reconnect.ReconnectStarted] = []

    def first_finishes_meanwhile(*args: Any, **kwargs: Any) -> None:
        # While the second reconnect stores its sign-in, the first one runs from start to end.
        monkeypatch.setattr(reconnect, "_store_credentials", store)
        started.append(reconnect.submit_password(ctx, *sessions[0], NEW_PASSWORD, now=now))
        store(*args, **kwargs)

    monkeypatch.setattr(reconnect, "_store_credentials", first_finishes_meanwhile)
    started.append(reconnect.submit_password(ctx, *sessions[1], NEW_PASSWORD, now=now))
    assert [s.inbox.inbox_id for s in started] == ["ibx_custom", "ibx_custom"]
    worker = world.worker()
    assert catch_up.finish_reconnect(worker, started[0].task, now=now) is None  # replaced by the second
    assert catch_up.finish_reconnect(worker, started[1].task, now=now) is not None
    assert world.inbox("ibx_custom").status == InboxStatus.CONNECTED
    assert catch_up.finish_reconnect(worker, started[1].task, now=now) is None  # done: a redelivery does nothing
    assert [m.subject for m in emails_to(ADMIN)] == [f"{custom_inbox.address} is reconnected"]


@pytest.mark.dovecot
def test_a_credentials_write_that_keeps_failing_does_not_burn_the_link(world: World, custom_inbox: Inbox) -> None:
    """Before: the link was consumed, the credentials write was throttled and read as "someone
    else changed it", the inbox stayed disconnected and the link was spent."""
    now = datetime.now(UTC)
    ctx = world.context()
    opened, _ = reconnect.open_link(ctx, world.link("ibx_custom").rsplit("/", 1)[1], now=now)
    csrf = reconnect.load_visit(ctx, opened.cookie, now=now).session.csrf_token

    def credentials_write(service: str, operation: str, params: dict[str, Any]) -> bool:
        return operation == "TransactWriteItems"

    with aws_faults() as faults, faults.failing(credentials_write), pytest.raises(WriteNotDone):
        reconnect.submit_password(ctx, opened.cookie, csrf, NEW_PASSWORD, now=now)
    assert world.inbox("ibx_custom").status == InboxStatus.DISCONNECTED
    # The owner submits again: the link, used by this very session, lets it finish.
    started = reconnect.submit_password(ctx, opened.cookie, csrf, NEW_PASSWORD, now=now)
    assert world.inbox("ibx_custom").status == InboxStatus.RECONNECTING
    assert catch_up.finish_reconnect(world.worker(), started.task, now=now) is not None
    assert world.inbox("ibx_custom").status == InboxStatus.CONNECTED


@pytest.mark.dovecot
def test_custom_inbox_password_is_verified_live_and_a_failure_names_the_part(
    world: World, custom_inbox: Inbox, smtp_server: SmtpTestServer
) -> None:
    address = custom_inbox.address
    visitor = world.visitor()
    visitor.get(world.link("ibx_custom"))
    landing = visitor.get(f"{PUBLIC_BASE_URL}/connect")
    assert 'type="password"' in landing.body and f'value="{address}"' in landing.body
    csrf = landing.field("csrf_token")

    def submit(password: str) -> Page:
        return visitor.post(f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": csrf, "password": password})

    wrong = submit("guess")
    assert wrong.status == 422
    assert failed_parts(wrong) == [("SMTP", "authentication"), ("IMAP", "authentication")]
    assert f"{smtp_server.host}:{smtp_server.port}" in wrong.text()
    assert world.store.load(world.inbox("ibx_custom")) == {"password": "old-password"}

    smtp_server.users[address] = "only-smtp-has-this"  # the two servers disagree
    assert failed_parts(submit("only-smtp-has-this")) == [("IMAP", "authentication")]
    smtp_server.users[address] = NEW_PASSWORD

    table = world.models.inbox
    world.inbox("ibx_custom").update(actions=[table.smtp_port.set(closed_port())])  # nothing listens there
    down = submit(NEW_PASSWORD)
    assert down.status == 422 and failed_parts(down) == [("SMTP", "connection")]
    assert "usually temporary" in down.text()
    world.inbox("ibx_custom").update(actions=[table.smtp_port.set(smtp_server.port)])

    forged = visitor.post(f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": "x", "password": NEW_PASSWORD})
    assert forged.status == 400
    assert world.inbox("ibx_custom").status == InboxStatus.DISCONNECTED
    assert world.store.load(world.inbox("ibx_custom")) == {"password": "old-password"}

    done = submit(NEW_PASSWORD)
    assert done.status == 200, done.text()
    assert world.run_worker() == []
    inbox = world.inbox("ibx_custom")
    assert inbox.status == InboxStatus.CONNECTED
    assert world.store.load(inbox) == {"password": NEW_PASSWORD}
    assert (inbox.smtp_host, inbox.smtp_port, inbox.imap_host, inbox.imap_port, inbox.username) == (
        custom_inbox.smtp_host,
        custom_inbox.smtp_port,
        custom_inbox.imap_host,
        custom_inbox.imap_port,
        custom_inbox.username,
    )
    entries = activity.recent(world.models, activity.inbox_key("ibx_custom"))
    failures = [e for e in entries if e.kind == "inbox.reconnect_failed"]
    assert len(failures) == 3 and all(NEW_PASSWORD not in e.message and "guess" not in e.message for e in failures)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _reply(to: str, in_reply_to: str, *, at: datetime) -> bytes:
    message = EmailMessage()
    message["From"], message["To"] = "Priya Raman <priya@northwind.example>", to
    message["Subject"] = "Re: Quick question"
    message["Date"] = at.strftime("%a, %d %b %Y %H:%M:%S +0000")
    message["Message-ID"] = f"<{uuid.uuid4().hex}@northwind.example>"
    message["In-Reply-To"] = message["References"] = in_reply_to
    message.set_content("Thanks, not right now. Please take me off your list.\n\nPriya\n")
    return message.as_bytes()


@pytest.mark.dovecot
def test_a_reply_received_while_disconnected_stops_its_follow_up_and_the_backlog_is_paced_within_the_cap(
    world: World, custom_inbox: Inbox, dovecot: DovecotServer
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    inbox = world.inbox("ibx_custom")
    inbox.update(
        actions=[
            world.models.inbox.daily_cap.set(3),
            world.models.inbox.min_gap_seconds.set(300),
            world.models.inbox.jitter_seconds.set(120),
        ]
    )
    campaign = world.models.campaign.get("cmp_ibx_custom")
    campaign.update(
        actions=[
            world.models.campaign.window.set(
                new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="Europe/Berlin")
            )
        ]
    )
    overdue = int((now - timedelta(days=1)).timestamp())

    def enroll(enrollment_id: str, email: str, step: int, due: int) -> None:
        world.models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id="cmp_ibx_custom",
            inbox_id="ibx_custom",
            email=email,
            fields={"first_name": email.split("@")[0].title()},
            created_at=now - timedelta(days=10),
            step_index=step,
            due_inbox="ibx_custom",
            due_at=due,
        ).save()

    enroll("enr_priya", "priya@northwind.example", 1, overdue)
    for n in range(6):
        enroll(f"enr_{n}", f"lead{n}@prospects.example", n % 2, overdue - n * 60)
    enroll("enr_late", "late@prospects.example", 1, int((now - timedelta(days=15)).timestamp()))
    enroll("enr_later", "later@prospects.example", 1, int((now - timedelta(days=30)).timestamp()))
    enroll("enr_future", "future@prospects.example", 0, int((now + timedelta(days=2)).timestamp()))
    # Priya replied to step 1 while the inbox was disconnected.
    address = custom_inbox.address
    client = dovecot.connect(address)
    # Sent while the inbox was down. (Dated at build time, it fell a second after ``now`` when the
    # clock turned in between, and its log entry came out newer than the resume's.)
    reply = _reply(address, step_message_id("enr_priya", 0, address), at=now - timedelta(hours=2))
    client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), reply)
    client.logout()

    ctx = world.context()
    opened, _ = reconnect.open_link(ctx, world.link("ibx_custom").rsplit("/", 1)[1], now=now)
    visit = reconnect.load_visit(ctx, opened.cookie, now=now)
    started = reconnect.submit_password(ctx, opened.cookie, visit.session.csrf_token, NEW_PASSWORD, now=now)
    assert world.models.enrollment.get("enr_priya").state == EnrollmentState.ACTIVE  # not read yet
    result = catch_up.finish_reconnect(world.worker(), started.task, now=now)

    assert result is not None and result.caught_up is not None and result.caught_up.failure is None
    assert result.caught_up.replies == 1
    priya = world.models.enrollment.get("enr_priya")
    assert priya.state == EnrollmentState.REPLIED and priya.due_at is None  # no follow-up for Priya
    # Follow-up 2 of "late" was 15 days late: skipped; its follow-up 3 is on time and joins the backlog.
    late = world.models.enrollment.get("enr_late")
    assert late.state == EnrollmentState.ACTIVE and late.step_index == 2
    later = world.models.enrollment.get("enr_later")  # 30 days: every follow-up is too late
    assert later.state == EnrollmentState.FINISHED and later.due_at is None and later.step_index == 3
    assert result.backlog.late_skipped == 2

    ids = ["enr_late", *(f"enr_{n}" for n in range(5, -1, -1))]  # oldest first, as they were due
    backlog = [world.models.enrollment.get(enrollment_id) for enrollment_id in ids]
    expected = pace_backlog(
        now,
        len(ids),
        window=campaign_window(world.models.campaign.get("cmp_ibx_custom")),
        limits=limits_of(world.inbox("ibx_custom")),
        usage=InboxUsage(day=date.min, sent_today=0),
        jitters=[jitter_for(f"{e.enrollment_id}:{e.step_index}") for e in backlog],
    )
    # Not re-timed (dispatch sends them oldest first, one per gap, within the cap and window): the
    # notice says where that puts the first and the last.
    assert all((e.due_at or 0) <= int(now.timestamp()) for e in backlog)
    assert (result.backlog.first_slot, result.backlog.last_slot) == (expected[0], expected[-1])
    # ...which is: at most three a day (Berlin days), five minutes or more apart, none before now.
    days = [slot.astimezone(BERLIN).date() for slot in expected]
    assert max(days.count(d) for d in set(days)) <= 3 and len(set(days)) >= 2
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(expected)]
    assert min(gaps) >= 300 and expected[0] >= now
    assert world.models.enrollment.get("enr_future").due_at == int((now + timedelta(days=2)).timestamp())
    assert result.backlog.released == 7 and world.inbox("ibx_custom").status == InboxStatus.CONNECTED

    (resumed,) = activity.recent(world.models, activity.campaign_key("cmp_ibx_custom"), limit=1)
    assert resumed.kind == "campaign.resumed" and "7 waiting emails spread from" in resumed.message


@pytest.mark.dovecot
def test_hold_and_immediate_backlog_modes(world: World, custom_inbox: Inbox) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    due = int((now - timedelta(hours=5)).timestamp())
    world.models.enrollment(
        enrollment_id="enr_wait",
        campaign_id="cmp_ibx_custom",
        inbox_id="ibx_custom",
        email="wait@prospects.example",
        created_at=now,
        due_inbox="ibx_custom",
        due_at=due,
    ).save()
    ctx = world.context()
    opened, _ = reconnect.open_link(
        ctx, world.link("ibx_custom", backlog_mode=BacklogMode.HOLD).rsplit("/", 1)[1], now=now
    )
    csrf = reconnect.load_visit(ctx, opened.cookie, now=now).session.csrf_token
    started = reconnect.submit_password(ctx, opened.cookie, csrf, NEW_PASSWORD, now=now)
    held = catch_up.finish_reconnect(world.worker(), started.task, now=now)
    assert held is not None and held.backlog.held and world.inbox("ibx_custom").paused
    assert world.models.enrollment.get("enr_wait").due_at == due
    assert "stays paused until an admin resumes it" in emails_to(ADMIN)[0].body

    world.inbox("ibx_custom").update(actions=[world.models.inbox.status.set(InboxStatus.DISCONNECTED.value)])
    opened, _ = reconnect.open_link(
        ctx, world.link("ibx_custom", backlog_mode=BacklogMode.IMMEDIATE).rsplit("/", 1)[1], now=now
    )
    csrf = reconnect.load_visit(ctx, opened.cookie, now=now).session.csrf_token
    started = reconnect.submit_password(ctx, opened.cookie, csrf, NEW_PASSWORD, now=now)
    immediate = catch_up.finish_reconnect(world.worker(), started.task, now=now)
    assert (
        immediate is not None
        and immediate.backlog.released == 1
        and world.models.enrollment.get("enr_wait").due_at == due
    )


# ------------------------------------------------------------------------------ expiry, unsubscribe


def test_a_link_that_expires_unused_tells_its_creator_once(world: World) -> None:
    google_inbox(world)
    now = datetime.now(UTC)
    links.create_link(
        world.models, inbox_id="ibx_gmail", created_by=ADMIN, now=now - timedelta(days=8), lifetime=timedelta(days=7)
    )
    links.create_link(  # a notice's own link: its reader gets reminders instead
        world.models,
        inbox_id="ibx_gmail",
        created_by="notice:owner",
        now=now - timedelta(days=8),
        lifetime=timedelta(days=7),
    )
    world.link("ibx_gmail")  # still valid: not reported
    worker = world.worker()  # its mail and idempotency adapters, as the reminders function has them
    incident = IncidentContext(
        models=worker.models,
        mailer=worker.mailer,
        events=worker.events,
        once=worker.once,
        workspace_name=worker.workspace_name,
        admin_emails=worker.admin_emails,
        public_base_url=world.aws.settings.public_base_url,
    )
    assert attention.notify_expired_links(incident, now=now) == 2
    assert attention.notify_expired_links(incident, now=now) == 0
    (email,) = sent_emails()
    assert email.destinations["ToAddresses"] == [ADMIN]
    assert email.subject == f"The reconnect link for {ALICE} expired unused"
    assert "still disconnected" in email.body


def test_unsubscribe_page_asks_and_one_click_post_stops_the_sequence(world: World) -> None:
    google_inbox(world)
    world.models.enrollment(
        enrollment_id="enr_0a1b2c3d4e5f60718293a4b5",
        campaign_id="cmp_ibx_gmail",
        inbox_id="ibx_gmail",
        email="lead@prospects.example",
        created_at=datetime.now(UTC),
        due_inbox="ibx_gmail",
        due_at=int(time.time()),
    ).save()
    visitor = world.visitor()
    url = f"{PUBLIC_BASE_URL}/u/enr_0a1b2c3d4e5f60718293a4b5"
    page = visitor.get(url)
    assert page.status == 200 and 'name="List-Unsubscribe" value="One-Click"' in page.body
    assert world.models.enrollment.get("enr_0a1b2c3d4e5f60718293a4b5").state == EnrollmentState.ACTIVE

    done = visitor.post(url, {"List-Unsubscribe": "One-Click"})  # what a mail client sends (RFC 8058)
    assert done.status == 200 and "You're unsubscribed" in done.text()
    enrollment = world.models.enrollment.get("enr_0a1b2c3d4e5f60718293a4b5")
    assert enrollment.state == EnrollmentState.UNSUBSCRIBED and enrollment.due_inbox is None
    unknown = visitor.post(f"{PUBLIC_BASE_URL}/u/enr_unknown", {"List-Unsubscribe": "One-Click"})
    assert (unknown.status, unknown.body) == (done.status, done.body)
    for page in visitor.pages:
        assert_secure(page)


def test_pages_escape_what_they_show(world: World) -> None:
    world.add_inbox(
        "ibx_x",
        "custom",
        "x@client.example",
        status_reason='<script>alert("reason")</script>',
        smtp_host="smtp.client.example",
        smtp_port=587,
        imap_host="imap.client.example",
        imap_port=993,
    )
    inbox = world.inbox("ibx_x")
    inbox.update(actions=[world.models.inbox.display_name.set('<img src=x onerror="alert(1)">')])
    visitor = world.visitor()
    visitor.get(world.link("ibx_x"))
    page = visitor.get(f"{PUBLIC_BASE_URL}/connect")
    assert "<script>" not in page.body and "<img src=x" not in page.body
    assert "&lt;script&gt;" in page.body
    long = visitor.post(
        f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": page.field("csrf_token"), "password": "a\r\nb"}
    )
    assert long.status == 422 and "one line" in long.text()
    huge = visitor.post(f"{PUBLIC_BASE_URL}/connect/password", {"csrf_token": "x" * 20_000})
    assert huge.status == 400
