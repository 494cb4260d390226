"""Fault injection: which faults apply where, arming them, and the answer each provider gives for
each fault on each surface (token endpoint, send, read).

A fault is armed per account and surface (``Sandbox.inject_fault``); the endpoint that serves that
account takes it (``State.take_fault``) before doing its work and answers with ``fault_response``.
"""

import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from local.sandbox.errors import (
    aadsts,
    gmail_insufficient_scopes,
    gmail_unauthenticated,
    google_api_error,
    google_oauth_error,
    graph_access_denied,
    graph_error,
    graph_unauthenticated,
)
from local.sandbox.http import Request, Response, first
from local.sandbox.scopes import GMAIL_READONLY, GMAIL_SEND
from local.sandbox.state import Fault, Provider, State, Surface
from local.sandbox.util import account_key, iso

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


def arm(
    state: State,
    email: str,
    surface: Surface,
    fault: str,
    *,
    times: int | None,
    retry_after: int,
    hold_seconds: float,
) -> None:
    """Check that the fault applies to this surface and account, then queue it (see ``inject_fault``)."""
    key = account_key(email)
    if surface not in _FAULTS_BY_SURFACE:
        raise ValueError(f"surface must be one of {sorted(_FAULTS_BY_SURFACE)}")
    is_aadsts = re.fullmatch(r"aadsts:\d+", fault) is not None
    allowed = _FAULTS_BY_SURFACE[surface]
    if not (fault in allowed or (is_aadsts and surface == "token")):
        raise ValueError(f"fault {fault!r} does not apply to {surface!r}; choose from {sorted(allowed)}")
    if times is not None and times < 1:
        raise ValueError("times must be at least 1 (or None for until cleared)")
    with state.lock:
        google, microsoft = key in state.google_accounts, key in state.microsoft_accounts
        if not (google or microsoft):
            raise KeyError(f"no account {email}")
        if (is_aadsts and not microsoft) or (fault == "invalid_rapt" and not google):
            raise ValueError(f"fault {fault!r} needs a {'Microsoft' if is_aadsts else 'Google'} account")
        state.faults.setdefault((key, surface), []).append(Fault(fault, times, retry_after, hold_seconds))


# --------------------------------------------------------------------------------------------------
# Faults rendered per provider and surface


def fault_response(fault: Fault, provider: Provider, surface: Surface, request: Request) -> Response:
    retry = {"Retry-After": str(fault.retry_after)}
    if fault.kind == "timeout":
        return Response(0, hold_seconds=fault.hold_seconds)
    if fault.kind == "html_502":
        page = _GOOGLE_502_PAGE if provider == "google" else _MICROSOFT_502_PAGE
        return Response(502, page.encode(), "text/html; charset=UTF-8")
    if fault.kind.startswith("aadsts:"):
        return aadsts(
            int(fault.kind.partition(":")[2]), request, client_id=first(request.form(), "client_id")
        )
    if surface == "token":
        if provider == "google":
            return _google_token_fault(fault.kind, retry)
        return _microsoft_token_fault(fault.kind, retry, request)
    if provider == "google":
        return _gmail_fault(fault.kind, retry)
    return _graph_fault(fault.kind, retry, request)


def _google_token_fault(kind: str, retry: Mapping[str, str]) -> Response:
    match kind:
        case "invalid_grant":
            return google_oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        case "invalid_rapt":
            return google_oauth_error(
                400,
                "invalid_grant",
                "reauth related error (invalid_rapt)",
                error_uri="https://support.google.com/a/answer/9368756",
                error_subtype="invalid_rapt",
            )
        case "invalid_client":
            return google_oauth_error(401, "invalid_client", "Unauthorized")
        case "domain_policy_403":
            # Google reports a Workspace admin block on the token endpoint as a 400.
            return google_oauth_error(
                400,
                "admin_policy_enforced",
                "Access to your account data is restricted by policies within your organization.",
            )
        case "rate_limit_429":
            response = google_oauth_error(429, "rate_limit_exceeded", "Rate Limit Exceeded")
            response.headers.update(retry)
            return response
        case "server_error_500":
            return google_oauth_error(500, "internal_failure", "Backend Error")
        case _:
            return google_oauth_error(
                503, "temporarily_unavailable", "The service is currently unavailable."
            )


def _microsoft_token_fault(kind: str, retry: Mapping[str, str], request: Request) -> Response:
    number = {
        "invalid_grant": 50173,
        "invalid_client": 7000215,
        "domain_policy_403": 53003,
        "rate_limit_429": 90055,
        "server_error_500": 50000,
    }.get(kind, 90033)
    response = aadsts(number, request, client_id=first(request.form(), "client_id"))
    if response.status in (429, 503):
        response.headers.update(retry)
    return response


def _gmail_fault(kind: str, retry: Mapping[str, str]) -> Response:
    match kind:
        case "unauthorized_401":
            return gmail_unauthenticated()
        case "insufficient_scopes_403":
            return gmail_insufficient_scopes([GMAIL_SEND, GMAIL_READONLY])
        case "domain_policy_403":
            return google_api_error(
                403,
                "PERMISSION_DENIED",
                "The domain administrators have disabled Gmail apps.",
                "domainPolicy",
            )
        case "rate_limit_429":
            until = iso(time.time() + int(retry["Retry-After"]))
            message = f"User-rate limit exceeded.  Retry after {until}"
            return google_api_error(
                429, "RESOURCE_EXHAUSTED", message, "rateLimitExceeded", domain="usageLimits", headers=retry
            )
        case "server_error_500":
            return google_api_error(500, "INTERNAL", "Backend Error", "backendError")
        case _:
            return google_api_error(
                503, "UNAVAILABLE", "The service is currently unavailable.", "backendError"
            )


def _graph_fault(kind: str, retry: Mapping[str, str], request: Request) -> Response:
    match kind:
        case "unauthorized_401":
            return graph_unauthenticated(request, "Lifetime validation failed, the token is expired.")
        case "insufficient_scopes_403":
            return graph_access_denied(request)
        case "domain_policy_403":
            return graph_error(403, "ErrorAccessDenied", "Access to OData is disabled.", request)
        case "rate_limit_429":
            message = "Application is over its MailboxConcurrency limit."
            return graph_error(429, "ApplicationThrottled", message, request, retry)
        case "server_error_500":
            message = "An internal server error occurred. The operation failed."
            return graph_error(500, "ErrorInternalServerError", message, request)
        case _:
            return graph_error(503, "serviceNotAvailable", "Service unavailable.", request, retry)
