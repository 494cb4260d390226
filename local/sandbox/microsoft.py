"""The Microsoft identity platform's v2.0 endpoints (login.microsoftonline.com), over the flow
``Identity`` shares with Google.

What is Microsoft's own: every path names a tenant (``common``, ``organizations``, a tenant id or a
verified domain), scopes may carry the Graph resource prefix, ``offline_access`` asks for a refresh
token and every refresh rotates it, subjects are pairwise, errors are AADSTS numbers, and msal's
``client_info`` rides along with the code and the tokens.
"""

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from local.sandbox.errors import aadsts
from local.sandbox.http import Request, Response, first, json_response
from local.sandbox.identity import ID_TOKEN_LIFETIME, Account, Endpoints, Identity, Rejection, TokenCall, TokenFormat
from local.sandbox.pages import ConsentWording, error_page, redirect
from local.sandbox.scopes import GRAPH_RESOURCE, OIDC_SCOPES
from local.sandbox.state import AuthCode, Client, MicrosoftAccount, PendingAuthorization, Token
from local.sandbox.util import b64url_unpadded

_TENANT: Final = r"/microsoft/(?P<tenant>[^/]+)"  # every endpoint's path starts with its tenant
_TENANT_ALIASES: Final = frozenset({"common", "organizations"})
_SIGN_IN_TROUBLE: Final = "Sorry, but we're having trouble signing you in."

# The AADSTS number the v2.0 token endpoint answers each rejection with.
_REJECTIONS: Final[Mapping[Rejection, int]] = MappingProxyType(
    {
        "unsupported_grant_type": 70003,
        "unknown_client": 700016,
        "missing_secret": 7000218,
        "wrong_secret": 7000215,
        "unknown_code": 70000,
        "expired_code": 70008,
        "redeemed_code": 54005,
        "redirect_uri_mismatch": 50011,
        "missing_verifier": 50148,
        "wrong_verifier": 50148,
        "unknown_refresh_token": 9002313,
        "revoked_refresh_token": 50173,
    }
)


def _client_info(account: MicrosoftAccount) -> str:
    info = json.dumps({"uid": account.oid, "utid": account.tid}).encode()
    return b64url_unpadded(info)


