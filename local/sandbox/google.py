"""Google's OAuth 2.0 and OpenID Connect server: the parts of accounts.google.com and
oauth2.googleapis.com a web-server client uses, over the flow ``Identity`` shares with Microsoft.

What is Google's own: short scope names answer as their long ones, ``access_type=offline`` asks for
a refresh token (given on first consent, or again with ``prompt=consent``), refresh tokens never
rotate, ``include_granted_scopes`` adds earlier grants, and revocation ends the whole grant.
"""

import hashlib
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from local.sandbox.errors import google_oauth_error
from local.sandbox.http import Request, Response, Route, first, json_response, route
from local.sandbox.identity import ID_TOKEN_LIFETIME, Account, Endpoints, Identity, Rejection, TokenCall, TokenFormat
from local.sandbox.pages import ConsentWording, error_page
from local.sandbox.scopes import GOOGLE_EMAIL, GOOGLE_PROFILE, GOOGLE_SCOPE_ALIASES
from local.sandbox.state import AuthCode, Client, PendingAuthorization, Token
from local.sandbox.util import b64url_unpadded

GOOGLE_ISSUER: Final = "https://accounts.google.com"

# (status, error, error_description) of each rejection: Google says little more than "Bad Request".
_BAD_GRANT: Final = (400, "invalid_grant", "Bad Request")
_BAD_SECRET: Final = (401, "invalid_client", "Unauthorized")
_REJECTIONS: Final[Mapping[Rejection, tuple[int, str, str]]] = MappingProxyType(
    {
        "unsupported_grant_type": (400, "unsupported_grant_type", "Invalid grant_type: {grant_type}"),
        "unknown_client": (401, "invalid_client", "The OAuth client was not found."),
        "missing_secret": _BAD_SECRET,
        "wrong_secret": _BAD_SECRET,
        "unknown_code": (400, "invalid_grant", "Malformed auth code."),
        "expired_code": _BAD_GRANT,
        "redeemed_code": _BAD_GRANT,
        "redirect_uri_mismatch": (400, "redirect_uri_mismatch", "Bad Request"),
        "missing_verifier": (400, "invalid_grant", "Missing code verifier."),
        "wrong_verifier": (400, "invalid_grant", "Invalid code verifier."),
        "unknown_refresh_token": _BAD_GRANT,
        "revoked_refresh_token": (400, "invalid_grant", "Token has been expired or revoked."),
    }
)


