"""The reconnect pages in a real browser: Debian's Chromium (Playwright) against the local stack.

The real handlers serve the HTTP API on 127.0.0.1 over an embedded AWS (``local.stack``), the
provider sandbox plays Google and Microsoft over HTTPS, and the person clicks through: link, landing
page, the provider's account chooser and consent screen, and back. Every page the browser receives
must carry the strict headers; the link's token must appear in no later URL, no Referer and no log
line. A screenshot of each page is saved under ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import requests
from aws_lambda_powertools.utilities.parameters import base as parameter_providers
from pynamodb.exceptions import DoesNotExist

from local.imapserver import DovecotServer
from local.mailserver import SmtpTestServer
from local.sandbox import GMAIL_SEND, Sandbox
from local.stack import REGION, LocalStack
from sendwell.adapters.credentials import CredentialStore
from sendwell.config import Settings
from sendwell.ids import step_message_id
from sendwell.models import EnrollmentState, Inbox, InboxStatus, LinkState, Models, bind_models
from sendwell.services import activity, links
from tests.browser import BrowserTab, ServerLogs
from tests.deployment import add_disconnected_inbox, emails_to, forget_sent_emails
from tests.provider_sandbox import sandbox_environment

pytestmark = pytest.mark.browser

GOOGLE_CLIENT_ID = "1234567890-browser.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-browser-secret"
MICROSOFT_CLIENT_ID = "7d1f3b20-55c4-4f0e-8a3b-2c9e6d4f1a77"
MICROSOFT_SECRET = "Yp7~browser.secret"
ADMIN = "admin@agency.example"
OWNER = "dana@client.example"
ALICE = "alice@acme-outreach.com"
MALLORY = "mallory@acme-outreach.com"
BOB = "bob@contoso.com"
NEW_PASSWORD = "n3w-Passw0rd-after-reset"
STRICT = {
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


@dataclass
class Stack:
    local: LocalStack
    sandbox: Sandbox
    models: Models
    store: CredentialStore

    @property
    def api(self) -> str:
        return self.local.api_url

    def inbox(self, inbox_id: str) -> Inbox:
        return self.models.inbox.get(inbox_id, consistent_read=True)

    def add_inbox(self, provider: str, address: str, *, owner: str = OWNER, **extra: Any) -> Inbox:
        inbox_id = f"ibx_{uuid.uuid4().hex[:10]}"
        return add_disconnected_inbox(
            self.models,
            inbox_id,
            provider,
            address,
            owner=owner,
            attention_shard="2",
            follow_ups=["Bumping this."],
            **extra,
        )

    def finished(self, inbox_id: str, *, timeout: float = 30) -> Inbox:
        """The inbox once the reconnect worker (driven by the stack's queue) has finished its reconnect."""
        deadline = time.monotonic() + timeout
        while (inbox := self.inbox(inbox_id)).reconnect_link is not None or inbox.status != InboxStatus.CONNECTED:
            assert time.monotonic() < deadline, f"the reconnect worker never finished: {inbox.status}"
            time.sleep(0.1)
        return inbox

    def admin_link(self, inbox_id: str) -> str:
        """A link from the admin API (IAM-authorised in AWS; the local stack's admin principal here)."""
        answer = requests.post(f"{self.api}/admin/inboxes/{inbox_id}/links", json={"expires_in_days": 7}, timeout=10)
        assert answer.status_code == 201, answer.text
        url: str = answer.json()["url"]
        return url


@pytest.fixture(scope="module")
def stack(sandbox: Sandbox) -> Iterator[Stack]:
    environment = {
        **sandbox_environment(sandbox, google_client_id=GOOGLE_CLIENT_ID, microsoft_client_id=MICROSOFT_CLIENT_ID),
        "POWERTOOLS_LOG_LEVEL": "INFO",  # the handlers log at INFO: the token must be in none of it
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    parameters = {"AdminEmails": ADMIN, "WorkspaceName": "Acme Outreach", "SesIdentity": "agency.example"}
    parameters["SenderAddress"] = "notices@agency.example"
    parameter_providers.DEFAULT_PROVIDERS.clear()  # Powertools' SSM client must talk to this stack
    local = LocalStack(api_port=0, run_schedules=False, extra_env=environment, parameters=parameters, log=print)
    with local:
        settings = Settings.from_env(os.environ)
        ssm = boto3.client("ssm", region_name=REGION)
        ssm.put_parameter(Name=settings.google.secret_parameter, Value=GOOGLE_SECRET, Type="SecureString")
        ssm.put_parameter(Name=settings.microsoft.secret_parameter, Value=MICROSOFT_SECRET, Type="SecureString")
        models = bind_models(settings.tables, region=REGION)
        store = CredentialStore.with_kms(models, boto3.client("kms", region_name=REGION), settings.credentials_key_id)
        yield Stack(local, sandbox, models, store)
    parameter_providers.DEFAULT_PROVIDERS.clear()


@pytest.fixture
def world(stack: Stack) -> Stack:
    sandbox = stack.sandbox
    sandbox.reset()
    sandbox.add_google_account(ALICE, name="Alice Archer")
    sandbox.add_google_account(MALLORY, name="Mallory Moss")
    sandbox.add_microsoft_account(BOB, name="Bob Brown")
    sandbox.add_client("google", GOOGLE_CLIENT_ID, GOOGLE_SECRET, [f"{stack.api}/oauth/callback/google"])
    sandbox.add_client("microsoft", MICROSOFT_CLIENT_ID, MICROSOFT_SECRET, [f"{stack.api}/oauth/callback/microsoft"])
    forget_sent_emails()
    return stack


def google_inbox(world: Stack, owner: str = OWNER) -> Inbox:
    alice = world.sandbox.add_google_account(ALICE, name="Alice Archer")
    old = {"refresh_token": "1//0-revoked", "access_token": "ya29.old", "expires_at": 0, "scopes": []}
    inbox = world.add_inbox(
        "gmail", ALICE, owner=owner, identity_issuer="https://accounts.google.com", identity_subject=alice.sub
    )
    world.store.seed(inbox, old)
    return inbox


def sealed(world: Stack, inbox_id: str) -> bytes | None:
    """The inbox's stored sign-in as sealed (None: none is stored): to tell that nothing was written."""
    try:
        return bytes(world.models.credentials.get(inbox_id, consistent_read=True).ciphertext)
    except DoesNotExist:
        return None


def check_every_page(tab: BrowserTab, world: Stack, link_url: str, logs: str) -> None:
    """Strict headers on every page we served; the token only ever in the link's own request."""
    ours = [d for d in tab.documents if d.url.startswith(world.api)]
    assert ours, "no page of ours was visited"
    for document in ours:
        for name, value in STRICT.items():
            assert document.headers.get(name) == value, (document.url, name)
        csp = document.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    token = link_url.rsplit("/", 1)[1]
    first, *later = [r for r in tab.requests if token in r.url or token in json.dumps(r.headers)]
    assert first.url == link_url and later == [], [r.url for r in later]
    assert all("referer" not in r.headers for r in tab.requests if r.url.startswith(world.api)), "a Referer leaked"
    assert "reconnect link opened" in logs and token not in logs


def continue_at_provider(tab: BrowserTab, *, account: str, untick: tuple[str, ...] = (), allow: str) -> None:
    """On the sandbox's account chooser and consent screen: pick the account, answer."""
    page = tab.page
    page.check(f'input[name="account"][value="{account}"]')
    for scope in untick:
        page.uncheck(f'input[name="scope"][value="{scope}"]')
    tab.screenshot("provider-consent")
    page.click(f'button:has-text("{allow}")')
    page.wait_for_load_state()


# ------------------------------------------------------------------------------------------- tests


def test_owner_reconnects_gmail_through_google_and_the_creator_hears_of_it(
    world: Stack, browser: BrowserTab, server_logs: ServerLogs
) -> None:
    inbox = google_inbox(world)
    world.models.enrollment(
        enrollment_id="enr_priya",
        campaign_id=f"cmp_{inbox.inbox_id}",
        inbox_id=inbox.inbox_id,
        email="priya@northwind.example",
        created_at=datetime.now(UTC) - timedelta(days=5),
        step_index=1,
        due_inbox=inbox.inbox_id,
        due_at=int(time.time()) - 3600,
    ).save()
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "priya@northwind.example", ALICE, "Re: Quick question"
    reply["Message-ID"] = "<reply-1@northwind.example>"
    reply["In-Reply-To"] = step_message_id("enr_priya", 0, ALICE)
    reply["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    reply.set_content("Not interested, thanks.\n")
    world.sandbox.deliver_gmail(ALICE, reply.as_bytes())  # she replied while the inbox was disconnected
    link = world.admin_link(inbox.inbox_id)
    page = browser.page

    page.goto(link)
    assert page.url == f"{world.api}/connect"  # the token left the address bar at once
    assert page.locator("h1").inner_text() == f"Reconnect {ALICE}"
    assert "Acme Outreach" in page.inner_text("main") and "The password was changed" in page.inner_text("main")
    browser.screenshot("landing")
    page.click("text=Continue with Google")
    assert page.url.startswith(world.sandbox.google_auth_url)
    assert page.is_checked(f'input[name="account"][value="{ALICE}"]')  # login_hint
    continue_at_provider(browser, account=ALICE, allow="Allow")

    assert page.locator("h1").inner_text() == f"{ALICE} is connected"
    assert "nobody who replied gets a follow-up" in page.inner_text("main")  # what happens next
    browser.screenshot("success")
    callback = page.url
    page.goto(callback)  # the back button, or a replayed callback
    assert page.locator("h1").inner_text() == "Please open your link again"
    browser.screenshot("replayed-callback")

    stored = world.finished(inbox.inbox_id)
    assert stored.incident_id is None and stored.reminders_sent == 0
    assert world.store.load(stored)["refresh_token"] != "1//0-revoked"
    assert world.models.enrollment.get("enr_priya").state == EnrollmentState.REPLIED
    (to_admin,) = emails_to(ADMIN)
    assert to_admin.subject == f"{ALICE} is reconnected"
    assert "1 message arrived while it was disconnected: 1 reply and 0 bounces" in to_admin.body
    assert [m.subject for m in emails_to(OWNER)] == [f"Thanks: {ALICE} is connected again"]
    check_every_page(browser, world, link, server_logs.text())


def test_one_link_walks_an_owner_through_each_of_their_inboxes(
    world: Stack, browser: BrowserTab, server_logs: ServerLogs
) -> None:
    """An admin makes one link for an owner; its page lists both of their disconnected inboxes and
    starts each one's own sign-in, with that inbox's own proof (the account recorded for it)."""
    owner = "erin@client.example"
    alice = google_inbox(world, owner=owner)
    bob_account = world.sandbox.add_microsoft_account(BOB, name="Bob Brown")
    bob = world.add_inbox(
        "outlook", BOB, owner=owner, identity_issuer=bob_account.tid, identity_subject=bob_account.oid
    )
    world.add_inbox("gmail", "someone.else@acme-outreach.com")  # another owner's: never on this page
    answer = requests.post(f"{world.api}/admin/owner-links", json={"owner_email": owner.upper()}, timeout=10)
    assert answer.status_code == 201, answer.text
    assert answer.json()["owner_email"] == owner and sorted(answer.json()["inbox_ids"]) == sorted(
        [alice.inbox_id, bob.inbox_id]
    )
    link = answer.json()["url"]
    page = browser.page

    page.goto(link)
    assert page.url == f"{world.api}/inboxes"  # the token left the address bar at once
    assert page.locator("h1").inner_text() == "Your inboxes at Acme Outreach"
    assert "2 of your inboxes need you to sign in again" in page.inner_text("main")
    assert "someone.else@" not in page.inner_text("main")
    browser.screenshot("owner-inboxes")

    page.click(f"text=Reconnect {ALICE}")
    assert page.url == f"{world.api}/connect"
    assert page.locator("h1").inner_text() == f"Reconnect {ALICE}"
    page.click("text=Continue with Google")
    continue_at_provider(browser, account=MALLORY, allow="Allow")  # the wrong account: the usual proof
    assert page.locator("h1").inner_text() == "That was a different account"
    page.click("text=Try again")
    page.click("text=Continue with Google")
    continue_at_provider(browser, account=ALICE, allow="Allow")
    assert page.locator("h1").inner_text() == f"{ALICE} is connected"
    browser.screenshot("owner-first-done")

    page.click("text=Back to your inboxes")
    assert "1 of your inboxes needs you to sign in again" in page.inner_text("main")
    assert f"{ALICE} (Google) is connected again" in page.inner_text("main")
    page.click(f"text=Reconnect {BOB}")
    page.click("text=Sign in with Microsoft")
    continue_at_provider(browser, account=BOB, allow="Accept")
    assert page.locator("h1").inner_text() == f"{BOB} is connected"
    page.click("text=Back to your inboxes")
    assert "All your inboxes are connected" in page.inner_text("main")
    browser.screenshot("owner-all-done")

    for inbox in (alice, bob):
        assert world.finished(inbox.inbox_id).status == InboxStatus.CONNECTED
    owner_links_made = [lk for lk in links.list_links(world.models, links.owner_key(owner))]
    assert [lk.state for lk in owner_links_made] == [LinkState.ACTIVE.value]  # it led to proofs; never used up
    check_every_page(browser, world, link, server_logs.text())


def test_owner_reconnects_outlook_through_microsoft(world: Stack, browser: BrowserTab, server_logs: ServerLogs) -> None:
    bob = world.sandbox.add_microsoft_account(BOB, name="Bob Brown")
    inbox = world.add_inbox("outlook", BOB, status=InboxStatus.PENDING.value, failed_at=None, status_reason=None)
    link = world.admin_link(inbox.inbox_id)
    page = browser.page

    page.goto(link)
    assert page.locator("h1").inner_text() == f"Connect {BOB}"
    browser.screenshot("landing")
    page.click("text=Sign in with Microsoft")
    assert page.url.startswith(world.sandbox.microsoft_authority("organizations"))
    continue_at_provider(browser, account=BOB, allow="Accept")

    assert page.locator("h1").inner_text() == f"{BOB} is connected"
    browser.screenshot("success")
    stored = world.finished(inbox.inbox_id)
    assert (stored.identity_issuer, stored.identity_subject) == (bob.tid, bob.oid)
    assert [m.subject for m in emails_to(ADMIN)] == [f"{BOB} is reconnected"]
    check_every_page(browser, world, link, server_logs.text())


def test_signing_in_as_another_account_shows_the_mismatch_and_stores_nothing(
    world: Stack, browser: BrowserTab, server_logs: ServerLogs
) -> None:
    inbox = google_inbox(world)
    before, sealed_before = world.inbox(inbox.inbox_id), sealed(world, inbox.inbox_id)
    link = world.admin_link(inbox.inbox_id)
    page = browser.page
    page.goto(link)
    page.click("text=Continue with Google")
    continue_at_provider(browser, account=MALLORY, allow="Allow")

    assert page.locator("h1").inner_text() == "That was a different account"
    assert f"You signed in as {MALLORY}; this link is for {ALICE}." in page.inner_text("main")
    browser.screenshot("mismatch")
    after = world.inbox(inbox.inbox_id)
    assert after.status == InboxStatus.DISCONNECTED
    assert (sealed(world, inbox.inbox_id), after.credentials_version) == (sealed_before, before.credentials_version)
    assert any(
        e.kind == "inbox.reconnect_mismatch" for e in activity.recent(world.models, activity.inbox_key(inbox.inbox_id))
    )

    page.click("text=Try again")  # the link is still good
    assert page.locator("h1").inner_text() == f"Reconnect {ALICE}"
    check_every_page(browser, world, link, server_logs.text())


def test_unticking_the_send_permission_shows_the_scope_page_and_stays_disconnected(
    world: Stack, browser: BrowserTab, server_logs: ServerLogs
) -> None:
    inbox = google_inbox(world)
    link = world.admin_link(inbox.inbox_id)
    page = browser.page
    page.goto(link)
    page.click("text=Continue with Google")
    continue_at_provider(browser, account=ALICE, untick=(GMAIL_SEND,), allow="Allow")

    assert page.locator("h1").inner_text() == "Google didn't give every permission"
    assert "Without permission to send email" in page.inner_text("main")
    browser.screenshot("missing-scope")
    assert world.inbox(inbox.inbox_id).status == InboxStatus.DISCONNECTED
    check_every_page(browser, world, link, server_logs.text())


def test_expired_used_revoked_and_tampered_links_and_a_forged_state_each_get_a_clear_page(
    world: Stack, browser: BrowserTab
) -> None:
    inbox = google_inbox(world)
    now = datetime.now(UTC)
    expired = links.create_link(
        world.models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=now - timedelta(days=8), lifetime=timedelta(days=7)
    )
    used = links.create_link(world.models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=now)
    links.consume(world.models, used.link, now=now)
    revoked = links.create_link(world.models, inbox_id=inbox.inbox_id, created_by=ADMIN, now=now)
    links.revoke(world.models, revoked.link.link_id, inbox_id=inbox.inbox_id)
    good = world.admin_link(inbox.inbox_id)
    page = browser.page
    headings = {}
    for label, url in (
        ("expired", f"{world.api}/r/{expired.token}"),
        ("used", f"{world.api}/r/{used.token}"),
        ("revoked", f"{world.api}/r/{revoked.token}"),
        ("tampered", good[:-2] + ("xx" if not good.endswith("xx") else "yy")),
    ):
        page.goto(url)
        headings[label] = page.locator("h1").inner_text()
        assert ALICE not in page.content()
        browser.screenshot(label)
    assert headings == {
        "expired": "This link has expired",
        "used": "This link has already been used",
        "revoked": "This link isn't valid",
        "tampered": "This link isn't valid",
    }

    page.goto(good)  # a session, then a callback that didn't come from its sign-in
    page.goto(f"{world.api}/oauth/callback/google?code=4%2F0Aforged&state={quote('forged-state')}")
    assert page.locator("h1").inner_text() == "This request couldn't be checked"
    browser.screenshot("forged-state")
    assert world.inbox(inbox.inbox_id).status == InboxStatus.DISCONNECTED
    assert links.verify(world.models, good.rsplit("/", 1)[1], now=datetime.now(UTC)).state == LinkState.ACTIVE


@pytest.mark.dovecot
def test_custom_inbox_owner_types_the_new_password(
    world: Stack,
    browser: BrowserTab,
    smtp_server: SmtpTestServer,
    dovecot: DovecotServer,
    server_logs: ServerLogs,
) -> None:
    address = f"ana.{uuid.uuid4().hex[:8]}@sendwell-test.example.com"
    smtp_server.users = {address: NEW_PASSWORD}
    dovecot.add_user(address, NEW_PASSWORD)
    inbox = world.add_inbox(
        "custom",
        address,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        imap_host=dovecot.host,
        imap_port=dovecot.port,
        imap_security="none",
        username=address,
    )
    link = world.admin_link(inbox.inbox_id)
    page = browser.page
    page.goto(link)
    assert page.input_value("#username") == address
    browser.screenshot("password-form")

    page.fill("#password", "the-old-one")
    page.click("button[type=submit]")
    failed = page.inner_text("main")
    assert "SMTP authentication failed" in failed and "IMAP authentication failed" in failed
    browser.screenshot("password-failed")
    assert sealed(world, inbox.inbox_id) is None

    page.fill("#password", NEW_PASSWORD)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == f"{address} is connected"
    browser.screenshot("success")
    assert world.store.load(world.finished(inbox.inbox_id)) == {"password": NEW_PASSWORD}
    assert not [r for r in browser.requests if NEW_PASSWORD in r.url]
    logs = server_logs.text()
    assert "reconnect link opened" in logs  # the handlers' logging was captured
    assert NEW_PASSWORD not in logs
    check_every_page(browser, world, link, logs)
