"""The local provider sandbox for tests: one server for the session, and inboxes connected to it.

``sandbox`` starts ``local.sandbox.Sandbox`` once. ``providers`` (per test) forgets every account,
token, fault and counter, registers sendwell's OAuth clients, and offers what a test needs: the
settings that point sendwell at the sandbox, the client secrets, and ``connect_google`` /
``connect_microsoft``, which sign an inbox in through the consent pages the way its owner would and
return the credentials in the shape sendwell stores.

The environment's ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` are left as they are on purpose: the
adapters must trust the configured CA bundle regardless.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import re
import secrets
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import msal
import pytest
import requests

from local.sandbox import GMAIL_READONLY, GMAIL_SEND, Sandbox
from sendwell.adapters.aws import SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.credentials import CredentialStore
from sendwell.adapters.mailboxes import ProviderMailboxes
from sendwell.config import OAuthClient, ProviderEndpoints, Settings
from sendwell.models import Inbox, InboxStatus, new_step
from sendwell.ports.mailbox import InboundMessage, Mailbox, Mailboxes, SentReceipt
from sendwell.ports.messages import SendRequest
from sendwell.services import schedule
from sendwell.services.sending import Outcome, SendContext, send_step
from tests.deployment import Deployment

GOOGLE_CLIENT_ID = "1234567890-sendwell.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = "GOCSPX-sandbox-client-secret"
GOOGLE_SECRET_PARAMETER = "/sendwell/test/google-client-secret"
MICROSOFT_CLIENT_ID = "6f1c2d7e-4b0a-4c5e-9d8f-0a1b2c3d4e5f"
MICROSOFT_CLIENT_SECRET = "Zx98Q~sandbox.client.secret"
MICROSOFT_SECRET_PARAMETER = "/sendwell/test/microsoft-client-secret"
REDIRECT_URI = "https://sendwell.example.test/oauth/callback"
GOOGLE_SCOPES = ("openid", "email", GMAIL_SEND, GMAIL_READONLY)
MICROSOFT_SCOPES = ("User.Read", "Mail.Send", "Mail.Read")

# The consent page's form, read as a browser would submit it.
_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')
_REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')
_SCOPE_BOX = re.compile(r'type="checkbox" name="scope" value="([^"]+)"')


@dataclass(frozen=True, slots=True)
class ProviderSandbox:
    sandbox: Sandbox
    http: requests.Session  # trusts the sandbox's CA, whatever the environment says

    @property
    def endpoints(self) -> ProviderEndpoints:
        base = self.sandbox.base_url
        return ProviderEndpoints(
            google_auth_url=self.sandbox.google_auth_url,
            google_token_url=self.sandbox.google_token_url,
            google_certs_url=self.sandbox.google_certs_url,
            gmail_api_url=base,  # sendwell adds /gmail/v1, as on gmail.googleapis.com
            graph_api_url=f"{base}/graph",  # sendwell adds /v1.0, as on graph.microsoft.com
            microsoft_authority=self.sandbox.microsoft_authority(),
            ca_bundle=self.sandbox.ca_bundle_path,
        )

    @property
    def secrets(self) -> dict[str, str]:
        return {
            GOOGLE_SECRET_PARAMETER: GOOGLE_CLIENT_SECRET,
            MICROSOFT_SECRET_PARAMETER: MICROSOFT_CLIENT_SECRET,
        }

    def settings(self, base: Settings) -> Settings:
        """``base`` pointed at the sandbox, with sendwell's OAuth clients configured."""
        return dataclasses.replace(
            base,
            google=OAuthClient(GOOGLE_CLIENT_ID, GOOGLE_SECRET_PARAMETER),
            microsoft=OAuthClient(MICROSOFT_CLIENT_ID, MICROSOFT_SECRET_PARAMETER),
            endpoints=self.endpoints,
        )

    def connect_google(self, email: str, scopes: Sequence[str] = GOOGLE_SCOPES) -> dict[str, Any]:
        """Sign ``email`` in with Google (consent page, PKCE, code exchange); returns stored credentials."""
        self.sandbox.add_google_account(email)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "client_id": GOOGLE_CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": secrets.token_urlsafe(8),
            "access_type": "offline",
            "prompt": "consent",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "login_hint": email,
        }
        code = self._consent(f"{self.sandbox.google_auth_url}?{urlencode(params)}", email)["code"]
        answer = self.http.post(
            self.sandbox.google_token_url,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": GOOGLE_CLIENT_ID,
                "client_secret": GOOGLE_CLIENT_SECRET,
                "code_verifier": verifier,
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return _stored(answer.json())

    def connect_microsoft(self, email: str, scopes: Sequence[str] = MICROSOFT_SCOPES) -> dict[str, Any]:
        """Sign ``email`` in with Microsoft through msal's auth code flow; returns stored credentials."""
        self.sandbox.add_microsoft_account(email)
        app = msal.ConfidentialClientApplication(
            MICROSOFT_CLIENT_ID,
            client_credential=MICROSOFT_CLIENT_SECRET,
            authority=self.sandbox.microsoft_authority(),
            http_client=self.http,
            instance_discovery=False,
        )
        with warnings.catch_warnings():
            # msal recommends form_post; the query response is what a test can read off a redirect.
            warnings.filterwarnings("ignore", "response_mode='form_post' is recommended", UserWarning)
            flow = app.initiate_auth_code_flow(list(scopes), redirect_uri=REDIRECT_URI, login_hint=email)
        result = app.acquire_token_by_auth_code_flow(flow, self._consent(flow["auth_uri"], email))
        assert "access_token" in result, result.get("error")
        return _stored(result)

    def _consent(self, auth_url: str, email: str) -> dict[str, str]:
        """Allow everything the consent page asks, as ``email``; the parameters the app is called back with."""
        page = self.http.get(auth_url, timeout=10)
        assert page.status_code == 200, page.text
        action, request_id = _FORM_ACTION.search(page.text), _REQUEST_ID.search(page.text)
        assert action is not None and request_id is not None, page.text
        form = {
            "request_id": html.unescape(request_id[1]),
            "account": email,
            "scope": [html.unescape(scope) for scope in _SCOPE_BOX.findall(page.text)],
            "decision": "allow",
        }
        answer = self.http.post(
            urljoin(page.url, html.unescape(action[1])), data=form, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 302, answer.text
        return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def _stored(tokens: dict[str, Any]) -> dict[str, Any]:
    """A token endpoint's answer in the shape sendwell stores for an OAuth inbox."""
    return {
        "refresh_token": tokens["refresh_token"],
        "access_token": tokens["access_token"],
        "expires_at": int(time.time()) + int(tokens["expires_in"]),
        "scopes": str(tokens.get("scope", "")).split(),
    }


def trusting_session(sandbox: Sandbox) -> requests.Session:
    """A requests session that trusts the sandbox's CA, whatever the environment says (proxies, CA bundle)."""
    session = requests.Session()
    session.trust_env, session.verify = False, sandbox.ca_bundle_path
    return session


def sandbox_environment(sandbox: Sandbox, *, google_client_id: str, microsoft_client_id: str) -> dict[str, str]:
    """The environment that points sendwell's functions at the sandbox, with their OAuth clients configured."""
    return {
        "SENDWELL_GOOGLE_CLIENT_ID": google_client_id,
        "SENDWELL_MICROSOFT_CLIENT_ID": microsoft_client_id,
        "SENDWELL_GOOGLE_AUTH_URL": sandbox.google_auth_url,
        "SENDWELL_GOOGLE_TOKEN_URL": sandbox.google_token_url,
        "SENDWELL_GOOGLE_CERTS_URL": sandbox.google_certs_url,
        "SENDWELL_GMAIL_API_URL": sandbox.base_url,
        "SENDWELL_GRAPH_API_URL": f"{sandbox.base_url}/graph",
        "SENDWELL_MICROSOFT_AUTHORITY": sandbox.microsoft_authority("organizations"),
        "SENDWELL_CA_BUNDLE": sandbox.ca_bundle_path,
    }


def mime(sender: str, to: str, subject: str, *, in_reply_to: str | None = None, body: str = "") -> bytes:
    """An incoming message as a person's mail client would write it."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Date"] = "Mon, 23 Nov 2026 10:30:00 +0000"
    message["Message-ID"] = f"<{secrets.token_hex(8)}@{sender.rpartition('@')[2]}>"
    if in_reply_to:
        message["In-Reply-To"] = message["References"] = in_reply_to
    message.set_content(body or f"Hi,\n\nThanks for reaching out about {subject.lower()}.\n\nBest\n")
    return message.as_bytes()


class SavedCredentials:
    """The ``save`` of an adapter built directly in a test: records every save and keeps it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, credentials: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(credentials)
        return credentials


class SendWorld:
    """A deployment (on moto) with one OAuth inbox connected at the sandbox and a two-step campaign,
    driven through the send service as the send function drives it."""

    def __init__(
        self,
        aws: Deployment,
        providers: ProviderSandbox,
        *,
        provider: str,
        address: str,
        credentials: dict[str, Any],
    ) -> None:
        self.providers = providers
        self.models = aws.models
        self.settings = providers.settings(aws.settings)
        self._kms, self._key_id = aws.client("kms"), aws.settings.credentials_key_id
        self.store = CredentialStore.with_kms(self.models, self._kms, self._key_id)
        self.reporter = SqsAuthFailureReporter(SqsQueue(aws.client("sqs"), aws.settings.auth_failure_queue_url))
        self.credentials = credentials
        self.address = address
        self.inbox_id = f"ibx_{provider}"
        self.start = datetime.now(UTC).replace(microsecond=0)
        inbox = self.models.inbox(
            inbox_id=self.inbox_id,
            provider=provider,
            address=address,
            display_name="Alice Archer",
            owner_email="owner@agency.example",
            created_at=self.start - timedelta(days=30),
            status=InboxStatus.CONNECTED.value,
            daily_cap=50,
            min_gap_seconds=60,
            jitter_seconds=0,
        )
        inbox.save()
        self.store.seed(inbox, credentials)
        self.models.campaign(
            campaign_id="cmp_oauth",
            name="Q4 outreach",
            created_at=self.start,
            inbox_ids=[self.inbox_id],
            steps=[
                new_step(
                    subject="Quick question, {{ first_name }}",
                    text="Hi {{ first_name }},\nare you the right person to talk to about outbound?",
                    html="<p>Hi {{ first_name }},</p><p>are you the right person to talk to about outbound?</p>",
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
            ],
        ).save()

    def inbox(self) -> Inbox:
        return self.models.inbox.get(self.inbox_id, consistent_read=True)

    def stored_credentials(self) -> dict[str, Any]:
        return self.store.load(self.inbox())

    def store_credentials(self, credentials: dict[str, Any]) -> None:
        """Store ``credentials`` at the next version, as a refresh elsewhere would."""
        self.store.save(self.inbox(), credentials)

    def fresh_mailboxes(self) -> ProviderMailboxes:
        """What a new function instance builds at cold start (with a cache of its own)."""
        store = CredentialStore.with_kms(self.models, self._kms, self._key_id)
        return ProviderMailboxes(self.settings, store, secrets=self.providers.secrets, timeout=5.0)

    def found_in_sent(self, message_id: str) -> SentReceipt | None:
        return self.fresh_mailboxes().open(self.inbox()).find_sent(message_id)

    def enroll(self, enrollment_id: str, email: str, first_name: str = "Dana") -> None:
        self.models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id="cmp_oauth",
            inbox_id=self.inbox_id,
            email=email,
            fields={"first_name": first_name},
            created_at=self.start,
            due_inbox=self.inbox_id,
            due_at=int(self.start.timestamp()),
        ).save()
        schedule.wake(self.models, self.inbox_id, at=self.start)

    def send(
        self,
        enrollment_id: str,
        step: int,
        *,
        later: timedelta = timedelta(0),
        redelivered: bool = False,
        mailboxes: Mailboxes | None = None,
    ) -> Outcome:
        now = self.start + later
        # The poll function keeps the inbox's replies current; follow-ups wait otherwise.
        self.models.inbox(self.inbox_id).update(actions=[self.models.inbox.last_polled_at.set(now)])
        context = SendContext(
            models=self.models,
            mailboxes=mailboxes or self.fresh_mailboxes(),
            auth_failures=self.reporter,
            unsubscribe_base_url="https://sendwell.example.test/u",
        )
        request = SendRequest(enrollment_id, step, self.inbox_id, now.date().isoformat(), 60)
        return send_step(context, request, now=now, redelivered=redelivered)

    def send_then_crash(self, enrollment_id: str, step: int) -> None:
        """The function dies right after the provider accepted the message, before recording it."""
        with pytest.raises(SystemExit):
            self.send(enrollment_id, step, mailboxes=_CrashAfterSend(self.fresh_mailboxes()))


@dataclass(frozen=True, slots=True)
class _CrashAfterSend:
    mailboxes: Mailboxes

    def open(self, inbox: Inbox) -> Mailbox:
        return _CrashingMailbox(self.mailboxes.open(inbox))


@dataclass(frozen=True, slots=True)
class _CrashingMailbox:
    mailbox: Mailbox

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        self.mailbox.send(message, thread_id=thread_id)
        raise SystemExit("the function died after the provider accepted the message")

    def find_sent(self, message_id: str) -> SentReceipt | None:
        return self.mailbox.find_sent(message_id)

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        return self.mailbox.poll(cursor, since=since)

    @property
    def confirms_by_sent(self) -> bool:
        return self.mailbox.confirms_by_sent


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def providers(sandbox: Sandbox) -> Iterator[ProviderSandbox]:
    sandbox.reset()
    sandbox.add_client("google", GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET, [REDIRECT_URI])
    sandbox.add_client("microsoft", MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, [REDIRECT_URI])
    with trusting_session(sandbox) as http:
        yield ProviderSandbox(sandbox, http)


@pytest.fixture
def saved() -> SavedCredentials:
    return SavedCredentials()