class MicrosoftIdentity(Identity):
    provider = "microsoft"
    endpoints = Endpoints(
        authorize=_TENANT + r"/oauth2/v2\.0/authorize",
        token=_TENANT + r"/oauth2/v2\.0/token",
        jwks=_TENANT + r"/discovery/v2\.0/keys",
        discovery=_TENANT + r"/v2\.0/\.well-known/openid-configuration",
    )
    tokens = TokenFormat(
        code_prefix="1.A", code_bytes=60, access_prefix="EwB", refresh_prefix="0.A", access_lifetime=3600
    )
    wording = ConsentWording("Sign in to your account", "Permissions requested", allow="Accept", deny="Cancel")
    secret_required = True

    def _accounts(self) -> Mapping[str, Account]:
        return self._state.microsoft_accounts

    def _scope_name(self, scope: str) -> str:
        return scope.removeprefix(GRAPH_RESOURCE)

    def _tenant_id(self, tenant: str) -> str | None:
        """The tenant a path segment names: an alias, a tenant id, or a verified domain."""
        tenant = tenant.lower()
        if tenant in _TENANT_ALIASES:
            return tenant
        for account in self._state.microsoft_accounts.values():
            if tenant in (account.tid, account.email.rpartition("@")[2].lower()):
                return account.tid
        return None

    def _eligible(self, email: str, tenant: str) -> bool:
        account = self._state.microsoft_accounts.get(email)
        tenant_id = self._tenant_id(tenant)
        return account is not None and tenant_id in (account.tid, "common", "organizations")

    def discovery(self, request: Request, match: re.Match[str]) -> Response:
        tenant = match["tenant"]
        tenant_id = self._tenant_id(tenant)
        if tenant_id is None:
            return aadsts(90002, request, tenant=tenant)
        base = f"{self._state.base_url}/microsoft/{tenant}"
        issuer_tenant = "{tenantid}" if tenant_id in _TENANT_ALIASES else tenant_id
        return json_response(
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

    # -- authorization endpoint ---------------------------------------------------------------------

    def authorize(self, request: Request, match: re.Match[str]) -> Response:
        tenant = match["tenant"]
        client, redirect_uri = self._check_client(request)
        if client is None:
            # The sign-in page quotes the AADSTS error the token endpoint would give.
            client_id = request.param("client_id") or ""
            number = 700016 if ("microsoft", client_id) not in self._state.clients else 50011
            error = aadsts(number, request, client_id=client_id, tenant=tenant, redirect_uri=redirect_uri)
            return error_page(400, _SIGN_IN_TROUBLE, json.loads(error.body)["error_description"])
        if self._tenant_id(tenant) is None:
            return error_page(400, _SIGN_IN_TROUBLE, f"Tenant '{tenant}' not found.")
        if request.param("response_type") != "code":
            return redirect(redirect_uri, {"error": "unsupported_response_type", "state": request.param("state")})
        scopes = self._scopes(request.param("scope") or "")
        return self._ask_consent(
            request,
            client,
            redirect_uri,
            scopes,
            code_challenge_method=request.param("code_challenge_method") or "plain",
            tenant=tenant,
            offline="offline_access" in scopes,
            force_consent=True,
            client_info=request.param("client_info") == "1",
            response_mode=request.param("response_mode") or "query",
        )

    def _denied(self, pending: PendingAuthorization) -> Mapping[str, str | None]:
        return {
            "error": "access_denied",
            "error_subcode": "cancel",
            "error_description": "AADSTS65004: User declined to consent to access the app.",
            "state": pending.state,
        }

    def _issues_refresh_token(self, pending: PendingAuthorization, email: str, granted: frozenset[str]) -> bool:
        return "offline_access" in granted

    def _authorized(
        self, pending: PendingAuthorization, email: str, code: str, granted: frozenset[str]
    ) -> Mapping[str, str | None]:
        account = self._state.microsoft_accounts[email]
        return {
            "code": code,
            "client_info": _client_info(account) if pending.client_info else None,
            "state": pending.state,
            "session_state": str(uuid.uuid4()),
        }

    # -- token endpoint -----------------------------------------------------------------------------

    def _check_tenant(self, call: TokenCall) -> Response | None:
        if self._tenant_id(call.tenant) is None:
            return aadsts(90002, call.request, tenant=call.tenant)
        return None

    def _reject(self, rejection: Rejection, call: TokenCall) -> Response:
        return aadsts(
            _REJECTIONS[rejection],
            call.request,
            client_id=call.client_id,
            tenant=call.tenant,
            redirect_uri=first(call.form, "redirect_uri"),
        )

    def _redeemed(self, client: Client, code: AuthCode, call: TokenCall) -> Response:
        requested = call.requested
        scopes = (code.scopes & requested) | (code.scopes & OIDC_SCOPES) if requested else code.scopes
        return self._token_response(client, code.email, code.scopes, scopes, code.nonce, call, code.issue_refresh_token)

    def _refreshed(self, client: Client, grant: Token, call: TokenCall) -> Response:
        requested = call.requested
        if not (requested - OIDC_SCOPES) <= grant.scopes:
            return aadsts(65001, call.request, client_id=client.client_id)
        scopes = (requested or grant.scopes) & (grant.scopes | OIDC_SCOPES)
        # Microsoft rotates: every refresh answers with a new refresh token (the old one keeps working
        # until it expires, so a client must persist the newest).
        return self._token_response(client, grant.email, grant.scopes, scopes, None, call, True)

    def _token_response(
        self,
        client: Client,
        email: str,
        granted: frozenset[str],
        scopes: frozenset[str],
        nonce: str | None,
        call: TokenCall,
        issue_refresh_token: bool,
    ) -> Response:
        now = time.time()
        account = self._state.microsoft_accounts[email]
        api_scopes = frozenset(s for s in scopes if s != "offline_access")
        body: dict[str, object] = {
            "token_type": "Bearer",
            "scope": " ".join(sorted(api_scopes)),
            "expires_in": self.tokens.access_lifetime,
            "ext_expires_in": self.tokens.access_lifetime,
            "access_token": self._issue_access_token(client, email, api_scopes, now),
        }
        if issue_refresh_token:
            body["refresh_token"] = self._issue_refresh_token(client, email, granted)
        if "openid" in granted:
            body["id_token"] = self._id_token(client, account, granted, nonce, now)
        if first(call.form, "client_info") == "1":
            body["client_info"] = _client_info(account)
        return json_response(200, body)

    def _id_token(
        self,
        client: Client,
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
            "sub": b64url_unpadded(pairwise),
            "aud": client.client_id,
            "exp": int(now) + ID_TOKEN_LIFETIME,
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
        return self._sign_id_token(claims, nonce)
