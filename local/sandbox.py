"""A local stand-in for Google (OAuth + Gmail API) and Microsoft (identity platform + Graph).

Real client code (google-auth, msal, requests) talks to it over HTTPS on the loopback interface and
gets the request and response shapes of the real services, including their error bodies, so tests,
benchmarks and the local demo run the same code paths as production.

Only HTTPS is served: msal refuses any authority that is not ``https://`` (``msal.authority.
canonicalize``), and one scheme keeps every client configured alike. A throwaway CA is made at start;
pass ``verify=sandbox.ca_bundle_path`` to requests sessions and to msal applications (a browser
context uses ``ignore_https_errors``). Beware: requests lets ``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE`` in the environment override a session's ``verify``; unset them, or point them at
the sandbox's bundle, in a process that talks to the sandbox.

Microsoft clients must be built with ``instance_discovery=False``: for a host msal does not know it
would otherwise ask login.microsoftonline.com to validate the authority. msal drops the port when it
rebuilds an authority for ``acquire_token_silent``; use ``acquire_token_by_refresh_token`` with a
stored refresh token (as sendwell does).

Run ``python -m local.sandbox`` to serve it on its own; the ``/_sandbox/<method>`` control API lets
another process add accounts, inject faults and deliver mail.
"""

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import email.policy
import hashlib
import hmac
import html
import ipaddress
import json
import math
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self, TypeVar, cast, get_args
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm

Provider = Literal["google", "microsoft"]
_Mailbox = TypeVar("_Mailbox")
Surface = Literal["token", "send", "read"]

GOOGLE_ISSUER: Final = "https://accounts.google.com"
GMAIL_SEND: Final = "https://www.googleapis.com/auth/gmail.send"
GMAIL_READONLY: Final = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_MODIFY: Final = "https://www.googleapis.com/auth/gmail.modify"
GMAIL_COMPOSE: Final = "https://www.googleapis.com/auth/gmail.compose"
GMAIL_METADATA: Final = "https://www.googleapis.com/auth/gmail.metadata"
GMAIL_FULL: Final = "https://mail.google.com/"
GOOGLE_EMAIL: Final = "https://www.googleapis.com/auth/userinfo.email"
GOOGLE_PROFILE: Final = "https://www.googleapis.com/auth/userinfo.profile"

# Any of these lets a token send or read: the real APIs accept the broader scopes too.
_GMAIL_SEND_SCOPES: Final = frozenset({GMAIL_SEND, GMAIL_COMPOSE, GMAIL_MODIFY, GMAIL_FULL})
_GMAIL_READ_SCOPES: Final = frozenset({GMAIL_READONLY, GMAIL_MODIFY, GMAIL_FULL})
_GMAIL_PROFILE_SCOPES: Final = _GMAIL_READ_SCOPES | {GMAIL_COMPOSE, GMAIL_METADATA}
_GRAPH_SEND_SCOPES: Final = frozenset({"Mail.Send"})
_GRAPH_READ_SCOPES: Final = frozenset({"Mail.Read", "Mail.ReadWrite"})
_GRAPH_ME_SCOPES: Final = frozenset({"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All"})
_GRAPH_RESOURCE: Final = "https://graph.microsoft.com/"
_OIDC_SCOPES: Final = frozenset({"openid", "profile", "email", "offline_access"})
# Google answers with the long names of the short OpenID scopes; clients comparing scopes see that.
_GOOGLE_SCOPE_ALIASES: Final = MappingProxyType({"email": GOOGLE_EMAIL, "profile": GOOGLE_PROFILE})
_MICROSOFT_TENANT_ALIASES: Final = frozenset({"common", "organizations"})

_SCOPE_LABELS: Final = MappingProxyType(
    {
        "openid": "Associate you with your personal info",
        GOOGLE_EMAIL: "See your primary email address",
        GOOGLE_PROFILE: "See your personal info",
        GMAIL_SEND: "Send email on your behalf",
        GMAIL_READONLY: "View your email messages and settings",
        GMAIL_MODIFY: "Read, compose and send email from your Gmail account",
        GMAIL_COMPOSE: "Manage drafts and send email",
        GMAIL_FULL: "Read, compose, send and permanently delete all your email",
        "profile": "View your basic profile",
        "email": "View your email address",
        "offline_access": "Maintain access to data you have given it access to",
        "User.Read": "Sign you in and read your profile",
        "Mail.Send": "Send mail as you",
        "Mail.Read": "Read your mail",
        "Mail.ReadWrite": "Read and write access to your mail",
    }
)

FaultKind = Literal[
    "invalid_grant",
    "invalid_rapt",
    "invalid_client",
    "unauthorized_401",
    "insufficient_scopes_403",
    "domain_policy_403",
    "rate_limit_429",
    "server_error_500",
    "unavailable_503",
    "html_502",
    "timeout",
]
_TRANSPORT_FAULTS: Final = frozenset(
    {"rate_limit_429", "server_error_500", "unavailable_503", "html_502", "timeout", "domain_policy_403"}
)
_FAULTS_BY_SURFACE: Final = MappingProxyType(
    {
        "token": _TRANSPORT_FAULTS | {"invalid_grant", "invalid_rapt", "invalid_client"},
        "send": _TRANSPORT_FAULTS | {"unauthorized_401", "insufficient_scopes_403"},
        "read": _TRANSPORT_FAULTS | {"unauthorized_401", "insufficient_scopes_403"},
    }
)

_CODE_LIFETIME: Final = 600.0
_PENDING_LIFETIME: Final = 600.0
_GOOGLE_TOKEN_LIFETIME: Final = 3599
_MICROSOFT_TOKEN_LIFETIME: Final = 3600
_ID_TOKEN_LIFETIME: Final = 3600
_FIRST_HISTORY_ID: Final = 1000
_MAX_BODY: Final = 25 * 1024 * 1024
_IO_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class _AadstsError:
    error: str
    message: str
    status: int = 400
    suberror: str | None = None
    claims_challenge: bool = False


# What the v2.0 token endpoint answers for each AADSTS number, as observed in real responses: most
# user-side problems are invalid_grant (MFA and consent ones with a suberror telling the app what the
# user must do), a Conditional Access block is interaction_required, app credential problems are
# invalid_client (HTTP 401) or unauthorized_client.
_AADSTS: Final = MappingProxyType(
    {
        50011: _AadstsError(
            "invalid_request",
            "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
            "configured for the application '{client_id}'.",
        ),
        50000: _AadstsError(
            "server_error",
            "There was an error issuing a token or an issue with our sign-in service.",
            status=500,
        ),
        50053: _AadstsError(
            "invalid_grant",
            "The account is locked, you've tried to sign in too many times with an incorrect user ID or "
            "password.",
        ),
        50055: _AadstsError("invalid_grant", "The password is expired.", suberror="user_password_expired"),
        50057: _AadstsError("invalid_grant", "The user account is disabled."),
        50076: _AadstsError(
            "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to a new "
            "location, you must use multi-factor authentication to access "
            "'00000003-0000-0000-c000-000000000000'.",
            suberror="basic_action",
            claims_challenge=True,
        ),
        50079: _AadstsError(
            "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to a new "
            "location, you must enroll in multi-factor authentication to access "
            "'00000003-0000-0000-c000-000000000000'.",
            suberror="basic_action",
            claims_challenge=True,
        ),
        50148: _AadstsError(
            "invalid_grant",
            "The code_verifier does not match the code_challenge supplied in the authorization request "
            "for PKCE.",
        ),
        50173: _AadstsError(
            "invalid_grant",
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The "
            "user might have changed or reset their password.",
        ),
        53003: _AadstsError(
            "interaction_required",
            "Access has been blocked by Conditional Access policies. The access policy does not allow "
            "token issuance.",
            suberror="message_only",
        ),
        54005: _AadstsError(
            "invalid_grant",
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use "
            "an existing refresh token.",
        ),
        65001: _AadstsError(
            "invalid_grant",
            "The user or administrator has not consented to use the application with ID '{client_id}'. "
            "Send an interactive authorization request for this user and resource.",
            suberror="consent_required",
        ),
        70000: _AadstsError("invalid_grant", "The provided value for the 'code' parameter is not valid."),
        70003: _AadstsError("unsupported_grant_type", "The app requested an unsupported grant type."),
        70008: _AadstsError(
            "invalid_grant",
            "The provided authorization code or refresh token has expired due to inactivity. Send a new "
            "interactive authorization request for this user and resource.",
        ),
        70043: _AadstsError(
            "invalid_grant",
            "The refresh token has expired or is invalid due to sign-in frequency checks by conditional "
            "access.",
        ),
        90002: _AadstsError("invalid_tenant", "Tenant '{tenant}' not found."),
        90033: _AadstsError(
            "temporarily_unavailable", "A transient error has occurred. Please try again.", status=503
        ),
        90055: _AadstsError(
            "temporarily_unavailable",
            "There are too many incoming requests. Please try again later.",
            status=429,
        ),
        700016: _AadstsError(
            "unauthorized_client",
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
            "happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant.",
        ),
        700082: _AadstsError("invalid_grant", "The refresh token has expired due to inactivity."),
        7000112: _AadstsError("unauthorized_client", "Application '{client_id}' is disabled."),
        7000215: _AadstsError(
            "invalid_client",
            "Invalid client secret provided. Ensure the secret being sent in the request is the client "
            "secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            status=401,
        ),
        7000218: _AadstsError(
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            status=401,
        ),
        7000222: _AadstsError(
            "invalid_client",
            "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to "
            "create new keys for your app: https://aka.ms/NewClientSecret.",
            status=401,
        ),
        9002313: _AadstsError("invalid_grant", "Invalid request. Request is malformed or invalid."),
    }
)
_AADSTS_FALLBACK: Final = _AadstsError("invalid_grant", "The request was rejected.")

_GOOGLE_502_PAGE: Final = (
    "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1</title>"
    "<p><b>502.</b> <ins>That\u2019s an error.</ins><p>The server encountered a temporary error and "
    "could not complete your request.<p>Please try again in 30 seconds. <ins>That\u2019s all we know.</ins>"
)
_MICROSOFT_502_PAGE: Final = (
    "<html><head><title>502 - Web server received an invalid response while acting as a gateway or "
    "proxy server.</title></head><body><h1>Server Error</h1><h2>502 - Web server received an invalid "
    "response while acting as a gateway or proxy server.</h2></body></html>"
)

_STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#202124}"
    "fieldset{border:1px solid #dadce0;border-radius:8px;margin:1rem 0;padding:.5rem 1rem}"
    "label{display:block;padding:.25rem 0}code{font-size:.8em;color:#5f6368}"
    "button{font:inherit;padding:.5rem 1.25rem;margin-right:.5rem}"
)
# Submits the form_post answer; the only script any page may run (allowed by its hash).
_FORM_POST_SCRIPT: Final = "document.forms[0].submit()"


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# The pages load nothing from outside; style and script are allowed by their hashes alone.
_PAGE_HEADERS: Final = MappingProxyType(
    {
        "Content-Security-Policy": f"default-src 'none'; style-src {_csp_hash(_STYLE)}; "
        f"script-src {_csp_hash(_FORM_POST_SCRIPT)}; base-uri 'none'; frame-ancestors 'none'",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
)


# --------------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True, slots=True)
class GoogleAccount:
    email: str
    sub: str
    name: str


@dataclass(frozen=True, slots=True)
class MicrosoftAccount:
    email: str
    tid: str
    oid: str
    name: str


# --------------------------------------------------------------------------------------------------
# Internal state


@dataclass(frozen=True, slots=True)
class _Client:
    provider: Provider
    client_id: str
    client_secret: str
    redirect_uris: frozenset[str]


@dataclass(frozen=True, slots=True)
class _PendingAuthorization:
    """An authorization request waiting for the person on the consent page."""

    provider: Provider
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    tenant: str
    offline: bool
    force_consent: bool
    include_granted_scopes: bool
    client_info: bool
    response_mode: str
    expires_at: float


@dataclass(slots=True)
class _AuthCode:
    provider: Provider
    client_id: str
    email: str
    scopes: frozenset[str]
    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    issue_refresh_token: bool
    expires_at: float
    redeemed: bool = False


@dataclass(slots=True)
class _Token:
    """An access or refresh token: whose, for which client, with which scopes."""

    provider: Provider
    client_id: str
    email: str
    scopes: frozenset[str]
    expires_at: float = math.inf
    revoked: bool = False

    def usable(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass(slots=True)
class _Fault:
    kind: str
    remaining: int | None
    retry_after: int
    hold_seconds: float


@dataclass(slots=True)
class _GmailMessage:
    id: str
    thread_id: str
    raw: bytes
    label_ids: tuple[str, ...]
    internal_date: float
    history_id: int
    message_id: str


@dataclass(frozen=True, slots=True)
class _HistoryRecord:
    id: int
    message_id: str
    at: float


@dataclass(slots=True)
class _GmailMailbox:
    email: str
    messages: dict[str, _GmailMessage] = field(default_factory=dict)
    history: list[_HistoryRecord] = field(default_factory=list)
    history_id: int = _FIRST_HISTORY_ID
    # Any startHistoryId below this is older than what is kept: history.list answers 404.
    history_floor: int = 0
    sent: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class _GraphMessage:
    id: str
    conversation_id: str
    raw: bytes
    folder: str
    received: float
    seq: int
    message_id: str
    is_read: bool


@dataclass(slots=True)
class _GraphMailbox:
    email: str
    folder_ids: dict[str, str]
    messages: dict[str, _GraphMessage] = field(default_factory=dict)
    seq: int = 0
    # Bumped to make every delta token of this mailbox unknown (410 syncStateNotFound).
    delta_generation: int = 0
    sent: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _DeltaState:
    email: str
    folder: str
    generation: int
    after: int
    until: int
    select: frozenset[str] | None
    page_size: int


@dataclass(slots=True)
class _State:
    """Everything the sandbox knows; every read and write happens under ``lock``."""

    gmail_history_retention: float
    lock: threading.RLock = field(default_factory=threading.RLock)
    base_url: str = ""
    google_accounts: dict[str, GoogleAccount] = field(default_factory=dict)
    microsoft_accounts: dict[str, MicrosoftAccount] = field(default_factory=dict)
    clients: dict[tuple[Provider, str], _Client] = field(default_factory=dict)
    pending: dict[str, _PendingAuthorization] = field(default_factory=dict)
    codes: dict[str, _AuthCode] = field(default_factory=dict)
    refresh_tokens: dict[str, _Token] = field(default_factory=dict)
    access_tokens: dict[str, _Token] = field(default_factory=dict)
    consents: dict[tuple[Provider, str, str], frozenset[str]] = field(default_factory=dict)
    faults: dict[tuple[str, Surface], list[_Fault]] = field(default_factory=dict)
    gmail: dict[str, _GmailMailbox] = field(default_factory=dict)
    graph: dict[str, _GraphMailbox] = field(default_factory=dict)
    delta_states: dict[str, _DeltaState] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def clear(self) -> None:
        for collection in (
            self.google_accounts,
            self.microsoft_accounts,
            self.clients,
            self.pending,
            self.codes,
            self.refresh_tokens,
            self.access_tokens,
            self.consents,
            self.faults,
            self.gmail,
            self.graph,
            self.delta_states,
            self.requests,
        ):
            collection.clear()

    def take_fault(self, email: str, surface: Surface) -> _Fault | None:
        """The first fault armed for this account and surface, counting one use of it."""
        faults = self.faults.get((email, surface))
        if not faults:
            return None
        fault = faults[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.pop(0)
        return fault

    def issue(self, store: dict[str, _Token], prefix: str, token: _Token) -> str:
        value = prefix + secrets.token_urlsafe(48)
        store[value] = token
        return value

    def has_live_refresh_token(self, provider: Provider, client_id: str, email: str) -> bool:
        return any(
            t.provider == provider and t.client_id == client_id and t.email == email and not t.revoked
            for t in self.refresh_tokens.values()
        )


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def correlation_id(self) -> str:
        return self.headers.get("client-request-id") or str(uuid.uuid4())


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The timeout fault: answer nothing for this long, then hang up.
    hold_seconds: float | None = None


_Handler = Callable[[_Request, "re.Match[str]"], _Response]
_Route = tuple[str, "re.Pattern[str]", _Handler]


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(
        status,
        json.dumps(payload).encode(),
        "application/json; charset=utf-8",
        {"Cache-Control": "no-store", **(headers or {})},
    )


def _html(status: int, page: str) -> _Response:
    return _Response(status, page.encode(), "text/html; charset=utf-8", dict(_PAGE_HEADERS))


def _redirect(uri: str, params: Mapping[str, str | None]) -> _Response:
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return _Response(302, headers={"Location": location, **_PAGE_HEADERS})


def _answer_client(pending: _PendingAuthorization, params: Mapping[str, str | None]) -> _Response:
    """Send the authorization response back the way the client asked: query string or form_post."""
    if pending.response_mode != "form_post":
        return _redirect(pending.redirect_uri, params)
    fields = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in params.items()
        if value is not None
    )
    body = (
        f'<form method="post" action="{html.escape(pending.redirect_uri)}">{fields}'
        f'<noscript><button type="submit">Continue</button></noscript></form>'
        f"<script>{_FORM_POST_SCRIPT}</script>"
    )
    return _html(200, _page("Working...", body))


def _route(method: str, pattern: str, handler: _Handler) -> _Route:
    return method, re.compile(pattern), handler


class _Server(ThreadingHTTPServer):
    """Threaded HTTPS server; the TLS handshake runs in each connection's thread, not the accept loop."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up stop()

    def __init__(
        self,
        address: tuple[str, int],
        tls: ssl.SSLContext,
        app: Callable[[_Request], _Response],
        stopping: threading.Event,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _RequestHandler)
        self.tls = tls
        self.app = app
        self.stopping = stopping
        self._connections: set[ssl.SSLSocket] = set()
        self._connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(_IO_TIMEOUT)
            # Headers and body go out in separate writes; without this, Nagle's algorithm and the
            # client's delayed ACK stall every response for ~40 ms.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that gave up or spoke plain HTTP
        with self._connections_lock:
            self._connections.add(connection)
        try:
            _RequestHandler(connection, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            connection.close()

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sandbox"
    timeout = _IO_TIMEOUT

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        server = cast(_Server, self.server)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return
        if length > _MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = _Request(
            self.command,
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            {name.lower(): value for name, value in self.headers.items()},
            body,
        )
        response = server.app(request)
        if response.hold_seconds is not None:
            server.stopping.wait(response.hold_seconds)
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo tell their own story."""


# --------------------------------------------------------------------------------------------------
# Keys and certificates


def _x509_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


@dataclass(frozen=True, slots=True)
class _SigningKey:
    """An RS256 key published the ways providers do: a JWKS entry and a self-signed certificate."""

    kid: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str) -> Self:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        builder = x509.CertificateBuilder().subject_name(_x509_name(common_name))
        builder = builder.issuer_name(_x509_name(common_name)).public_key(key.public_key())
        certificate = _validity(builder, 14).sign(key, hashes.SHA256())
        return cls(certificate.fingerprint(hashes.SHA256()).hex()[:40], key, certificate)

    def sign(self, claims: Mapping[str, object]) -> str:
        return jwt.encode(dict(claims), self.private_key, algorithm="RS256", headers={"kid": self.kid})

    def jwk(self) -> dict[str, object]:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            **RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True),
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "x5c": [base64.b64encode(der).decode()],
        }

    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_usage(*allowed: str) -> x509.KeyUsage:
    usages = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
        "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return x509.KeyUsage(**{usage: usage in allowed for usage in usages})