class GoogleIdentity(Identity):
    provider = "google"
    endpoints = Endpoints(
        authorize=r"/google/o/oauth2/v2/auth",
        token=r"/google/token",
        jwks=r"/google/oauth2/v3/certs",
        discovery=r"/google/\.well-known/openid-configuration",
    )
    tokens = TokenFormat(
        code_prefix="4/0A", code_bytes=40, access_prefix="ya29.", refresh_prefix="1//0", access_lifetime=3599
    )
    wording = ConsentWording("Sign in - Google Accounts", "Sign in with Google", allow="Allow", deny="Deny")
    secret_required = False

    def routes(self) -> list[Route]:
        return [
            *super().routes(),
            route("POST", r"/google/revoke", self.revoke),
            route("GET", r"/google/oauth2/v1/certs", self.x509_certs),  # the X.509 form of the JWKS
        ]

    def _accounts(self) -> Mapping[str, Account]:
        return self._state.google_accounts

    def _scope_name(self, scope: str) -> str:
        return GOOGLE_SCOPE_ALIASES.get(scope, scope)

    def discovery(self, request: Request, match: re.Match[str]) -> Response:
        base = f"{self._state.base_url}/google"
        return json_response(
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

    def x509_certs(self, request: Request, match: re.Match[str]) -> Response:
        return json_response(200, {self._key.kid: self._key.certificate_pem()})

    # -- authorization endpoint ---------------------------------------------------------------------

    def authorize(self, request: Request, match: re.Match[str]) -> Response:
        client, redirect_uri = self._check_client(request)
        if client is None:
            if ("google", request.param("client_id") or "") not in self._state.clients:
                return error_page(401, "Error 401: invalid_client", "The OAuth client was not found.")
            detail = f"redirect_uri={redirect_uri} is not registered for this client."
            return error_page(400, "Error 400: redirect_uri_mismatch", detail)
        if request.param("response_type") != "code":
            return error_page(400, "Error 400: invalid_request", "Invalid response_type: only code is supported.")
        scopes = self._scopes(request.param("scope") or "")
        if not scopes:
            return error_page(400, "Error 400: invalid_request", "Missing required parameter: scope")
        method = request.param("code_challenge_method") or "plain"
        if request.param("code_challenge") and method not in ("S256", "plain"):
            return error_page(400, "Error 400: invalid_request", "Invalid code_challenge_method.")
        return self._ask_consent(
            request,
            client,
            redirect_uri,
            scopes,
            code_challenge_method=method,
            offline=request.param("access_type") == "offline",
            force_consent="consent" in (request.param("prompt") or "").split(),
            include_granted_scopes=request.param("include_granted_scopes") == "true",
        )

    def _denied(self, pending: PendingAuthorization) -> Mapping[str, str | None]:
        return {"error": "access_denied", "state": pending.state}

    def _granted_scopes(self, pending: PendingAuthorization, email: str, granted: frozenset[str]) -> frozenset[str]:
        if pending.include_granted_scopes:
            granted |= self._state.consents.get(("google", pending.client_id, email), frozenset())
        return granted

    def _issues_refresh_token(self, pending: PendingAuthorization, email: str, granted: frozenset[str]) -> bool:
        # Google hands out a refresh token on first consent, or again only when prompt=consent.
        return pending.offline and (
            pending.force_consent or not self._state.has_live_refresh_token("google", pending.client_id, email)
        )

    def _authorized(
        self, pending: PendingAuthorization, email: str, code: str, granted: frozenset[str]
    ) -> Mapping[str, str | None]:
        return {
            "state": pending.state,
            "iss": GOOGLE_ISSUER,
            "code": code,
            "scope": " ".join(sorted(granted)),
            "authuser": "0",
            "prompt": "consent",
        }

    # -- token endpoint -----------------------------------------------------------------------------

    def _reject(self, rejection: Rejection, call: TokenCall) -> Response:
        status, error, description = _REJECTIONS[rejection]
        return google_oauth_error(status, error, description.format(grant_type=first(call.form, "grant_type")))

    def _redeemed(self, client: Client, code: AuthCode, call: TokenCall) -> Response:
        refresh_token = None
        if code.issue_refresh_token:
            refresh_token = self._issue_refresh_token(client, code.email, code.scopes)
        return self._token_response(client, code.email, code.scopes, code.nonce, refresh_token)

    def _refreshed(self, client: Client, grant: Token, call: TokenCall) -> Response:
        # Google keeps the refresh token; a narrower scope parameter narrows only the access token.
        scopes = grant.scopes
        if call.requested:
            if not call.requested <= grant.scopes:
                invalid = ", ".join(sorted(call.requested - grant.scopes))
                return google_oauth_error(
                    400, "invalid_scope", f"Some requested scopes were invalid. {{invalid=[{invalid}]}}"
                )
            scopes = call.requested
        return self._token_response(client, grant.email, scopes, None, None)

    def _token_response(
        self,
        client: Client,
        email: str,
        scopes: frozenset[str],
        nonce: str | None,
        refresh_token: str | None,
    ) -> Response:
        now = time.time()
        access_token = self._issue_access_token(client, email, scopes, now)
        body: dict[str, object] = {"access_token": access_token, "expires_in": self.tokens.access_lifetime}
        if refresh_token:
            body["refresh_token"] = refresh_token
        body |= {"scope": " ".join(sorted(scopes)), "token_type": "Bearer"}
        if "openid" in scopes:
            body["id_token"] = self._id_token(client, email, scopes, access_token, nonce, now)
        return json_response(200, body)

    def _id_token(
        self,
        client: Client,
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
            "at_hash": b64url_unpadded(digest[:16]),
            "iat": int(now),
            "exp": int(now) + ID_TOKEN_LIFETIME,
        }
        if GOOGLE_EMAIL in scopes:
            claims |= {"email": account.email, "email_verified": True}
            domain = account.email.rpartition("@")[2].lower()
            if domain not in ("gmail.com", "googlemail.com"):
                claims["hd"] = domain  # Workspace accounts carry their hosted domain
        if GOOGLE_PROFILE in scopes and account.name:
            claims["name"] = account.name
        return self._sign_id_token(claims, nonce)

    # -- revocation ---------------------------------------------------------------------------------

    def revoke(self, request: Request, match: re.Match[str]) -> Response:
        """Revoking either token ends the whole grant: every token of that client and account."""
        token = first(request.form(), "token") or (request.param("token") or "")
        record = self._state.refresh_tokens.get(token) or self._state.access_tokens.get(token)
        if record is None or record.provider != "google" or not record.usable(time.time()):
            return google_oauth_error(400, "invalid_token", "Token expired or revoked")
        self._state.revoke("google", record.email, client_id=record.client_id, access_tokens=True)
        return json_response(200, {})
