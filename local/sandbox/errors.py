"""Error answers in each provider's own shape: Google's OAuth and API error bodies, the Microsoft
identity platform's AADSTS errors, and Microsoft Graph's error bodies.

Clients branch on these bodies (error codes, suberrors, WWW-Authenticate challenges), so they copy
what the real services send, down to the wording where clients or people read it.
"""

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from local.sandbox.http import Request, Response, json_response
from local.sandbox.util import iso

# --------------------------------------------------------------------------------------------------
# Google


def google_oauth_error(status: int, error: str, description: str, **extra: str) -> Response:
    return json_response(status, {"error": error, "error_description": description, **extra})


def google_api_error(
    status: int,
    status_text: str,
    message: str,
    reason: str,
    *,
    item_message: str | None = None,
    domain: str = "global",
    headers: Mapping[str, str] | None = None,
    **item: str,
) -> Response:
    error_item = {"message": item_message or message, "domain": domain, "reason": reason, **item}
    body = {"error": {"code": status, "message": message, "errors": [error_item], "status": status_text}}
    return json_response(status, body, headers)


def gmail_unauthenticated() -> Response:
    return google_api_error(
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


def gmail_insufficient_scopes(required: Iterable[str]) -> Response:
    challenge = " ".join(sorted(required))
    return google_api_error(
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


def gmail_not_found() -> Response:
    return google_api_error(404, "NOT_FOUND", "Requested entity was not found.", "notFound")


def gmail_bad_request(message: str) -> Response:
    return google_api_error(400, "INVALID_ARGUMENT", message, "invalidArgument")


# --------------------------------------------------------------------------------------------------
# Microsoft identity platform


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


def aadsts(
    number: int,
    request: Request,
    *,
    client_id: str = "",
    tenant: str = "",
    redirect_uri: str = "",
) -> Response:
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
    return json_response(spec.status, payload)

# --------------------------------------------------------------------------------------------------
# Microsoft Graph


def graph_error(
    status: int, code: str, message: str, request: Request, headers: Mapping[str, str] | None = None
) -> Response:
    request_id = str(uuid.uuid4())
    inner = {
        "date": iso(time.time()),
        "request-id": request_id,
        "client-request-id": request.correlation_id(),
    }
    return json_response(
        status,
        {"error": {"code": code, "message": message, "innerError": inner}},
        {"request-id": request_id, **(headers or {})},
    )


def graph_unauthenticated(request: Request, message: str) -> Response:
    challenge = (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return graph_error(401, "InvalidAuthenticationToken", message, request, {"WWW-Authenticate": challenge})


def graph_item_not_found(request: Request) -> Response:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.", request)


def graph_folder_not_found(request: Request) -> Response:
    message = "The specified folder could not be found in the store."
    return graph_error(404, "ErrorItemNotFound", message, request)


def graph_access_denied(request: Request) -> Response:
    return graph_error(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.", request
    )
