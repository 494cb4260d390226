"""How an inbox owner proves they hold the mailbox: OAuth for Google and Microsoft, a live login
for custom SMTP/IMAP inboxes.

- Google: the authorization-code flow with PKCE (S256), a one-time ``state`` and a ``nonce``,
  offline access with forced consent (so a refresh token is always issued), and ``login_hint``.
  The code is redeemed with ``requests``; the ID token is verified by ``google-auth`` against
  Google's certificates; the mailbox's address comes from the Gmail profile.
- Microsoft: msal's confidential-client auth-code flow (``initiate_auth_code_flow`` /
  ``acquire_token_by_auth_code_flow``, which add PKCE, state and nonce themselves); the tenant and
  object ids come from the ID token msal received straight from the token endpoint, the address
  from Graph's ``/me``.
- Custom inboxes: SMTP AUTH and IMAP LOGIN against the hosts the inbox already has.

Every URL comes from settings, so the same code signs in at the real providers or the local sandbox.
google-auth, PyJWT and msal (with cryptography under them) are loaded at the first sign-in that
needs them, not at the reconnect function's cold start: most of its requests are pages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import warnings
from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from sendwell.adapters.http import HTTP_TIMEOUT
from sendwell.adapters.mailboxes import custom_connections
from sendwell.config import OAuthClient, ProviderEndpoints
from sendwell.failures import ProviderFailure
from sendwell.models import Inbox
from sendwell.ports.platform import SecretSource
from sendwell.ports.signin import (
    AuthorizationFailed,
    AuthorizationRequest,
    ConsentDeclined,
    LoginPart,
    LoginStage,
    MailboxGrant,
    PartFailure,
)

GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
GOOGLE_SCOPES = ("openid", "email", GMAIL_SEND, GMAIL_READONLY)
GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
# msal adds openid, profile and offline_access itself (and refuses them in this list).
# User.Read is what Graph's /me needs to tell us the mailbox's address.
GRAPH_SCOPES = ("Mail.Send", "Mail.Read", "User.Read")
MICROSOFT_HOST = "login.microsoftonline.com"
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _code(value: object, default: str) -> str:
    """A provider error code fit to show and log: a short identifier, never free text."""
    text = str(value or "")
    return text if _CODE.fullmatch(text) else default


def _declined_or_failed(response: Mapping[str, str]) -> None:
    error = response.get("error")
    if error == "access_denied":
        raise ConsentDeclined("access_denied")
    if error:
        raise AuthorizationFailed(_code(error, "provider_error"))


class _OAuthApp:
    """Our registered OAuth client at one provider, and how to reach that provider."""

    def __init__(
        self, client: OAuthClient, secret_source: SecretSource, endpoints: ProviderEndpoints, session: requests.Session
    ) -> None:
        self._client_id = client.client_id
        self._secret_parameter = client.secret_parameter
        self._secret_source = secret_source
        self._endpoints = endpoints
        self._http = session

    def _client_secret(self) -> str:
        """Fetched when first needed (the source caches it), so a cold start makes no SSM call."""
        secret = self._secret_source.get(self._secret_parameter)
        if not secret:
            raise AuthorizationFailed("client_not_configured")
        return secret


# ---------------------------------------------------------------------------------------------
# Google


class GoogleAuthorizer(_OAuthApp):
    required_scopes: Mapping[str, str] = MappingProxyType(
        {GMAIL_SEND: "send email", GMAIL_READONLY: "read replies to your emails"}
    )

    def authorization_request(self, *, login_hint: str, redirect_uri: str) -> AuthorizationRequest:
        verifier = secrets.token_urlsafe(64)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode(
            {
                "client_id": self._client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": " ".join(GOOGLE_SCOPES),
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "access_type": "offline",
                "prompt": "consent",  # a refresh token every time, and the scope checkboxes shown again
                "login_hint": login_hint,
            }
        )
        flow = json.dumps({"verifier": verifier, "nonce": nonce}).encode()
        return AuthorizationRequest(url=f"{self._endpoints.google_auth_url}?{query}", state=state, flow=flow)

    def redeem(self, flow: bytes, response: Mapping[str, str], *, redirect_uri: str) -> MailboxGrant:
        _declined_or_failed(response)
        pending = json.loads(flow)
        tokens = self._exchange(response.get("code", ""), pending["verifier"], redirect_uri)
        claims = self._verified_claims(str(tokens.get("id_token", "")), pending["nonce"])
        scopes = frozenset(str(tokens.get("scope", "")).split())
        refresh_token = tokens.get("refresh_token")
        if not refresh_token:
            raise AuthorizationFailed("no_refresh_token")
        access_token = str(tokens["access_token"])
        address = self._gmail_address(access_token) if GMAIL_READONLY in scopes else str(claims.get("email", ""))
        return MailboxGrant(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            address=address,
            scopes=scopes,
            credentials={
                "refresh_token": refresh_token,
                "access_token": access_token,
                "expires_at": int(time.time()) + int(tokens.get("expires_in", 0)),
                "scopes": sorted(scopes),
            },
        )

    def _exchange(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        if not code:
            raise AuthorizationFailed("no_code")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self._client_id,
            "client_secret": self._client_secret(),
            "code_verifier": verifier,
        }
        try:
            answer = self._http.post(self._endpoints.google_token_url, data=form)
        except requests.RequestException as error:
            raise AuthorizationFailed("token_endpoint_unreachable") from error
        body = _json_object(answer)
        if answer.status_code != 200 or "access_token" not in body:
            raise AuthorizationFailed(_code(body.get("error"), f"http_{answer.status_code}"))
        return body

    def _verified_claims(self, id_token: str, nonce: str) -> Mapping[str, Any]:
        import google.oauth2.id_token
        import jwt
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request as GoogleRequest

        if not id_token:
            raise AuthorizationFailed("no_id_token")
        try:
            claims = google.oauth2.id_token.verify_token(
                id_token,
                GoogleRequest(session=self._http),
                audience=self._client_id,
                certs_url=self._endpoints.google_certs_url,
            )
        except (GoogleAuthError, ValueError, jwt.PyJWTError) as error:
            raise AuthorizationFailed("id_token_invalid") from error
        if claims.get("iss") not in GOOGLE_ISSUERS or not claims.get("sub"):
            raise AuthorizationFailed("id_token_invalid")
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise AuthorizationFailed("id_token_nonce")
        return claims

    def _gmail_address(self, access_token: str) -> str:
        url = f"{self._endpoints.gmail_api_url}/gmail/v1/users/me/profile"
        try:
            answer = self._http.get(url, headers={"Authorization": f"Bearer {access_token}"})
        except requests.RequestException as error:
            raise AuthorizationFailed("gmail_unreachable") from error
        address = _json_object(answer).get("emailAddress") if answer.status_code == 200 else None
        if not isinstance(address, str) or not address:
            raise AuthorizationFailed(f"gmail_profile_{answer.status_code}")
        return address


# ---------------------------------------------------------------------------------------------
# Microsoft


class MicrosoftAuthorizer(_OAuthApp):
    required_scopes: Mapping[str, str] = MappingProxyType(
        {"Mail.Send": "send email", "Mail.Read": "read replies to your emails"}
    )

    @cached_property
    def _app(self) -> Any:
        # Built on first use, not at cold start: msal fetches the authority's metadata right away.
        import msal

        class NoTokenCache(msal.TokenCache):  # type: ignore[misc]  # msal ships no type information
            """Keep no tokens in memory: a warm container serves many owners, and we store ours encrypted."""

            def add(self, event: dict[str, Any], now: float | None = None) -> None:
                return None

        authority = self._endpoints.microsoft_authority
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=self._client_secret(),
            authority=authority,
            http_client=self._http,
            # Instance discovery asks Microsoft whether an authority is genuine: only theirs can be.
            instance_discovery=urlsplit(authority).hostname == MICROSOFT_HOST,
            token_cache=NoTokenCache(),
        )

    def authorization_request(self, *, login_hint: str, redirect_uri: str) -> AuthorizationRequest:
        with warnings.catch_warnings():
            # msal recommends form_post, but a cross-site POST back would arrive without our
            # SameSite=Lax session cookie; the query response carries only a one-time, PKCE-bound code.
            warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended", category=UserWarning)
            flow = self._app.initiate_auth_code_flow(
                list(GRAPH_SCOPES), redirect_uri=redirect_uri, login_hint=login_hint, response_mode="query"
            )
        return AuthorizationRequest(url=flow["auth_uri"], state=flow["state"], flow=json.dumps(flow).encode())

    def redeem(self, flow: bytes, response: Mapping[str, str], *, redirect_uri: str) -> MailboxGrant:
        _declined_or_failed(response)
        pending = json.loads(flow)
        if pending.get("redirect_uri") != redirect_uri:
            raise AuthorizationFailed("redirect_uri_mismatch")
        try:
            result = self._app.acquire_token_by_auth_code_flow(pending, dict(response))
        except (ValueError, RuntimeError) as error:  # msal's state and nonce checks
            raise AuthorizationFailed("flow_mismatch") from error
        except requests.RequestException as error:
            raise AuthorizationFailed("token_endpoint_unreachable") from error
        if "error" in result:
            codes = result.get("error_codes") or []
            raise AuthorizationFailed(_code(f"AADSTS{codes[0]}" if codes else result["error"], "provider_error"))
        claims = result.get("id_token_claims") or {}
        tenant, oid = str(claims.get("tid", "")), str(claims.get("oid", ""))
        if not tenant or not oid:
            raise AuthorizationFailed("id_token_invalid")
        scope = result.get("scope", "")
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
        refresh_token = result.get("refresh_token")
        if not refresh_token:
            raise AuthorizationFailed("no_refresh_token")
        access_token = str(result["access_token"])
        return MailboxGrant(
            issuer=tenant,
            subject=oid,
            address=self._graph_address(access_token),
            scopes=scopes,
            credentials={
                "refresh_token": refresh_token,
                "access_token": access_token,
                "expires_at": int(time.time()) + int(result.get("expires_in", 0)),
                "scopes": sorted(scopes),
            },
        )

    def _graph_address(self, access_token: str) -> str:
        try:
            answer = self._http.get(
                f"{self._endpoints.graph_api_url}/v1.0/me?$select=mail,userPrincipalName",
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except requests.RequestException as error:
            raise AuthorizationFailed("graph_unreachable") from error
        me = _json_object(answer) if answer.status_code == 200 else {}
        address = me.get("mail") or me.get("userPrincipalName")
        if not isinstance(address, str) or not address:
            raise AuthorizationFailed(f"graph_me_{answer.status_code}")
        return address


def _json_object(answer: requests.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:  # an HTML error page from a proxy
        return {}
    return body if isinstance(body, dict) else {}


# ---------------------------------------------------------------------------------------------
# Custom SMTP/IMAP inboxes


class LiveLoginCheck:
    """Log in to the inbox's own SMTP and IMAP servers with a candidate password; send nothing."""

    def __init__(self, *, timeout: float = HTTP_TIMEOUT) -> None:
        self._timeout = timeout

    def check(self, inbox: Inbox, password: str) -> list[PartFailure]:
        smtp, connect_imap = custom_connections(inbox, password, timeout=self._timeout)
        imap = connect_imap()
        failures: list[PartFailure] = []
        with imap:
            for part, verify in ((LoginPart.SMTP, smtp.verify_login), (LoginPart.IMAP, imap.verify_login)):
                try:
                    verify()
                except ProviderFailure as error:
                    refused = error.failure.kind.disconnects  # the server answered and refused the login
                    stage = LoginStage.AUTHENTICATION if refused else LoginStage.CONNECTION
                    failures.append(PartFailure(part, stage, error.failure.reason))
        return failures