def _write_tls_files(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for the loopback names: (CA, chain, key) paths."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _x509_name("sendwell sandbox CA")
    ca_cert = (
        _validity(x509.CertificateBuilder(), 30)
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        host_name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        host_name = x509.DNSName(host)
    if host_name not in names:
        names.append(host_name)
    leaf_cert = (
        _validity(x509.CertificateBuilder(), 30)
        .subject_name(_x509_name(host))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage("digital_signature"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, chain_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    chain_path.write_bytes(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    key_path.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, chain_path, key_path


# --------------------------------------------------------------------------------------------------
# Small helpers


def _key(email: str) -> str:
    return email.strip().lower()


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _b64url_decode(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding; binascii.Error on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise binascii.Error("not URL-safe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


def _pkce_matches(challenge: str, method: str, verifier: str) -> bool:
    if method == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        verifier = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(verifier, challenge)


def _client_credentials(request: _Request, form: Mapping[str, list[str]]) -> tuple[str, str]:
    """client_secret_basic or client_secret_post, as both providers accept."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
            return unquote(client_id), unquote(secret)
    return (form.get("client_id") or [""])[0], (form.get("client_secret") or [""])[0]


def _first(form: Mapping[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


def _parse_mime(raw: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def _message_ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def _has_recipients(message: EmailMessage) -> bool:
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    return any("@" in address for _, address in getaddresses(values))


def _with_header(raw: bytes, name: str, value: str) -> bytes:
    newline = b"\r\n" if b"\r\n" in raw else b"\n"
    return f"{name}: {value}".encode() + newline + raw


def _ensure_message_id(raw: bytes, domain: str) -> tuple[bytes, str]:
    """Providers stamp a Message-ID (and Date) on mail that has none; they keep the sender's own."""
    message = _parse_mime(raw)
    if message["Date"] is None:
        raw = _with_header(raw, "Date", format_datetime(dt.datetime.now(dt.UTC)))
    message_id = str(message["Message-ID"] or "").strip()
    if not message_id:
        message_id = f"<{secrets.token_hex(12)}@{domain}>"
        raw = _with_header(raw, "Message-ID", message_id)
    return raw, message_id


def _text_body(message: EmailMessage) -> tuple[str, str]:
    """(Graph contentType, content) of the body a reader would see."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "text", ""
    try:
        content = cast(str, part.get_content())
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return ("html" if part.get_content_subtype() == "html" else "text"), content


def _preview(message: EmailMessage, length: int) -> str:
    return " ".join(_text_body(message)[1].split())[:length]


def _part_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822 and message/delivery-status hold header blocks
        return b"\n".join(cast(Message, sub).as_bytes() for sub in payload)
    return str(payload).encode()


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _error_page(status: int, heading: str, detail: str) -> _Response:
    body = f"<h1>{html.escape(heading)}</h1><p>{html.escape(detail)}</p>"
    return _html(status, _page(heading, body))


@dataclass(frozen=True, slots=True)
class _ConsentView:
    title: str
    heading: str
    client_id: str
    action: str
    request_id: str
    accounts: Sequence[tuple[str, str]]  # (email, label)
    selected: str | None
    scopes: Sequence[str]
    allow_label: str
    deny_label: str


def _consent_page(view: _ConsentView) -> _Response:
    esc = html.escape
    accounts = (
        "".join(
            f'<label><input type="radio" name="account" value="{esc(email)}" required'
            f"{' checked' if email == view.selected else ''}> {esc(label)}</label>"
            for email, label in view.accounts
        )
        or "<p>No account in this sandbox can sign in here.</p>"
    )
    scopes = "".join(
        f'<label><input type="checkbox" name="scope" value="{esc(scope)}" checked> '
        f"{esc(_SCOPE_LABELS.get(scope, scope))} <code>{esc(scope)}</code></label>"
        for scope in view.scopes
    )
    disabled = "" if view.accounts else " disabled"
    body = (
        f"<h1>{esc(view.heading)}</h1>"
        f"<p>The application <strong>{esc(view.client_id)}</strong> wants to access your account.</p>"
        f'<form method="post" action="{esc(view.action)}">'
        f'<input type="hidden" name="request_id" value="{esc(view.request_id)}">'
        f"<fieldset><legend>Choose an account</legend>{accounts}</fieldset>"
        f"<fieldset><legend>Allow access to</legend>{scopes}</fieldset>"
        f'<button type="submit" name="decision" value="allow"{disabled}>{esc(view.allow_label)}</button>'
        f'<button type="submit" name="decision" value="deny">{esc(view.deny_label)}</button>'
        "</form>"
    )
    return _html(200, _page(view.title, body))


@dataclass(frozen=True, slots=True)
class _Consent:
    pending: _PendingAuthorization
    email: str
    granted: tuple[str, ...]


def _read_consent(
    state: _State, request: _Request, provider: Provider, eligible: Callable[[str, str], bool]
) -> _Consent | _Response:
    """The person's answer on the consent page, or the page or redirect that answers it."""
    form = request.form()
    pending = state.pending.pop(_first(form, "request_id"), None)
    if pending is None or pending.provider != provider or pending.expires_at < time.time():
        return _error_page(400, "This sign-in request has expired", "Start the sign-in again.")
    if _first(form, "decision") != "allow":
        return _Consent(pending, "", ())
    email = _key(_first(form, "account"))
    if not eligible(email, pending.tenant):
        return _error_page(400, "Account not found", "Choose one of the accounts offered.")
    chosen = set(form.get("scope", []))
    return _Consent(pending, email, tuple(s for s in pending.scopes if s in chosen))


def _check_client(
    state: _State, provider: Provider, request: _Request
) -> tuple[_Client, str] | tuple[None, str]:
    client = state.clients.get((provider, request.param("client_id") or ""))
    redirect_uri = request.param("redirect_uri") or ""
    if client is None or redirect_uri not in client.redirect_uris:
        return None, redirect_uri
    return client, redirect_uri


# --------------------------------------------------------------------------------------------------
# Error bodies in each provider's shape


def _google_oauth_error(status: int, error: str, description: str, **extra: str) -> _Response:
    return _json(status, {"error": error, "error_description": description, **extra})


def _google_api_error(
    status: int,
    status_text: str,
    message: str,
    reason: str,
    *,
    item_message: str | None = None,
    domain: str = "global",
    headers: Mapping[str, str] | None = None,
    **item: str,
) -> _Response:
    error_item = {"message": item_message or message, "domain": domain, "reason": reason, **item}
    body = {"error": {"code": status, "message": message, "errors": [error_item], "status": status_text}}
    return _json(status, body, headers)


def _gmail_unauthenticated() -> _Response:
    return _google_api_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
        "or other valid authentication credential.",
        "authError",
        item_message="Invalid Credentials",
        location="Authorization",
        locationType="header",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def _gmail_insufficient_scopes(required: Iterable[str]) -> _Response:
    challenge = " ".join(sorted(required))
    return _google_api_error(
        403,
        "PERMISSION_DENIED",
        "Request had insufficient authentication scopes.",
        "insufficientPermissions",
        item_message="Insufficient Permission",
        headers={
            "WWW-Authenticate": f'Bearer realm="https://accounts.google.com/", error="insufficient_scope", '
            f'scope="{challenge}"'
        },
    )


def _gmail_not_found() -> _Response:
    return _google_api_error(404, "NOT_FOUND", "Requested entity was not found.", "notFound")


def _gmail_bad_request(message: str) -> _Response:
    return _google_api_error(400, "INVALID_ARGUMENT", message, "invalidArgument")


def _aadsts(
    number: int,
    request: _Request,
    *,
    client_id: str = "",
    tenant: str = "",
    redirect_uri: str = "",
) -> _Response:
    spec = _AADSTS.get(number, _AADSTS_FALLBACK)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id, correlation_id = str(uuid.uuid4()), request.correlation_id()
    text = spec.message.format(client_id=client_id, tenant=tenant, redirect_uri=redirect_uri)
    payload: dict[str, object] = {
        "error": spec.error,
        "error_description": f"AADSTS{number}: {text}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}",
        "error_codes": [number],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={number}",
    }
    if spec.suberror:
        payload["suberror"] = spec.suberror
    if spec.claims_challenge:
        policy = {"access_token": {"capolids": {"essential": True, "values": [str(uuid.uuid4())]}}}
        payload["claims"] = json.dumps(policy)
    return _json(spec.status, payload)


def _graph_error(
    status: int, code: str, message: str, request: _Request, headers: Mapping[str, str] | None = None
) -> _Response:
    request_id = str(uuid.uuid4())
    inner = {
        "date": _iso(time.time()),
        "request-id": request_id,
        "client-request-id": request.correlation_id(),
    }
    return _json(
        status,
        {"error": {"code": code, "message": message, "innerError": inner}},
        {"request-id": request_id, **(headers or {})},
    )


def _graph_unauthenticated(request: _Request, message: str) -> _Response:
    challenge = (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return _graph_error(401, "InvalidAuthenticationToken", message, request, {"WWW-Authenticate": challenge})


def _graph_item_not_found(request: _Request) -> _Response:
    return _graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.", request)


def _graph_folder_not_found(request: _Request) -> _Response:
    message = "The specified folder could not be found in the store."
    return _graph_error(404, "ErrorItemNotFound", message, request)


def _graph_access_denied(request: _Request) -> _Response:
    return _graph_error(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.", request
    )


# --------------------------------------------------------------------------------------------------
# Faults rendered per provider and surface


def _fault_response(fault: _Fault, provider: Provider, surface: Surface, request: _Request) -> _Response:
    retry = {"Retry-After": str(fault.retry_after)}
    if fault.kind == "timeout":
        return _Response(0, hold_seconds=fault.hold_seconds)
    if fault.kind == "html_502":
        page = _GOOGLE_502_PAGE if provider == "google" else _MICROSOFT_502_PAGE
        return _Response(502, page.encode(), "text/html; charset=UTF-8")
    if fault.kind.startswith("aadsts:"):
        return _aadsts(
            int(fault.kind.partition(":")[2]), request, client_id=_first(request.form(), "client_id")
        )
    if surface == "token":
        if provider == "google":
            return _google_token_fault(fault.kind, retry)
        return _microsoft_token_fault(fault.kind, retry, request)
    if provider == "google":
        return _gmail_fault(fault.kind, retry)
    return _graph_fault(fault.kind, retry, request)


def _google_token_fault(kind: str, retry: Mapping[str, str]) -> _Response:
    match kind:
        case "invalid_grant":
            return _google_oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        case "invalid_rapt":
            return _google_oauth_error(
                400,
                "invalid_grant",
                "reauth related error (invalid_rapt)",
                error_uri="https://support.google.com/a/answer/9368756",
                error_subtype="invalid_rapt",
            )
        case "invalid_client":
            return _google_oauth_error(401, "invalid_client", "Unauthorized")
        case "domain_policy_403":
            # Google reports a Workspace admin block on the token endpoint as a 400.
            return _google_oauth_error(
                400,
                "admin_policy_enforced",
                "Access to your account data is restricted by policies within your organization.",
            )
        case "rate_limit_429":
            response = _google_oauth_error(429, "rate_limit_exceeded", "Rate Limit Exceeded")
            response.headers.update(retry)
            return response
        case "server_error_500":
            return _google_oauth_error(500, "internal_failure", "Backend Error")
        case _:
            return _google_oauth_error(
                503, "temporarily_unavailable", "The service is currently unavailable."
            )


def _microsoft_token_fault(kind: str, retry: Mapping[str, str], request: _Request) -> _Response:
    number = {
        "invalid_grant": 50173,
        "invalid_client": 7000215,
        "domain_policy_403": 53003,
        "rate_limit_429": 90055,
        "server_error_500": 50000,
    }.get(kind, 90033)
    response = _aadsts(number, request, client_id=_first(request.form(), "client_id"))
    if response.status in (429, 503):
        response.headers.update(retry)
    return response


def _gmail_fault(kind: str, retry: Mapping[str, str]) -> _Response:
    match kind:
        case "unauthorized_401":
            return _gmail_unauthenticated()
        case "insufficient_scopes_403":
            return _gmail_insufficient_scopes([GMAIL_SEND, GMAIL_READONLY])
        case "domain_policy_403":
            return _google_api_error(
                403,
                "PERMISSION_DENIED",
                "The domain administrators have disabled Gmail apps.",
                "domainPolicy",
            )
        case "rate_limit_429":
            until = _iso(time.time() + int(retry["Retry-After"]))
            message = f"User-rate limit exceeded.  Retry after {until}"
            return _google_api_error(
                429, "RESOURCE_EXHAUSTED", message, "rateLimitExceeded", domain="usageLimits", headers=retry
            )
        case "server_error_500":
            return _google_api_error(500, "INTERNAL", "Backend Error", "backendError")
        case _:
            return _google_api_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", "backendError"
            )


def _graph_fault(kind: str, retry: Mapping[str, str], request: _Request) -> _Response:
    match kind:
        case "unauthorized_401":
            return _graph_unauthenticated(request, "Lifetime validation failed, the token is expired.")
        case "insufficient_scopes_403":
            return _graph_access_denied(request)
        case "domain_policy_403":
            return _graph_error(403, "ErrorAccessDenied", "Access to OData is disabled.", request)
        case "rate_limit_429":
            message = "Application is over its MailboxConcurrency limit."
            return _graph_error(429, "ApplicationThrottled", message, request, retry)
        case "server_error_500":
            message = "An internal server error occurred. The operation failed."
            return _graph_error(500, "ErrorInternalServerError", message, request)
        case _:
            return _graph_error(503, "serviceNotAvailable", "Service unavailable.", request, retry)


# --------------------------------------------------------------------------------------------------
# Google: OAuth 2.0 and OpenID Connect


class _GoogleIdentity:
    def __init__(self, state: _State, key: _SigningKey) -> None:
        self._state = state
        self._key = key

    def routes(self) -> list[_Route]:
        return [
            _route("GET", r"/google/o/oauth2/v2/auth", self.authorize),
            _route("POST", r"/google/o/oauth2/v2/auth", self.consent),
            _route("POST", r"/google/token", self.token),
            _route("POST", r"/google/revoke", self.revoke),
            _route("GET", r"/google/oauth2/v1/certs", self.x509_certs),
            _route("GET", r"/google/oauth2/v3/certs", self.jwks),
            _route("GET", r"/google/\.well-known/openid-configuration", self.discovery),
        ]

    def discovery(self, request: _Request, match: re.Match[str]) -> _Response:
        base = f"{self._state.base_url}/google"
        return _json(
            200,
            {
                "issuer": GOOGLE_ISSUER,
                "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
                "token_endpoint": f"{base}/token",
                "revocation_endpoint": f"{base}/revoke",
                "jwks_uri": f"{base}/oauth2/v3/certs",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "code_challenge_methods_supported": ["plain", "S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            },
        )

    def jwks(self, request: _Request, match: re.Match[str]) -> _Response:
        return _json(200, {"keys": [self._key.jwk()]})

    def x509_certs(self, request: _Request, match: re.Match[str]) -> _Response:
        return _json(200, {self._key.kid: self._key.certificate_pem()})

    def authorize(self, request: _Request, match: re.Match[str]) -> _Response:
        client, redirect_uri = _check_client(self._state, "google", request)
        if client is None:
            if ("google", request.param("client_id") or "") not in self._state.clients:
                return _error_page(401, "Error 401: invalid_client", "The OAuth client was not found.")
            detail = f"redirect_uri={redirect_uri} is not registered for this client."
            return _error_page(400, "Error 400: redirect_uri_mismatch", detail)
        if request.param("response_type") != "code":
            return _error_page(
                400, "Error 400: invalid_request", "Invalid response_type: only code is supported."
            )
        scopes = _unique(_GOOGLE_SCOPE_ALIASES.get(s, s) for s in (request.param("scope") or "").split())
        if not scopes:
            return _error_page(400, "Error 400: invalid_request", "Missing required parameter: scope")
        challenge = request.param("code_challenge")
        method = request.param("code_challenge_method") or "plain"
        if challenge and method not in ("S256", "plain"):
            return _error_page(400, "Error 400: invalid_request", "Invalid code_challenge_method.")
        request_id = secrets.token_urlsafe(24)
        self._state.pending[request_id] = _PendingAuthorization(
            provider="google",
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=request.param("state"),
            nonce=request.param("nonce"),
            code_challenge=challenge,
            code_challenge_method=method,
            tenant="",
            offline=request.param("access_type") == "offline",
            force_consent="consent" in (request.param("prompt") or "").split(),
            include_granted_scopes=request.param("include_granted_scopes") == "true",
            client_info=False,
            response_mode="query",
            expires_at=time.time() + _PENDING_LIFETIME,
        )
        accounts = [
            (key, f"{account.name} <{account.email}>" if account.name else account.email)
            for key, account in self._state.google_accounts.items()
        ]
        hint = _key(request.param("login_hint") or "")
        view = _ConsentView(
            title="Sign in - Google Accounts",
            heading="Sign in with Google",
            client_id=client.client_id,
            action=request.path,
            request_id=request_id,
            accounts=accounts,
            selected=hint if hint in self._state.google_accounts else next(iter(dict(accounts)), None),
            scopes=scopes,
            allow_label="Allow",
            deny_label="Deny",
        )
        return _consent_page(view)

    def consent(self, request: _Request, match: re.Match[str]) -> _Response:
        answer = _read_consent(
            self._state, request, "google", lambda email, _tenant: email in self._state.google_accounts
        )
        if isinstance(answer, _Response):
            return answer
        pending = answer.pending
        if not answer.granted:
            return _answer_client(pending, {"error": "access_denied", "state": pending.state})
        consent_key: tuple[Provider, str, str] = ("google", pending.client_id, answer.email)
        granted = frozenset(answer.granted)
        if pending.include_granted_scopes:
            granted |= self._state.consents.get(consent_key, frozenset())
        # Google hands out a refresh token on first consent, or again only when prompt=consent.
        issue_refresh_token = pending.offline and (
            pending.force_consent
            or not self._state.has_live_refresh_token("google", pending.client_id, answer.email)
        )
        self._state.consents[consent_key] = granted
        code = "4/0A" + secrets.token_urlsafe(40)
        self._state.codes[code] = _AuthCode(
            provider="google",
            client_id=pending.client_id,
            email=answer.email,
            scopes=granted,
            redirect_uri=pending.redirect_uri,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            nonce=pending.nonce,
            issue_refresh_token=issue_refresh_token,
            expires_at=time.time() + _CODE_LIFETIME,
        )
        params = {
            "state": pending.state,
            "iss": GOOGLE_ISSUER,
            "code": code,
            "scope": " ".join(sorted(granted)),
            "authuser": "0",
            "prompt": "consent",
        }
        return _answer_client(pending, params)

    def token(self, request: _Request, match: re.Match[str]) -> _Response:
        form = request.form()
        client_id, secret = _client_credentials(request, form)
        grant_type = _first(form, "grant_type")
        if grant_type == "authorization_code":
            record: _AuthCode | _Token | None = self._state.codes.get(_first(form, "code"))
        elif grant_type == "refresh_token":
            record = self._state.refresh_tokens.get(_first(form, "refresh_token"))
        else:
            return _google_oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        if record is not None and record.provider == "google":
            fault = self._state.take_fault(record.email, "token")
            if fault is not None:
                return _fault_response(fault, "google", "token", request)
        client = self._state.clients.get(("google", client_id))
        if client is None:
            return _google_oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if not hmac.compare_digest(secret, client.client_secret):
            return _google_oauth_error(401, "invalid_client", "Unauthorized")
        if grant_type == "authorization_code":
            return self._redeem(client, form, record if isinstance(record, _AuthCode) else None)
        return self._refresh(client, form, record if isinstance(record, _Token) else None)

    def _redeem(self, client: _Client, form: Mapping[str, list[str]], code: _AuthCode | None) -> _Response:
        if code is None or code.provider != "google" or code.client_id != client.client_id:
            return _google_oauth_error(400, "invalid_grant", "Malformed auth code.")
        if code.redeemed or code.expires_at < time.time():
            return _google_oauth_error(400, "invalid_grant", "Bad Request")
        if _first(form, "redirect_uri") != code.redirect_uri:
            return _google_oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if code.code_challenge:
            verifier = _first(form, "code_verifier")
            if not verifier:
                return _google_oauth_error(400, "invalid_grant", "Missing code verifier.")
            if not _pkce_matches(code.code_challenge, code.code_challenge_method, verifier):
                return _google_oauth_error(400, "invalid_grant", "Invalid code verifier.")
        code.redeemed = True
        refresh_token = None
        if code.issue_refresh_token:
            grant = _Token("google", client.client_id, code.email, code.scopes)
            refresh_token = self._state.issue(self._state.refresh_tokens, "1//0", grant)
        return self._token_response(client, code.email, code.scopes, code.nonce, refresh_token)

    def _refresh(self, client: _Client, form: Mapping[str, list[str]], grant: _Token | None) -> _Response:
        if grant is None or grant.provider != "google" or grant.client_id != client.client_id:
            return _google_oauth_error(400, "invalid_grant", "Bad Request")
        if grant.revoked:
            return _google_oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        scopes = grant.scopes
        requested = frozenset(_GOOGLE_SCOPE_ALIASES.get(s, s) for s in _first(form, "scope").split())
        if requested:
            if not requested <= grant.scopes:
                invalid = ", ".join(sorted(requested - grant.scopes))
                return _google_oauth_error(
                    400, "invalid_scope", f"Some requested scopes were invalid. {{invalid=[{invalid}]}}"
                )
            scopes = requested
        return self._token_response(client, grant.email, scopes, None, None)

    def _token_response(
        self,
        client: _Client,
        email: str,
        scopes: frozenset[str],
        nonce: str | None,
        refresh_token: str | None,
    ) -> _Response:
        now = time.time()
        access = _Token("google", client.client_id, email, scopes, now + _GOOGLE_TOKEN_LIFETIME)
        access_token = self._state.issue(self._state.access_tokens, "ya29.", access)
        body: dict[str, object] = {"access_token": access_token, "expires_in": _GOOGLE_TOKEN_LIFETIME}
        if refresh_token:
            body["refresh_token"] = refresh_token
        body |= {"scope": " ".join(sorted(scopes)), "token_type": "Bearer"}
        if "openid" in scopes:
            body["id_token"] = self._id_token(client, email, scopes, access_token, nonce, now)
        return _json(200, body)

    def _id_token(
        self,
        client: _Client,
        email: str,
        scopes: frozenset[str],
        access_token: str,
        nonce: str | None,
        now: float,
    ) -> str:
        account = self._state.google_accounts[email]
        digest = hashlib.sha256(access_token.encode()).digest()
        claims: dict[str, object] = {
            "iss": GOOGLE_ISSUER,
            "azp": client.client_id,
            "aud": client.client_id,
            "sub": account.sub,
            "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode(),
            "iat": int(now),
            "exp": int(now) + _ID_TOKEN_LIFETIME,
        }
        if GOOGLE_EMAIL in scopes:
            claims |= {"email": account.email, "email_verified": True}
            domain = account.email.rpartition("@")[2].lower()
            if domain not in ("gmail.com", "googlemail.com"):
                claims["hd"] = domain  # Workspace accounts carry their hosted domain
        if GOOGLE_PROFILE in scopes and account.name:
            claims["name"] = account.name
        if nonce:
            claims["nonce"] = nonce
        return self._key.sign(claims)

    def revoke(self, request: _Request, match: re.Match[str]) -> _Response:
        token = _first(request.form(), "token") or (request.param("token") or "")
        record = self._state.refresh_tokens.get(token) or self._state.access_tokens.get(token)
        if record is None or record.provider != "google" or not record.usable(time.time()):
            return _google_oauth_error(400, "invalid_token", "Token expired or revoked")
        for store in (self._state.refresh_tokens, self._state.access_tokens):
            for other in store.values():
                if (other.provider, other.client_id, other.email) == (
                    "google",
                    record.client_id,
                    record.email,
                ):
                    other.revoked = True
        self._state.consents.pop(("google", record.client_id, record.email), None)
        return _json(200, {})


# --------------------------------------------------------------------------------------------------
# Microsoft identity platform (v2.0 endpoints)


class _MicrosoftIdentity:
    def __init__(self, state: _State, key: _SigningKey) -> None:
        self._state = state
        self._key = key

    def routes(self) -> list[_Route]:
        tenant = r"/microsoft/(?P<tenant>[^/]+)"
        return [
            _route("GET", tenant + r"/v2\.0/\.well-known/openid-configuration", self.discovery),
            _route("GET", tenant + r"/discovery/v2\.0/keys", self.jwks),
            _route("GET", tenant + r"/oauth2/v2\.0/authorize", self.authorize),
            _route("POST", tenant + r"/oauth2/v2\.0/authorize", self.consent),
            _route("POST", tenant + r"/oauth2/v2\.0/token", self.token),
        ]

    def _tenant_id(self, tenant: str) -> str | None:
        """The tenant a path segment names: an alias, a tenant id, or a verified domain."""
        tenant = tenant.lower()
        if tenant in _MICROSOFT_TENANT_ALIASES:
            return tenant
        for account in self._state.microsoft_accounts.values():
            if tenant in (account.tid, account.email.rpartition("@")[2].lower()):
                return account.tid
        return None

    def _eligible(self, email: str, tenant: str) -> bool:
        account = self._state.microsoft_accounts.get(email)
        tenant_id = self._tenant_id(tenant)
        return account is not None and tenant_id in (account.tid, "common", "organizations")

    def discovery(self, request: _Request, match: re.Match[str]) -> _Response:
        tenant = match["tenant"]
        tenant_id = self._tenant_id(tenant)
        if tenant_id is None:
            return _aadsts(90002, request, tenant=tenant)
        base = f"{self._state.base_url}/microsoft/{tenant}"
        issuer_tenant = "{tenantid}" if tenant_id in _MICROSOFT_TENANT_ALIASES else tenant_id
        return _json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"https://login.microsoftonline.com/{issuer_tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            },
        )

    def jwks(self, request: _Request, match: re.Match[str]) -> _Response:
        return _json(200, {"keys": [self._key.jwk()]})

    def authorize(self, request: _Request, match: re.Match[str]) -> _Response:
        tenant = match["tenant"]
        client, redirect_uri = _check_client(self._state, "microsoft", request)
        client_id = request.param("client_id") or ""
        if client is None:
            if ("microsoft", client_id) not in self._state.clients:
                body = json.loads(_aadsts(700016, request, client_id=client_id, tenant=tenant).body)
                return _error_page(
                    400, "Sorry, but we're having trouble signing you in.", body["error_description"]
                )
            body = json.loads(_aadsts(50011, request, client_id=client_id, redirect_uri=redirect_uri).body)
            return _error_page(
                400, "Sorry, but we're having trouble signing you in.", body["error_description"]
            )
        if self._tenant_id(tenant) is None:
            return _error_page(
                400, "Sorry, but we're having trouble signing you in.", f"Tenant '{tenant}' not found."
            )
        if request.param("response_type") != "code":
            return _redirect(
                redirect_uri, {"error": "unsupported_response_type", "state": request.param("state")}
            )
        scopes = _unique(s.removeprefix(_GRAPH_RESOURCE) for s in (request.param("scope") or "").split())
        request_id = secrets.token_urlsafe(24)
        challenge = request.param("code_challenge")
        self._state.pending[request_id] = _PendingAuthorization(
            provider="microsoft",
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=request.param("state"),
            nonce=request.param("nonce"),
            code_challenge=challenge,
            code_challenge_method=request.param("code_challenge_method") or "plain",
            tenant=tenant,
            offline="offline_access" in scopes,
            force_consent=True,
            include_granted_scopes=False,
            client_info=request.param("client_info") == "1",
            response_mode=request.param("response_mode") or "query",
            expires_at=time.time() + _PENDING_LIFETIME,
        )
        accounts = [
            (key, f"{account.name} <{account.email}>" if account.name else account.email)
            for key, account in self._state.microsoft_accounts.items()
            if self._eligible(key, tenant)
        ]
        hint = _key(request.param("login_hint") or "")
        view = _ConsentView(
            title="Sign in to your account",
            heading="Permissions requested",
            client_id=client.client_id,
            action=request.path,
            request_id=request_id,
            accounts=accounts,
            selected=hint if hint in dict(accounts) else next(iter(dict(accounts)), None),
            scopes=scopes,
            allow_label="Accept",
            deny_label="Cancel",
        )
        return _consent_page(view)

    def consent(self, request: _Request, match: re.Match[str]) -> _Response:
        answer = _read_consent(self._state, request, "microsoft", self._eligible)
        if isinstance(answer, _Response):
            return answer
        pending = answer.pending
        if not answer.granted:
            return _answer_client(
                pending,
                {
                    "error": "access_denied",
                    "error_subcode": "cancel",
                    "error_description": "AADSTS65004: User declined to consent to access the app.",
                    "state": pending.state,
                },
            )
        granted = frozenset(answer.granted)
        self._state.consents[("microsoft", pending.client_id, answer.email)] = granted
        code = "1.A" + secrets.token_urlsafe(60)
        self._state.codes[code] = _AuthCode(
            provider="microsoft",
            client_id=pending.client_id,
            email=answer.email,
            scopes=granted,
            redirect_uri=pending.redirect_uri,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            nonce=pending.nonce,
            issue_refresh_token="offline_access" in granted,
            expires_at=time.time() + _CODE_LIFETIME,
        )
        account = self._state.microsoft_accounts[answer.email]
        params = {
            "code": code,
            "client_info": self._client_info(account) if pending.client_info else None,
            "state": pending.state,
            "session_state": str(uuid.uuid4()),
        }
        return _answer_client(pending, params)

    def token(self, request: _Request, match: re.Match[str]) -> _Response:
        tenant = match["tenant"]
        form = request.form()
        client_id, secret = _client_credentials(request, form)
        grant_type = _first(form, "grant_type")
        if grant_type == "authorization_code":
            record: _AuthCode | _Token | None = self._state.codes.get(_first(form, "code"))
        elif grant_type == "refresh_token":
            record = self._state.refresh_tokens.get(_first(form, "refresh_token"))
        else:
            return _aadsts(70003, request)
        if record is not None and record.provider == "microsoft":
            fault = self._state.take_fault(record.email, "token")
            if fault is not None:
                return _fault_response(fault, "microsoft", "token", request)
        if self._tenant_id(tenant) is None:
            return _aadsts(90002, request, tenant=tenant)
        client = self._state.clients.get(("microsoft", client_id))
        if client is None:
            return _aadsts(700016, request, client_id=client_id, tenant=tenant)
        if not secret:
            return _aadsts(7000218, request, client_id=client_id)
        if not hmac.compare_digest(secret, client.client_secret):
            return _aadsts(7000215, request, client_id=client_id)
        requested = frozenset(s.removeprefix(_GRAPH_RESOURCE) for s in _first(form, "scope").split())
        if grant_type == "authorization_code":
            return self._redeem(
                client, form, record if isinstance(record, _AuthCode) else None, requested, request
            )
        return self._refresh(client, record if isinstance(record, _Token) else None, requested, form, request)

    def _redeem(
        self,
        client: _Client,
        form: Mapping[str, list[str]],
        code: _AuthCode | None,
        requested: frozenset[str],
        request: _Request,
    ) -> _Response:
        if code is None or code.provider != "microsoft" or code.client_id != client.client_id:
            return _aadsts(70000, request)
        if code.expires_at < time.time():
            return _aadsts(70008, request)
        if code.redeemed:
            return _aadsts(54005, request)
        if _first(form, "redirect_uri") != code.redirect_uri:
            return _aadsts(
                50011, request, client_id=client.client_id, redirect_uri=_first(form, "redirect_uri")
            )
        if code.code_challenge and not _pkce_matches(
            code.code_challenge, code.code_challenge_method, _first(form, "code_verifier")
        ):
            return _aadsts(50148, request)
        code.redeemed = True
        scopes = (code.scopes & requested) | (code.scopes & _OIDC_SCOPES) if requested else code.scopes
        return self._token_response(
            client, code.email, code.scopes, scopes, code.nonce, form, code.issue_refresh_token
        )

    def _refresh(
        self,
        client: _Client,
        grant: _Token | None,
        requested: frozenset[str],
        form: Mapping[str, list[str]],
        request: _Request,
    ) -> _Response:
        if grant is None or grant.provider != "microsoft" or grant.client_id != client.client_id:
            return _aadsts(9002313, request)
        if grant.revoked:
            return _aadsts(50173, request)
        if not (requested - _OIDC_SCOPES) <= grant.scopes:
            return _aadsts(65001, request, client_id=client.client_id)
        scopes = (requested or grant.scopes) & (grant.scopes | _OIDC_SCOPES)
        # Microsoft rotates: every refresh answers with a new refresh token (the old one keeps working
        # until it expires, so a client must persist the newest).
        return self._token_response(client, grant.email, grant.scopes, scopes, None, form, True)

    def _token_response(
        self,
        client: _Client,
        email: str,
        granted: frozenset[str],
        scopes: frozenset[str],
        nonce: str | None,
        form: Mapping[str, list[str]],
        issue_refresh_token: bool,
    ) -> _Response:
        now = time.time()
        account = self._state.microsoft_accounts[email]
        api_scopes = frozenset(s for s in scopes if s != "offline_access")
        access = _Token("microsoft", client.client_id, email, api_scopes, now + _MICROSOFT_TOKEN_LIFETIME)
        body: dict[str, object] = {
            "token_type": "Bearer",
            "scope": " ".join(sorted(api_scopes)),
            "expires_in": _MICROSOFT_TOKEN_LIFETIME,
            "ext_expires_in": _MICROSOFT_TOKEN_LIFETIME,
            "access_token": self._state.issue(self._state.access_tokens, "EwB", access),
        }
        if issue_refresh_token:
            grant = _Token("microsoft", client.client_id, email, granted)
            body["refresh_token"] = self._state.issue(self._state.refresh_tokens, "0.A", grant)
        if "openid" in granted:
            body["id_token"] = self._id_token(client, account, granted, nonce, now)
        if _first(form, "client_info") == "1":
            body["client_info"] = self._client_info(account)
        return _json(200, body)

    def _id_token(
        self,
        client: _Client,
        account: MicrosoftAccount,
        scopes: frozenset[str],
        nonce: str | None,
        now: float,
    ) -> str:
        # The subject is pairwise: the same person has a different sub in each application.
        pairwise = hashlib.sha256(f"{account.oid}:{client.client_id}".encode()).digest()
        claims: dict[str, object] = {
            "ver": "2.0",
            "iss": f"https://login.microsoftonline.com/{account.tid}/v2.0",
            "sub": base64.urlsafe_b64encode(pairwise).rstrip(b"=").decode(),
            "aud": client.client_id,
            "exp": int(now) + _ID_TOKEN_LIFETIME,
            "iat": int(now),
            "nbf": int(now),
            "oid": account.oid,
            "tid": account.tid,
            "preferred_username": account.email,
        }
        if "profile" in scopes:
            claims["name"] = account.name or account.email
        if "email" in scopes:
            claims["email"] = account.email
        if nonce:
            claims["nonce"] = nonce
        return self._key.sign(claims)

    @staticmethod
    def _client_info(account: MicrosoftAccount) -> str:
        info = json.dumps({"uid": account.oid, "utid": account.tid}).encode()
        return base64.urlsafe_b64encode(info).rstrip(b"=").decode()


# --------------------------------------------------------------------------------------------------
# Gmail API


class _GmailQuery:
    """The part of Gmail's search syntax a mail client needs: rfc822msgid:, after:, before:, in:, label:."""

    def __init__(self, text: str) -> None:
        self.message_id: str | None = None
        self.after = -math.inf
        self.before = math.inf
        self.labels: set[str] = set()
        for term in shlex.split(text):
            name, sep, value = term.partition(":")
            name = name.lower()
            if not sep or not value:
                raise ValueError(f"search term {term!r} is not supported by the sandbox")
            if name == "rfc822msgid":
                self.message_id = value.strip("<>")
            elif name in ("after", "before"):
                setattr(self, name, self._instant(value))
            elif name in ("in", "label"):
                self.labels.add(value.upper())
            elif name == "is" and value.lower() == "unread":
                self.labels.add("UNREAD")
            else:
                raise ValueError(f"search term {term!r} is not supported by the sandbox")

    @staticmethod
    def _instant(value: str) -> float:
        if value.isdigit():
            return float(value)
        try:
            return dt.datetime.strptime(value, "%Y/%m/%d").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise ValueError(f"date {value!r} is neither epoch seconds nor YYYY/MM/DD") from None

    def matches(self, message: _GmailMessage) -> bool:
        return (
            (self.message_id is None or message.message_id.strip("<>") == self.message_id)
            and self.after <= message.internal_date < self.before
            and self.labels <= set(message.label_ids)
        )


def _gmail_payload(
    part: EmailMessage, part_id: str, header_filter: frozenset[str] | None
) -> dict[str, object]:
    headers = [
        {"name": name, "value": str(value)}
        for name, value in part.items()
        if header_filter is None or name.lower() in header_filter
    ]
    payload: dict[str, object] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": headers,
    }
    if header_filter is not None:  # format=metadata: headers only
        return payload
    if part.get_content_maintype() == "multipart":
        payload["body"] = {"size": 0}
        children = cast(list[EmailMessage], part.get_payload())
        payload["parts"] = [
            _gmail_payload(child, f"{part_id}.{index}" if part_id else str(index), None)
            for index, child in enumerate(children)
        ]
    else:
        data = _part_bytes(part)
        payload["body"] = {"size": len(data), "data": _b64url(data).rstrip("=")}
    return payload


class _GmailApi:
    def __init__(self, state: _State) -> None:
        self._state = state

    def routes(self) -> list[_Route]:
        user = r"/gmail/v1/users/(?P<user>[^/]+)"
        return [
            _route("GET", user + r"/profile", self.profile),
            _route("POST", user + r"/messages/send", self.send),
            _route("GET", user + r"/messages", self.list_messages),
            _route("GET", user + r"/messages/(?P<id>[^/]+)", self.get_message),
            _route("GET", user + r"/history", self.history),
        ]

    def deliver(
        self, email: str, raw: bytes, thread_id: str | None, labels: tuple[str, ...]
    ) -> _GmailMessage:
        mailbox = self._state.gmail[email]
        parsed = _parse_mime(raw)
        message_id = str(parsed["Message-ID"] or "").strip()
        if thread_id is None:
            # Gmail threads an incoming reply with the message it answers.
            referenced = set(_message_ids(str(parsed["In-Reply-To"] or "")))
            referenced |= set(_message_ids(str(parsed["References"] or "")))
            thread_id = next(
                (m.thread_id for m in mailbox.messages.values() if m.message_id in referenced), None
            )
        new_id = secrets.token_hex(8)
        mailbox.history_id += 1
        message = _GmailMessage(
            new_id, thread_id or new_id, raw, labels, time.time(), mailbox.history_id, message_id
        )
        mailbox.messages[new_id] = message
        mailbox.history.append(_HistoryRecord(mailbox.history_id, new_id, message.internal_date))
        return message

    def _caller(
        self, request: _Request, match: re.Match[str], surface: Surface, required: frozenset[str]
    ) -> _GmailMailbox | _Response:
        token = self._state.access_tokens.get(request.bearer_token() or "")
        if token is None or token.provider != "google":
            return _gmail_unauthenticated()
        fault = self._state.take_fault(token.email, surface)
        if fault is not None:
            return _fault_response(fault, "google", surface, request)
        if not token.usable(time.time()):
            return _gmail_unauthenticated()
        if not token.scopes & required:
            return _gmail_insufficient_scopes(required)
        user = unquote(match["user"])
        if user != "me" and _key(user) != token.email:
            return _google_api_error(403, "PERMISSION_DENIED", f"Delegation denied for {user}", "forbidden")
        return self._state.gmail[token.email]

    def profile(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, match, "read", _GMAIL_PROFILE_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        return _json(
            200,
            {
                "emailAddress": self._state.google_accounts[mailbox.email].email,
                "messagesTotal": len(mailbox.messages),
                "threadsTotal": len({m.thread_id for m in mailbox.messages.values()}),
                "historyId": str(mailbox.history_id),
            },
        )

    def send(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, match, "send", _GMAIL_SEND_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _gmail_bad_request("Invalid JSON payload received.")
        raw_text = body.get("raw") if isinstance(body, dict) else None
        if not isinstance(raw_text, str) or not raw_text:
            return _gmail_bad_request(
                "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
            )
        try:
            raw = _b64url_decode(raw_text)
        except (binascii.Error, ValueError):
            return _gmail_bad_request("Invalid value for ByteString: raw")
        if not _has_recipients(_parse_mime(raw)):
            return _gmail_bad_request("Recipient address required")
        raw, _ = _ensure_message_id(raw, "mail.gmail.com")
        thread_id = body.get("threadId")
        message = self.deliver(
            mailbox.email, raw, thread_id if isinstance(thread_id, str) else None, ("SENT",)
        )
        if not isinstance(thread_id, str):
            message.thread_id = message.id  # an API send starts a thread unless threadId names one
        mailbox.sent.append(raw)
        return _json(
            200, {"id": message.id, "threadId": message.thread_id, "labelIds": list(message.label_ids)}
        )

    def list_messages(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, match, "read", _GMAIL_READ_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        try:
            query = _GmailQuery(request.param("q") or "")
            page_size = min(max(int(request.param("maxResults") or 100), 1), 500)
            offset = int(request.param("pageToken") or 0)
        except ValueError as error:
            return _gmail_bad_request(str(error))
        labels = set(request.query.get("labelIds", []))
        found = [
            m for m in reversed(mailbox.messages.values()) if query.matches(m) and labels <= set(m.label_ids)
        ]
        page = found[offset : offset + page_size]
        body: dict[str, object] = {}
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + page_size < len(found):
            body["nextPageToken"] = str(offset + page_size)
        body["resultSizeEstimate"] = len(found)
        return _json(200, body)

    def get_message(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, match, "read", _GMAIL_READ_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        message = mailbox.messages.get(unquote(match["id"]))
        if message is None:
            return _gmail_not_found()
        form = request.param("format") or "full"
        if form not in ("minimal", "full", "raw", "metadata"):
            return _gmail_bad_request(f"Invalid value at 'format' ({form})")
        parsed = _parse_mime(message.raw)
        body: dict[str, object] = {
            "id": message.id,
            "threadId": message.thread_id,
            "labelIds": list(message.label_ids),
            "snippet": _preview(parsed, 200),
            "sizeEstimate": len(message.raw),
            "historyId": str(message.history_id),
            "internalDate": str(int(message.internal_date * 1000)),
        }
        if form == "raw":
            body["raw"] = _b64url(message.raw)
        elif form == "metadata":
            wanted = request.query.get("metadataHeaders")
            header_filter = (
                frozenset(h.lower() for h in wanted) if wanted else frozenset(k.lower() for k in parsed)
            )
            body["payload"] = _gmail_payload(parsed, "", header_filter)
        elif form == "full":
            body["payload"] = _gmail_payload(parsed, "", None)
        return _json(200, body)

    def history(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, match, "read", _GMAIL_READ_SCOPES | {GMAIL_METADATA})
        if isinstance(mailbox, _Response):
            return mailbox
        try:
            start = int(request.param("startHistoryId") or "")
            page_size = min(max(int(request.param("maxResults") or 100), 1), 500)
            offset = int(request.param("pageToken") or 0)
        except ValueError:
            return _gmail_bad_request("Invalid startHistoryId, maxResults or pageToken")
        horizon = time.time() - self._state.gmail_history_retention
        while mailbox.history and mailbox.history[0].at < horizon:
            mailbox.history_floor = max(mailbox.history_floor, mailbox.history.pop(0).id)
        if start < mailbox.history_floor:
            return _gmail_not_found()
        types = request.query.get("historyTypes")
        label = request.param("labelId")
        records = [
            r
            for r in mailbox.history
            if r.id > start
            and (not types or "messageAdded" in types)
            and (label is None or label in mailbox.messages[r.message_id].label_ids)
        ]
        page = records[offset : offset + page_size]
        body: dict[str, object] = {}
        if page:
            body["history"] = [self._history_record(mailbox, r) for r in page]
        if offset + page_size < len(records):
            body["nextPageToken"] = str(offset + page_size)
        body["historyId"] = str(mailbox.history_id)
        return _json(200, body)

    @staticmethod
    def _history_record(mailbox: _GmailMailbox, record: _HistoryRecord) -> dict[str, object]:
        message = mailbox.messages[record.message_id]
        summary = {"id": message.id, "threadId": message.thread_id}
        return {
            "id": str(record.id),
            "messages": [summary],
            "messagesAdded": [{"message": {**summary, "labelIds": list(message.label_ids)}}],
        }


# --------------------------------------------------------------------------------------------------
# Microsoft Graph (mail)

_GRAPH_FOLDERS: Final = MappingProxyType({"inbox": "inbox", "sentitems": "sentitems"})
_GRAPH_PROPERTIES: Final = frozenset(
    [
        "id", "createdDateTime", "lastModifiedDateTime", "receivedDateTime", "sentDateTime", "hasAttachments",
        "internetMessageId", "subject", "bodyPreview", "importance", "parentFolderId", "conversationId",
        "isRead", "isDraft", "body", "sender", "from", "toRecipients", "ccRecipients", "bccRecipients",
        "replyTo", "internetMessageHeaders",
    ]
)  # fmt: skip
_GRAPH_FILTER: Final = re.compile(r"\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*")


def _graph_addresses(message: EmailMessage, header: str) -> list[dict[str, object]]:
    values = [str(v) for v in message.get_all(header, [])]
    return [
        {"emailAddress": {"name": name or address, "address": address}}
        for name, address in getaddresses(values)
    ]


class _GraphApi:
    def __init__(self, state: _State) -> None:
        self._state = state

    def routes(self) -> list[_Route]:
        me = r"/graph/v1\.0/me"
        folder = me + r"/mailFolders/(?P<folder>[^/]+)/messages"
        return [
            _route("GET", me, self.me),
            _route("POST", me + r"/sendMail", self.send_mail),
            _route("GET", me + r"/messages", self.list_messages),
            _route("GET", folder, self.list_messages),
            _route("GET", folder + r"/delta", self.delta),
            _route("GET", me + r"/messages/(?P<id>[^/]+)", self.get_message),
            _route("GET", me + r"/messages/(?P<id>[^/]+)/\$value", self.get_mime),
        ]

    def deliver(self, email: str, raw: bytes, folder: str, conversation_id: str | None) -> _GraphMessage:
        mailbox = self._state.graph[email]
        parsed = _parse_mime(raw)
        message_id = str(parsed["Message-ID"] or "").strip()
        if conversation_id is None:
            referenced = set(_message_ids(str(parsed["In-Reply-To"] or "")))
            referenced |= set(_message_ids(str(parsed["References"] or "")))
            conversation_id = next(
                (m.conversation_id for m in mailbox.messages.values() if m.message_id in referenced), None
            )
        mailbox.seq += 1
        message = _GraphMessage(
            id="AAMkAG" + secrets.token_urlsafe(48),
            conversation_id=conversation_id or "AAQkAG" + secrets.token_urlsafe(32),
            raw=raw,
            folder=folder,
            received=time.time(),
            seq=mailbox.seq,
            message_id=message_id,
            is_read=folder == "sentitems",
        )
        mailbox.messages[message.id] = message
        return message

    def _caller(
        self, request: _Request, surface: Surface, required: frozenset[str]
    ) -> _GraphMailbox | _Response:
        bearer = request.bearer_token()
        token = self._state.access_tokens.get(bearer or "")
        if token is None or token.provider != "microsoft":
            return _graph_unauthenticated(
                request, "Access token is empty." if not bearer else "Access token validation failure."
            )
        fault = self._state.take_fault(token.email, surface)
        if fault is not None:
            return _fault_response(fault, "microsoft", surface, request)
        if not token.usable(time.time()):
            return _graph_unauthenticated(request, "Lifetime validation failed, the token is expired.")
        if not token.scopes & required:
            return _graph_access_denied(request)
        return self._state.graph[token.email]

    def _context(self, fragment: str) -> str:
        return f"{self._state.base_url}/graph/v1.0/$metadata#{fragment}"

    def me(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, "read", _GRAPH_ME_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        account = self._state.microsoft_accounts[mailbox.email]
        given, _, surname = account.name.partition(" ")
        return _json(
            200,
            {
                "@odata.context": self._context("users/$entity"),
                "businessPhones": [],
                "displayName": account.name or account.email,
                "givenName": given or None,
                "jobTitle": None,
                "mail": account.email,
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": None,
                "surname": surname or None,
                "userPrincipalName": account.email,
                "id": account.oid,
            },
        )

    def send_mail(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, "send", _GRAPH_SEND_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "text/plain":
            message = "The sandbox accepts sendMail as MIME only: Content-Type text/plain, base64 body."
            return _graph_error(400, "ErrorInvalidRequest", message, request)
        try:
            raw = base64.b64decode(request.body.strip(), validate=True)
        except binascii.Error:
            return _graph_error(
                400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.", request
            )
        if not _has_recipients(_parse_mime(raw)):
            return _graph_error(
                400, "ErrorInvalidRecipients", "At least one recipient is not valid.", request
            )
        raw, _ = _ensure_message_id(raw, "sandbox.prod.outlook.com")
        self.deliver(mailbox.email, raw, "sentitems", None)
        mailbox.sent.append(raw)
        return _Response(202)

    def _select(self, request: _Request) -> frozenset[str] | _Response | None:
        text = request.param("$select")
        if not text:
            return None
        select = frozenset(p.strip() for p in text.split(",") if p.strip())
        unknown = sorted(select - _GRAPH_PROPERTIES)
        if unknown:
            message = f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.message'."
            return _graph_error(400, "RequestBroker--ParseUri", message, request)
        return select

    def _represent(
        self, mailbox: _GraphMailbox, message: _GraphMessage, select: frozenset[str] | None
    ) -> dict[str, object]:
        parsed = _parse_mime(message.raw)
        sender = _graph_addresses(parsed, "From")
        try:
            sent = (
                parsedate_to_datetime(str(parsed["Date"])).timestamp() if parsed["Date"] else message.received
            )
        except (TypeError, ValueError):
            sent = message.received
        content_type, content = _text_body(parsed)
        received = _iso(message.received)
        full: dict[str, object] = {
            "id": message.id,
            "createdDateTime": received,
            "lastModifiedDateTime": received,
            "receivedDateTime": received,
            "sentDateTime": _iso(sent),
            "hasAttachments": any(part.is_attachment() for part in parsed.walk()),
            "internetMessageId": message.message_id,
            "subject": str(parsed["Subject"] or ""),
            "bodyPreview": _preview(parsed, 255),
            "importance": "normal",
            "parentFolderId": mailbox.folder_ids[message.folder],
            "conversationId": message.conversation_id,
            "isRead": message.is_read,
            "isDraft": False,
            "body": {"contentType": content_type, "content": content},
            "sender": sender[0] if sender else None,
            "from": sender[0] if sender else None,
            "toRecipients": _graph_addresses(parsed, "To"),
            "ccRecipients": _graph_addresses(parsed, "Cc"),
            "bccRecipients": _graph_addresses(parsed, "Bcc"),
            "replyTo": _graph_addresses(parsed, "Reply-To"),
        }
        if select is None:
            return full
        # Graph returns the transport headers only when asked for by name.
        full["internetMessageHeaders"] = [{"name": n, "value": str(v)} for n, v in parsed.items()]
        return {"id": message.id} | {name: full[name] for name in sorted(select)}

    def list_messages(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, "read", _GRAPH_READ_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        folder_name = match.groupdict().get("folder")
        folder = None if folder_name is None else _GRAPH_FOLDERS.get(folder_name.lower())
        if folder_name is not None and folder is None:
            return _graph_folder_not_found(request)
        select = self._select(request)
        if isinstance(select, _Response):
            return select
        wanted_id: str | None = None
        if text := request.param("$filter"):
            parsed_filter = _GRAPH_FILTER.fullmatch(text)
            if parsed_filter is None:
                message = "The sandbox supports $filter=internetMessageId eq '<id>' only."
                return _graph_error(400, "ErrorInvalidUrlQueryFilter", message, request)
            wanted_id = parsed_filter[1].replace("''", "'")
        try:
            top = min(max(int(request.param("$top") or 10), 1), 1000)
            skip = max(int(request.param("$skip") or 0), 0)
        except ValueError:
            return _graph_error(400, "ErrorInvalidUrlQuery", "Invalid $top or $skip.", request)
        found = sorted(
            (
                m
                for m in mailbox.messages.values()
                if (folder is None or m.folder == folder) and (wanted_id is None or m.message_id == wanted_id)
            ),
            key=lambda m: (m.received, m.seq),
            reverse=True,
        )
        body: dict[str, object] = {
            "@odata.context": self._context("users('me')/messages"),
            "value": [self._represent(mailbox, m, select) for m in found[skip : skip + top]],
        }
        if skip + top < len(found):
            query = {k: v[0] for k, v in request.query.items() if k != "$skip"} | {"$skip": str(skip + top)}
            next_query = urlencode(query, safe="$'")  # Graph's links carry $skip and quotes unescaped
            body["@odata.nextLink"] = f"{self._state.base_url}{request.path}?{next_query}"
        return _json(200, body)

    def get_message(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, "read", _GRAPH_READ_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        message = mailbox.messages.get(unquote(match["id"]))
        if message is None:
            return _graph_item_not_found(request)
        select = self._select(request)
        if isinstance(select, _Response):
            return select
        body = {
            "@odata.context": self._context("users('me')/messages/$entity"),
            **self._represent(mailbox, message, select),
        }
        return _json(200, body)

    def get_mime(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, "read", _GRAPH_READ_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        message = mailbox.messages.get(unquote(match["id"]))
        if message is None:
            return _graph_item_not_found(request)
        return _Response(200, message.raw, "text/plain")

    def delta(self, request: _Request, match: re.Match[str]) -> _Response:
        mailbox = self._caller(request, "read", _GRAPH_READ_SCOPES)
        if isinstance(mailbox, _Response):
            return mailbox
        folder = _GRAPH_FOLDERS.get(match["folder"].lower())
        if folder is None:
            return _graph_folder_not_found(request)
        token = request.param("$deltatoken") or request.param("$skiptoken")
        if token is not None:
            state = self._state.delta_states.get(token)
            if state is None or state.email != mailbox.email or state.folder != folder:
                return _graph_error(400, "ErrorInvalidUrlQuery", "The delta token is not valid.", request)
            if state.generation != mailbox.delta_generation:
                return _graph_error(
                    410, "syncStateNotFound", "The sync state generation is not found.", request
                )
            if request.param("$deltatoken") is not None:  # a new round: everything since the last one
                state = _DeltaState(
                    mailbox.email,
                    folder,
                    state.generation,
                    state.until,
                    mailbox.seq,
                    state.select,
                    state.page_size,
                )
        else:
            select = self._select(request)
            if isinstance(select, _Response):
                return select
            prefer = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("prefer", ""))
            page_size = min(max(int(prefer[1]), 1), 1000) if prefer else 10
            state = _DeltaState(
                mailbox.email, folder, mailbox.delta_generation, 0, mailbox.seq, select, page_size
            )
        changes = sorted(
            (
                m
                for m in mailbox.messages.values()
                if m.folder == folder and state.after < m.seq <= state.until
            ),
            key=lambda m: m.seq,
        )
        page = changes[: state.page_size]
        link_base = f"{self._state.base_url}/graph/v1.0/me/mailFolders/{folder}/messages/delta"
        next_token = secrets.token_urlsafe(32)
        body: dict[str, object] = {
            "@odata.context": self._context("Collection(message)"),
            "value": [self._represent(mailbox, m, state.select) for m in page],
        }
        if len(changes) > len(page):
            self._state.delta_states[next_token] = _DeltaState(
                state.email,
                folder,
                state.generation,
                page[-1].seq,
                state.until,
                state.select,
                state.page_size,
            )
            body["@odata.nextLink"] = f"{link_base}?$skiptoken={next_token}"
        else:
            self._state.delta_states[next_token] = _DeltaState(
                state.email, folder, state.generation, state.until, state.until, state.select, state.page_size
            )
            body["@odata.deltaLink"] = f"{link_base}?$deltatoken={next_token}"
        headers = {"Preference-Applied": f"odata.maxpagesize={state.page_size}"}
        return _json(200, body, headers)


# --------------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """Google and Microsoft, locally: OAuth pages and token endpoints, Gmail and Graph mail APIs.

    ``Sandbox(...).start()`` serves on a free port (or use it as a context manager); every account,
    client, mailbox and fault lives in memory, guarded by one lock, until ``reset()`` or ``stop()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        gmail_history_retention: float = 7 * 24 * 3600.0,
    ) -> None:
        self._host = host
        self._port = port
        self._state = _State(gmail_history_retention=gmail_history_retention)
        google_key = _SigningKey.generate("accounts.google.com")
        microsoft_key = _SigningKey.generate("login.microsoftonline.com")
        self._google = _GoogleIdentity(self._state, google_key)
        self._microsoft = _MicrosoftIdentity(self._state, microsoft_key)
        self._gmail = _GmailApi(self._state)
        self._graph = _GraphApi(self._state)
        self._routes: list[_Route] = [
            *self._google.routes(),
            *self._microsoft.routes(),
            *self._gmail.routes(),
            *self._graph.routes(),
            _route("POST", r"/_sandbox/(?P<action>[a-z_]+)", self._control),
        ]
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._directory: Path | None = None
        self._ca_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._directory = Path(tempfile.mkdtemp(prefix="sandbox-tls-"))
        self._ca_path, chain, key = _write_tls_files(self._directory, self._host)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(chain, key)
        self._stopping.clear()
        self._server = _Server((self._host, self._port), tls, self._handle, self._stopping)
        port = self._server.server_address[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._state.base_url = f"https://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # releases connections held by the timeout fault
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._server = self._thread = self._directory = self._ca_path = None
        self._state.base_url = ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self._state.base_url:
            raise RuntimeError("start the sandbox first")
        return self._state.base_url

    @property
    def ca_bundle_path(self) -> str:
        if self._ca_path is None:
            raise RuntimeError("start the sandbox first")
        return str(self._ca_path)

    @property
    def google_auth_url(self) -> str:
        return f"{self.base_url}/google/o/oauth2/v2/auth"

    @property
    def google_token_url(self) -> str:
        return f"{self.base_url}/google/token"

    @property
    def google_certs_url(self) -> str:
        """JWKS, as Google's oauth2/v3/certs; ``/google/oauth2/v1/certs`` serves the X.509 form."""
        return f"{self.base_url}/google/oauth2/v3/certs"

    @property
    def gmail_api_url(self) -> str:
        return f"{self.base_url}/gmail/v1"

    def microsoft_authority(self, tenant: str = "common") -> str:
        return f"{self.base_url}/microsoft/{tenant}"

    @property
    def graph_api_url(self) -> str:
        return f"{self.base_url}/graph/v1.0"

    # -- accounts and clients ----------------------------------------------------------------------

    def add_google_account(self, email: str, *, sub: str | None = None, name: str = "") -> GoogleAccount:
        key = _key(email)
        # A stable default subject: the same address keeps its identity across reset() and restarts.
        default_sub = "1" + str(int(hashlib.sha256(key.encode()).hexdigest(), 16))[:20]
        account = GoogleAccount(email.strip(), sub or default_sub, name)
        with self._state.lock:
            self._state.google_accounts[key] = account
            self._state.gmail.setdefault(key, _GmailMailbox(key))
        return account

    def add_microsoft_account(
        self, email: str, *, tid: str | None = None, oid: str | None = None, name: str = ""
    ) -> MicrosoftAccount:
        key = _key(email)
        domain = key.rpartition("@")[2]
        account = MicrosoftAccount(
            email.strip(),
            tid or str(uuid.uuid5(uuid.NAMESPACE_DNS, domain)),  # one tenant per domain by default
            oid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{key}")),
            name,
        )
        with self._state.lock:
            self._state.microsoft_accounts[key] = account
            folder_ids = {f: "AAMkAG" + secrets.token_urlsafe(24) + "AAA=" for f in _GRAPH_FOLDERS.values()}
            self._state.graph.setdefault(key, _GraphMailbox(key, folder_ids))
        return account

    def add_client(
        self, provider: Provider, client_id: str, client_secret: str, redirect_uris: Iterable[str]
    ) -> None:
        if provider not in get_args(Provider):
            raise ValueError(f"provider must be one of {get_args(Provider)}")
        with self._state.lock:
            self._state.clients[(provider, client_id)] = _Client(
                provider, client_id, client_secret, frozenset(redirect_uris)
            )

    # -- provider-side events ----------------------------------------------------------------------

    def revoke_google_grant(self, email: str) -> None:
        """The password was changed: refresh and access tokens with Gmail scopes stop working."""
        self._revoke("google", _key(email), access_tokens_too=True)

    def revoke_microsoft_grant(self, email: str) -> None:
        """The password was reset: refresh tokens fail with AADSTS50173; access tokens (JWTs) keep
        working until they expire, as Graph's do; call ``expire_access_tokens`` to end them too."""
        self._revoke("microsoft", _key(email), access_tokens_too=False)

    def _revoke(self, provider: Provider, email: str, *, access_tokens_too: bool) -> None:
        with self._state.lock:
            stores = [self._state.refresh_tokens] + ([self._state.access_tokens] if access_tokens_too else [])
            for store in stores:
                for token in store.values():
                    if token.provider == provider and token.email == email:
                        token.revoked = True
            for consent in [k for k in self._state.consents if k[0] == provider and k[2] == email]:
                del self._state.consents[consent]

    def expire_access_tokens(self, email: str) -> None:
        with self._state.lock:
            for token in self._state.access_tokens.values():
                if token.email == _key(email):
                    token.expires_at = 0.0

    def deliver_gmail(self, email: str, raw_bytes: bytes, thread_id: str | None = None) -> str:
        """Incoming mail: lands in INBOX (threaded with the message it replies to) and bumps historyId."""
        with self._state.lock:
            self._require(self._state.gmail, email)
            return self._gmail.deliver(_key(email), raw_bytes, thread_id, ("UNREAD", "INBOX")).id

    def deliver_graph(self, email: str, raw_bytes: bytes, conversation_id: str | None = None) -> str:
        with self._state.lock:
            self._require(self._state.graph, email)
            return self._graph.deliver(_key(email), raw_bytes, "inbox", conversation_id).id

    def expire_gmail_history(self, email: str) -> None:
        """Every startHistoryId older than the mailbox's current historyId now answers 404."""
        with self._state.lock:
            mailbox = self._require(self._state.gmail, email)
            mailbox.history_floor = mailbox.history_id
            mailbox.history.clear()

    def expire_graph_delta(self, email: str) -> None:
        """Every delta or skip token of this mailbox now answers 410 syncStateNotFound."""
        with self._state.lock:
            self._require(self._state.graph, email).delta_generation += 1

    # -- faults --------------------------------------------------------------------------------------

    def inject_fault(
        self,
        email: str,
        surface: Surface,
        fault: FaultKind | str,
        *,
        times: int | None = None,
        retry_after: int = 30,
        hold_seconds: float = 30.0,
    ) -> None:
        """Make the next ``times`` requests (all, if None) of this account on this surface fail.

        ``fault`` is one of ``FaultKind`` or ``aadsts:<number>`` (Microsoft token endpoint only).
        ``retry_after`` feeds the Retry-After header of 429/503; ``hold_seconds`` is how long the
        ``timeout`` fault keeps the connection silent. Faults armed for the same account and surface
        apply in the order they were injected.
        """
        key = _key(email)
        if surface not in _FAULTS_BY_SURFACE:
            raise ValueError(f"surface must be one of {sorted(_FAULTS_BY_SURFACE)}")
        is_aadsts = re.fullmatch(r"aadsts:\d+", fault) is not None
        allowed = _FAULTS_BY_SURFACE[surface]
        if not (fault in allowed or (is_aadsts and surface == "token")):
            raise ValueError(f"fault {fault!r} does not apply to {surface!r}; choose from {sorted(allowed)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        with self._state.lock:
            google, microsoft = key in self._state.google_accounts, key in self._state.microsoft_accounts
            if not (google or microsoft):
                raise KeyError(f"no account {email}")
            if (is_aadsts and not microsoft) or (fault == "invalid_rapt" and not google):
                raise ValueError(f"fault {fault!r} needs a {'Microsoft' if is_aadsts else 'Google'} account")
            self._state.faults.setdefault((key, surface), []).append(
                _Fault(fault, times, retry_after, hold_seconds)
            )

    def clear_faults(self, email: str) -> None:
        with self._state.lock:
            for fault_key in [k for k in self._state.faults if k[0] == _key(email)]:
                del self._state.faults[fault_key]

    # -- inspection ----------------------------------------------------------------------------------

    def sent_messages(self, email: str) -> list[bytes]:
        """The raw MIME of every message this account sent (Gmail's, then Graph's), as the provider
        stored it: byte for byte what the client sent, with a Message-ID and Date stamped if missing."""
        key = _key(email)
        with self._state.lock:
            gmail, graph = self._state.gmail.get(key), self._state.graph.get(key)
            return [*(gmail.sent if gmail else []), *(graph.sent if graph else [])]

    def request_count(self, path_prefix: str = "/") -> int:
        with self._state.lock:
            return sum(n for path, n in self._state.requests.items() if path.startswith(path_prefix))

    def reset(self) -> None:
        """Forget every account, client, token, mailbox, fault and counter (keys and port stay)."""
        with self._state.lock:
            self._state.clear()

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _require(mailboxes: Mapping[str, _Mailbox], email: str) -> _Mailbox:
        mailbox = mailboxes.get(_key(email))
        if mailbox is None:
            raise KeyError(f"no mailbox for {email}")
        return mailbox

    def _handle(self, request: _Request) -> _Response:
        with self._state.lock:
            self._state.requests[request.path] += 1
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(request.path)
                if match is not None and method == request.method:
                    return handler(request, match)
        if request.path.startswith("/graph/"):
            return _graph_error(
                400, "BadRequest", f"Resource not found for the segment '{request.path}'.", request
            )
        if request.path.startswith("/gmail/"):
            return _gmail_not_found()
        return _json(404, {"error": "not_found", "path": request.path})

    def _control(self, request: _Request, match: re.Match[str]) -> _Response:
        """``POST /_sandbox/<method>`` with the method's keyword arguments as a JSON object."""
        try:
            arguments = json.loads(request.body or b"{}")
        except ValueError:
            return _json(400, {"error": "the body must be a JSON object"})
        if not isinstance(arguments, dict):
            return _json(400, {"error": "the body must be a JSON object"})
        action = self._control_actions().get(match["action"])
        if action is None:
            return _json(404, {"error": f"no control action {match['action']!r}"})
        try:
            return _json(200, {"result": action(arguments)})
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            return _json(400, {"error": f"{type(error).__name__}: {error}"})

    def _control_actions(self) -> dict[str, Callable[[dict[str, Any]], object]]:
        def raw(arguments: dict[str, Any]) -> bytes:
            return base64.b64decode(arguments.pop("raw_base64"), validate=True)

        return {
            "add_google_account": lambda a: asdict(self.add_google_account(**a)),
            "add_microsoft_account": lambda a: asdict(self.add_microsoft_account(**a)),
            "add_client": lambda a: self.add_client(**a),
            "revoke_google_grant": lambda a: self.revoke_google_grant(**a),
            "revoke_microsoft_grant": lambda a: self.revoke_microsoft_grant(**a),
            "expire_access_tokens": lambda a: self.expire_access_tokens(**a),
            "deliver_gmail": lambda a: self.deliver_gmail(raw_bytes=raw(a), **a),
            "deliver_graph": lambda a: self.deliver_graph(raw_bytes=raw(a), **a),
            "expire_gmail_history": lambda a: self.expire_gmail_history(**a),
            "expire_graph_delta": lambda a: self.expire_graph_delta(**a),
            "inject_fault": lambda a: self.inject_fault(**a),
            "clear_faults": lambda a: self.clear_faults(**a),
            "sent_messages": lambda a: [base64.b64encode(m).decode() for m in self.sent_messages(**a)],
            "request_count": lambda a: self.request_count(**a),
            "reset": lambda a: self.reset(**a),
        }


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the sandbox until interrupted; print its address and CA bundle as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with Sandbox(arguments.host, arguments.port) as sandbox:
        print(
            json.dumps({"base_url": sandbox.base_url, "ca_bundle_path": sandbox.ca_bundle_path}), flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
