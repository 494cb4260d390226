"""What Google's and Microsoft's OAuth 2.0 servers do alike, written once.

``Identity`` runs the authorization-code flow both providers serve: the consent page and the pending
authorization behind it, the authorization code it hands back, PKCE, client authentication, and the
token endpoint that redeems codes and refresh tokens. ``GoogleIdentity`` and ``MicrosoftIdentity``
fill in what differs: their routes and parameters, scope names, which grants earn a refresh token,
and the shape of their answers and of their errors (``Rejection`` names each error both can raise).
"""

import base64
import binascii
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Literal
from urllib.parse import unquote

from local.sandbox.ca import SigningKey
from local.sandbox.faults import fault_response
from local.sandbox.http import Request, Response, Route, first, json_response, route
from local.sandbox.pages import ConsentView, ConsentWording, answer_client, consent_page, error_page
from local.sandbox.state import (
    AuthCode,
    Client,
    GoogleAccount,
    MicrosoftAccount,
    PendingAuthorization,
    Provider,
    State,
    Token,
)
from local.sandbox.util import account_key, b64url_unpadded

CODE_LIFETIME: Final = 600.0
PENDING_LIFETIME: Final = 600.0
ID_TOKEN_LIFETIME: Final = 3600

Account = GoogleAccount | MicrosoftAccount

# Why the token endpoint turns a call down; each provider words each one its own way.
Rejection = Literal[
    "unsupported_grant_type",
    "unknown_client",
    "missing_secret",
    "wrong_secret",
    "unknown_code",
    "expired_code",
    "redeemed_code",
    "redirect_uri_mismatch",
    "missing_verifier",
    "wrong_verifier",
    "unknown_refresh_token",
    "revoked_refresh_token",
]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """The non-empty items, first occurrence kept, in order."""
    return tuple(dict.fromkeys(item for item in items if item))


def _pkce_matches(challenge: str, method: str, verifier: str) -> bool:
    if method == "S256":
        verifier = b64url_unpadded(hashlib.sha256(verifier.encode()).digest())
    return hmac.compare_digest(verifier, challenge)


def _client_credentials(request: Request, form: Mapping[str, list[str]]) -> tuple[str, str]:
    """client_secret_basic or client_secret_post, as both providers accept."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
            return unquote(client_id), unquote(secret)
    return first(form, "client_id"), first(form, "client_secret")


@dataclass(frozen=True, slots=True)
class TokenCall:
    """One call to a token endpoint: what its answer, and its errors, may quote back."""

    request: Request
    form: Mapping[str, list[str]]
    client_id: str  # as the caller sent it
    tenant: str  # the path's tenant segment; "" where the provider has none
    requested: frozenset[str]  # the scope parameter, in the provider's own scope names


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The route patterns of the endpoints both providers serve."""

    authorize: str  # GET shows the consent page, POST is the person's answer
    token: str
    jwks: str
    discovery: str


@dataclass(frozen=True, slots=True)
class TokenFormat:
    """What a provider's codes and tokens look like (their real prefixes) and how long access lasts."""

    code_prefix: str
    code_bytes: int  # of randomness after the prefix
    access_prefix: str
    refresh_prefix: str
    access_lifetime: int


@dataclass(frozen=True, slots=True)
class _Consent:
    pending: PendingAuthorization
    email: str
    granted: tuple[str, ...]  # empty: the person said no


class Identity(ABC):
    """One provider's OAuth 2.0 / OpenID Connect server over the shared ``State``."""

    provider: ClassVar[Provider]
    endpoints: ClassVar[Endpoints]
    tokens: ClassVar[TokenFormat]
    wording: ClassVar[ConsentWording]
    # Microsoft tells a missing client secret from a wrong one; Google just compares what it got.
    secret_required: ClassVar[bool]

    def __init__(self, state: State, key: SigningKey) -> None:
        self._state = state
        self._key = key

    def routes(self) -> list[Route]:
        paths = self.endpoints
        return [
            route("GET", paths.authorize, self.authorize),
            route("POST", paths.authorize, self.consent),
            route("POST", paths.token, self.token),
            route("GET", paths.jwks, self.jwks),
            route("GET", paths.discovery, self.discovery),
        ]

    @abstractmethod
    def discovery(self, request: Request, match: re.Match[str]) -> Response:
        """The OpenID configuration document."""

    def jwks(self, request: Request, match: re.Match[str]) -> Response:
        return json_response(200, {"keys": [self._key.jwk()]})

    # -- authorization endpoint ---------------------------------------------------------------------

    @abstractmethod
    def authorize(self, request: Request, match: re.Match[str]) -> Response:
        """Check the authorization request the provider's way, then ``_ask_consent``."""

    @abstractmethod
    def _accounts(self) -> Mapping[str, Account]:
        """This provider's accounts, by key."""

    def _eligible(self, email: str, tenant: str) -> bool:
        """Whether this account may sign in through this tenant (Microsoft has tenants; Google not)."""
        return email in self._accounts()

    def _scope_name(self, scope: str) -> str:
        """The name the provider files a requested scope under."""
        return scope

    def _scopes(self, text: str) -> tuple[str, ...]:
        return _unique(self._scope_name(s) for s in text.split())

    def _check_client(self, request: Request) -> tuple[Client, str] | tuple[None, str]:
        client = self._state.clients.get((self.provider, request.param("client_id") or ""))
        redirect_uri = request.param("redirect_uri") or ""
        if client is None or redirect_uri not in client.redirect_uris:
            return None, redirect_uri
        return client, redirect_uri

    def _ask_consent(
        self,
        request: Request,
        client: Client,
        redirect_uri: str,
        scopes: tuple[str, ...],
        *,
        code_challenge_method: str,
        offline: bool,
        force_consent: bool,
        include_granted_scopes: bool = False,
        tenant: str = "",
        client_info: bool = False,
        response_mode: str = "query",
    ) -> Response:
        """File the validated authorization request and show the consent page that answers it."""
        request_id = secrets.token_urlsafe(24)
        self._state.pending[request_id] = PendingAuthorization(
            provider=self.provider,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=request.param("state"),
            nonce=request.param("nonce"),
            code_challenge=request.param("code_challenge"),
            code_challenge_method=code_challenge_method,
            tenant=tenant,
            offline=offline,
            force_consent=force_consent,
            include_granted_scopes=include_granted_scopes,
            client_info=client_info,
            response_mode=response_mode,
            expires_at=time.time() + PENDING_LIFETIME,
        )
        accounts = dict(
            (key, f"{account.name} <{account.email}>" if account.name else account.email)
            for key, account in self._accounts().items()
            if self._eligible(key, tenant)
        )
        hint = account_key(request.param("login_hint") or "")
        view = ConsentView(
            wording=self.wording,
            client_id=client.client_id,
            action=request.path,
            request_id=request_id,
            accounts=list(accounts.items()),
            selected=hint if hint in accounts else next(iter(accounts), None),
            scopes=scopes,
        )
        return consent_page(view)

    def consent(self, request: Request, match: re.Match[str]) -> Response:
        """The consent page's answer: back to the client with a code, or with access_denied."""
        answer = self._read_consent(request)
        if isinstance(answer, Response):
            return answer
        pending, email = answer.pending, answer.email
        if not answer.granted:
            return answer_client(pending, self._denied(pending))
        granted = self._granted_scopes(pending, email, frozenset(answer.granted))
        issue_refresh_token = self._issues_refresh_token(pending, email, granted)
        self._state.consents[(self.provider, pending.client_id, email)] = granted
        code = self.tokens.code_prefix + secrets.token_urlsafe(self.tokens.code_bytes)
        self._state.codes[code] = AuthCode(
            provider=self.provider,
            client_id=pending.client_id,
            email=email,
            scopes=granted,
            redirect_uri=pending.redirect_uri,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            nonce=pending.nonce,
            issue_refresh_token=issue_refresh_token,
            expires_at=time.time() + CODE_LIFETIME,
        )
        return answer_client(pending, self._authorized(pending, email, code, granted))

    def _read_consent(self, request: Request) -> _Consent | Response:
        """The person's answer on the consent page, or the error page that answers it."""
        form = request.form()
        pending = self._state.pending.pop(first(form, "request_id"), None)
        if pending is None or pending.provider != self.provider or pending.expires_at < time.time():
            return error_page(400, "This sign-in request has expired", "Start the sign-in again.")
        if first(form, "decision") != "allow":
            return _Consent(pending, "", ())
        email = account_key(first(form, "account"))
        if not self._eligible(email, pending.tenant):
            return error_page(400, "Account not found", "Choose one of the accounts offered.")
        chosen = set(form.get("scope", []))
        return _Consent(pending, email, tuple(s for s in pending.scopes if s in chosen))

    @abstractmethod
    def _denied(self, pending: PendingAuthorization) -> Mapping[str, str | None]:
        """The parameters of the authorization response when the person declines."""

    def _granted_scopes(self, pending: PendingAuthorization, email: str, granted: frozenset[str]) -> frozenset[str]:
        """What the code will carry, given what the person ticked."""
        return granted

    @abstractmethod
    def _issues_refresh_token(self, pending: PendingAuthorization, email: str, granted: frozenset[str]) -> bool: ...

    @abstractmethod
    def _authorized(
        self, pending: PendingAuthorization, email: str, code: str, granted: frozenset[str]
    ) -> Mapping[str, str | None]:
        """The parameters of the authorization response that carries the code."""

    # -- token endpoint -----------------------------------------------------------------------------

    def token(self, request: Request, match: re.Match[str]) -> Response:
        form = request.form()
        client_id, secret = _client_credentials(request, form)
        requested = frozenset(self._scope_name(s) for s in first(form, "scope").split())
        call = TokenCall(request, form, client_id, match.groupdict().get("tenant") or "", requested)
        grant_type = first(form, "grant_type")
        if grant_type == "authorization_code":
            record: AuthCode | Token | None = self._state.codes.get(first(form, "code"))
        elif grant_type == "refresh_token":
            record = self._state.refresh_tokens.get(first(form, "refresh_token"))
        else:
            return self._reject("unsupported_grant_type", call)
        # A fault armed for the account wins over every check, as an outage at the provider would.
        if record is not None and record.provider == self.provider:
            fault = self._state.take_fault(record.email, "token")
            if fault is not None:
                return fault_response(fault, self.provider, "token", request)
        tenant_error = self._check_tenant(call)
        if tenant_error is not None:
            return tenant_error
        client = self._state.clients.get((self.provider, client_id))
        if client is None:
            return self._reject("unknown_client", call)
        if self.secret_required and not secret:
            return self._reject("missing_secret", call)
        if not hmac.compare_digest(secret, client.client_secret):
            return self._reject("wrong_secret", call)
        if grant_type == "authorization_code":
            return self._redeem(client, record if isinstance(record, AuthCode) else None, call)
        return self._refresh(client, record if isinstance(record, Token) else None, call)

    def _check_tenant(self, call: TokenCall) -> Response | None:
        """The error for a tenant the provider does not know, if it has tenants."""
        return None

    @abstractmethod
    def _reject(self, rejection: Rejection, call: TokenCall) -> Response:
        """The provider's error body for a token call it turns down."""

    def _redeem(self, client: Client, code: AuthCode | None, call: TokenCall) -> Response:
        if code is None or code.provider != self.provider or code.client_id != client.client_id:
            return self._reject("unknown_code", call)
        if code.expires_at < time.time():
            return self._reject("expired_code", call)
        if code.redeemed:
            return self._reject("redeemed_code", call)
        if first(call.form, "redirect_uri") != code.redirect_uri:
            return self._reject("redirect_uri_mismatch", call)
        if code.code_challenge:
            verifier = first(call.form, "code_verifier")
            if not verifier:
                return self._reject("missing_verifier", call)
            if not _pkce_matches(code.code_challenge, code.code_challenge_method, verifier):
                return self._reject("wrong_verifier", call)
        code.redeemed = True
        return self._redeemed(client, code, call)

    def _refresh(self, client: Client, grant: Token | None, call: TokenCall) -> Response:
        if grant is None or grant.provider != self.provider or grant.client_id != client.client_id:
            return self._reject("unknown_refresh_token", call)
        if grant.revoked:
            return self._reject("revoked_refresh_token", call)
        return self._refreshed(client, grant, call)

    @abstractmethod
    def _redeemed(self, client: Client, code: AuthCode, call: TokenCall) -> Response:
        """The tokens for a code that passed every check (it is now spent)."""

    @abstractmethod
    def _refreshed(self, client: Client, grant: Token, call: TokenCall) -> Response:
        """The tokens for a live refresh token of this client."""

    def _issue_access_token(self, client: Client, email: str, scopes: frozenset[str], now: float) -> str:
        token = Token(self.provider, client.client_id, email, scopes, now + self.tokens.access_lifetime)
        return self._state.issue(self._state.access_tokens, self.tokens.access_prefix, token)

    def _issue_refresh_token(self, client: Client, email: str, scopes: frozenset[str]) -> str:
        grant = Token(self.provider, client.client_id, email, scopes)
        return self._state.issue(self._state.refresh_tokens, self.tokens.refresh_prefix, grant)

    def _sign_id_token(self, claims: dict[str, object], nonce: str | None) -> str:
        if nonce:
            claims["nonce"] = nonce
        return self._key.sign(claims)
