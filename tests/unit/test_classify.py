"""The provider error classifier, fed what the real client libraries produce.

Google errors come from google-auth's own refresh code, msal results and exceptions from msal's own
token code (both over a requests session whose adapter answers instead of the network); SMTP and
IMAP errors that need no server are built as smtplib and imaplib raise them. What real servers on
127.0.0.1 answer (aiosmtpd, a scripted IMAP server) is in ``tests/e2e/test_classify_servers.py``.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import google.auth._exponential_backoff
import google.auth.transport.requests
import google.oauth2.credentials
import msal
import pytest
import requests
from google.auth import exceptions as google_exceptions
from google.oauth2 import _client as google_client
from msal.exceptions import MsalServiceError
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from sendwell.classify import (
    classify_gmail_exception,
    classify_gmail_response,
    classify_google_refresh_error,
    classify_google_transport_error,
    classify_graph_exception,
    classify_graph_response,
    classify_imap_error,
    classify_msal_exception,
    classify_msal_result,
    classify_smtp_error,
    parse_retry_after,
    retry_after_from_headers,
)
from sendwell.failures import Failure, FailureKind
from tests.smtp_server import TEST_PASSWORD

AUTH_LOST = FailureKind.AUTH_LOST
USER_ACTION = FailureKind.USER_ACTION
APP_CONFIG = FailureKind.APP_CONFIG
TRANSIENT = FailureKind.TRANSIENT
RATE_LIMITED = FailureKind.RATE_LIMITED
RECIPIENT_REJECTED = FailureKind.RECIPIENT_REJECTED
BAD_MESSAGE = FailureKind.BAD_MESSAGE

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)

# Secrets put into requests and payloads; no Failure may ever contain one.
REFRESH_TOKEN = "1//0gSendwellTestRefreshToken-L9IrkKq0cCgYIARAAGBASNwF"
ACCESS_TOKEN = "ya29.a0AfB_bySendwellTestAccessToken0123456789abcdef"
GOOGLE_CLIENT_SECRET = "GOCSPX-SendwellTestClientSecret01"
MS_CLIENT_SECRET = "Qx48Q~SendwellTestClientSecret.abcdefghij"
SIGN_IN_CONTINUATION = "AKgnsbtSendwellTestSignInContinuation0123456789"
SECRETS = (
    REFRESH_TOKEN,
    ACCESS_TOKEN,
    GOOGLE_CLIENT_SECRET,
    MS_CLIENT_SECRET,
    SIGN_IN_CONTINUATION,
    TEST_PASSWORD,
)

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_CLIENT_ID = "123456789012-sendwelltest.apps.googleusercontent.com"
MS_AUTHORITY = "https://login.microsoftonline.com/organizations"
MS_CLIENT_ID = "3f2b7c1e-8d4a-4b6e-9f0a-1c2d3e4f5a6b"
MS_SCOPES = ["https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/Mail.ReadWrite"]

Reply = tuple[int, bytes, Mapping[str, str]]
JSON = {"Content-Type": "application/json; charset=utf-8"}
HTML = {"Content-Type": "text/html; charset=UTF-8"}


def check(failure: Failure, kind: FailureKind, code: str) -> None:
    """What every classified case must satisfy, beyond its own kind and code."""
    assert (failure.kind, failure.code) == (kind, code)
    assert failure.reason
    if kind in (AUTH_LOST, USER_ACTION, APP_CONFIG):
        assert failure.fix, "whoever has to act is told how"
    if kind is TRANSIENT:
        assert failure.kind.disconnects is False
    for secret in SECRETS:
        assert secret not in f"{failure.code} {failure.reason} {failure.fix}"


# --- A requests session that answers from a script --------------------------------------------


class CannedAdapter(HTTPAdapter):
    """Answers token requests with ``reply`` (or raises it) and msal's discovery GET with a document."""

    def __init__(self, reply: Reply | requests.RequestException) -> None:
        super().__init__()
        self.reply = reply
        self.posts = 0

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        reply: Reply
        if request.method == "GET":
            reply = (200, json.dumps(_openid_configuration()).encode(), JSON)
        else:
            self.posts += 1
            if isinstance(self.reply, requests.RequestException):
                raise self.reply
            reply = self.reply
        status, body, headers = reply
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers = CaseInsensitiveDict(headers)
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response


def _openid_configuration() -> dict[str, str]:
    base = "https://login.microsoftonline.com/organizations"
    return {
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
    }


def canned_session(reply: Reply | requests.RequestException) -> tuple[requests.Session, CannedAdapter]:
    session, adapter = requests.Session(), CannedAdapter(reply)
    session.mount("https://", adapter)
    return session, adapter


# --- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param("Tue, 03 Jun 2025 10:01:30 GMT", 90.0, id="http-date"),
        pytest.param("Tue, 03 Jun 2025 10:01:30 -0000", 90.0, id="http-date-naive-zone"),
        pytest.param("Tue, 03 Jun 2025 09:00:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_retry_after_header_name_is_case_insensitive() -> None:
    assert retry_after_from_headers({"retry-after": "7"}) == 7.0
    assert retry_after_from_headers({"RETRY-AFTER": "7"}) == 7.0
    assert retry_after_from_headers({"Content-Type": "text/html"}) is None


# --- Google token refresh -------------------------------------------------------------------------


@pytest.fixture(name="no_backoff")
def no_backoff_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth retries 5xx with real sleeps; only its own module's clock is replaced."""
    monkeypatch.setattr(google.auth._exponential_backoff, "time", SimpleNamespace(sleep=lambda _s: None))


def google_refresh_error(reply: Reply) -> google_exceptions.RefreshError:
    """What ``Credentials.refresh`` raises when Google's token endpoint answers ``reply``."""
    session, _ = canned_session(reply)
    credentials = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=REFRESH_TOKEN,
        token_uri=GOOGLE_TOKEN_URI,
        client_id=GOOGLE_CLIENT_ID,
        client_secret=GOOGLE_CLIENT_SECRET,
        scopes=[
            "https://www.googleapis.com/auth/gmail.send",
            "https://www.googleapis.com/auth/gmail.readonly",
        ],
    )
    with pytest.raises(google_exceptions.RefreshError) as caught:
        credentials.refresh(google.auth.transport.requests.Request(session))
    return caught.value


def oauth_error(error: str, description: str, **extra: str) -> bytes:
    return json.dumps({"error": error, "error_description": description, **extra}).encode()


RAPT = {"error_uri": "https://support.google.com/a/answer/9368756"}
GOOGLE_502 = (
    b"<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 502 (Server Error)!!1</title>\n"
    b"  <p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins>\n  <p>The server encountered a temporary error"
    b" and could not complete your request.<p>Please try again in 30 seconds.  <ins>That\xe2\x80\x99s all we"
    b" know.</ins>\n"
)


@pytest.mark.parametrize(
    ("reply", "kind", "code"),
    [
        pytest.param(
            (400, oauth_error("invalid_grant", "Token has been expired or revoked."), JSON),
            AUTH_LOST,
            "google:invalid_grant",
            id="invalid_grant-revoked",
        ),
        pytest.param(
            (400, oauth_error("invalid_grant", "Account has been deleted"), JSON),
            AUTH_LOST,
            "google:invalid_grant account-deleted",
            id="invalid_grant-account-deleted",
        ),
        pytest.param(
            (
                400,
                oauth_error(
                    "invalid_grant",
                    "reauth related error (invalid_rapt)",
                    **RAPT,
                    error_subtype="invalid_rapt",
                ),
                JSON,
            ),
            USER_ACTION,
            "google:reauth_required",
            id="invalid_rapt",
        ),
        pytest.param(
            (
                400,
                oauth_error("invalid_grant", "reauth related error (rapt_required)", error_subtype="rapt_required"),
                JSON,
            ),
            USER_ACTION,
            "google:reauth_required",
            id="rapt_required",
        ),
        pytest.param(
            (400, oauth_error("invalid_scope", "Bad Request"), JSON),
            USER_ACTION,
            "google:invalid_scope",
            id="invalid_scope",
        ),
        pytest.param(
            (401, oauth_error("invalid_client", "The OAuth client was deleted."), JSON),
            APP_CONFIG,
            "google:invalid_client",
            id="invalid_client",
        ),
        pytest.param(
            (401, oauth_error("unauthorized_client", "Unauthorized"), JSON),
            APP_CONFIG,
            "google:unauthorized_client",
            id="unauthorized_client",
        ),
        pytest.param(
            (500, oauth_error("internal_failure", "Backend Error"), JSON),
            TRANSIENT,
            "google:internal_failure",
            id="500-retryable",
        ),
        pytest.param(
            (503, b"Service Unavailable", {"Content-Type": "text/plain"}),
            TRANSIENT,
            "google:non_json_response",
            id="503-text",
        ),
        pytest.param((502, GOOGLE_502, HTML), TRANSIENT, "google:non_json_response", id="502-html"),
        pytest.param(
            (400, oauth_error("invalid_request", "Missing required parameter: refresh_token"), JSON),
            TRANSIENT,
            "google:invalid_request",
            id="unknown-error-not-retryable",
        ),
        pytest.param(
            (400, json.dumps({"error": {"code": 400, "message": "Bad Request"}}).encode(), JSON),
            TRANSIENT,
            "google:unknown",
            id="unknown-shape",
        ),
    ],
)
@pytest.mark.usefixtures("no_backoff")
def test_google_refresh_errors(reply: Reply, kind: FailureKind, code: str) -> None:
    check(classify_google_refresh_error(google_refresh_error(reply)), kind, code)


@pytest.mark.parametrize("subtype", ["invalid_rapt", "rapt_required"])
def test_google_reauth_with_response_data(subtype: str) -> None:
    """google-auth's plain refresh grant (no reauth handling) raises the data itself."""
    body = oauth_error("invalid_grant", f"reauth related error ({subtype})", **RAPT, error_subtype=subtype)
    session, _ = canned_session((400, body, JSON))
    request = google.auth.transport.requests.Request(session)
    with pytest.raises(google_exceptions.RefreshError) as caught:
        google_client.refresh_grant(request, GOOGLE_TOKEN_URI, REFRESH_TOKEN, GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)
    assert caught.value.retryable is False
    failure = classify_google_refresh_error(caught.value)
    check(failure, USER_ACTION, f"google:{subtype}")
    assert "Google Workspace admin requires you to sign in again" in failure.reason


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        pytest.param(requests.exceptions.ConnectTimeout("connect timeout"), "google:connection_failed", id="connect"),
        pytest.param(requests.exceptions.ReadTimeout("read timed out"), "google:timeout", id="read-timeout"),
        pytest.param(requests.exceptions.ConnectionError("connection reset"), "google:connection_failed", id="reset"),
    ],
)
def test_google_transport_errors(raised: requests.RequestException, code: str) -> None:
    session, _ = canned_session(raised)
    credentials = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=REFRESH_TOKEN,
        token_uri=GOOGLE_TOKEN_URI,
        client_id=GOOGLE_CLIENT_ID,
        client_secret=GOOGLE_CLIENT_SECRET,
    )
    with pytest.raises(google_exceptions.TransportError) as caught:
        credentials.refresh(google.auth.transport.requests.Request(session))
    check(classify_google_transport_error(caught.value), TRANSIENT, code)


# --- Gmail API ------------------------------------------------------------------------------------


def gmail_error(
    status: int,
    message: str,
    reason: str | None,
    *,
    state: str,
    domain: str = "global",
    details: list[dict[str, Any]] | None = None,
) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if reason is not None:
        error["errors"] = [{"message": message, "domain": domain, "reason": reason}]
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}).encode()


def error_info(reason: str, **metadata: str) -> list[dict[str, Any]]:
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": "gmail.googleapis.com", **metadata},
        }
    ]


SCOPES_MESSAGE = "Request had insufficient authentication scopes."
SEND_METHOD = {"method": "caribou.api.proto.MailboxService.SendMessage"}
QUOTA_MESSAGE = (
    "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service "
    "'gmail.googleapis.com' for consumer 'project_number:123456789012'."
)
API_DISABLED = (
    "Gmail API has not been used in project 123456789012 before or it is disabled. Enable it by visiting "
    "https://console.developers.google.com/apis/api/gmail.googleapis.com/overview?project=123456789012 then "
    "retry."
)
GOOGLE_SORRY_PAGE = b"<html><head><title>Sorry...</title></head><body>We're sorry... but your computer or "
GOOGLE_SORRY_PAGE += b"network may be sending automated queries.</body></html>"


GMAIL_RESPONSES = [
    pytest.param(
        401,
        gmail_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
            f"or other valid authentication credential. Token: {ACCESS_TOKEN}",
            "authError",
            state="UNAUTHENTICATED",
        ),
        JSON,
        AUTH_LOST,
        "gmail:401 authError",
        None,
        id="401",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            SCOPES_MESSAGE,
            "insufficientPermissions",
            state="PERMISSION_DENIED",
            details=error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", **SEND_METHOD),
        ),
        JSON,
        USER_ACTION,
        "gmail:403 insufficientPermissions",
        None,
        id="insufficientPermissions",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            SCOPES_MESSAGE,
            None,
            state="PERMISSION_DENIED",
            details=error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", **SEND_METHOD),
        ),
        JSON,
        USER_ACTION,
        "gmail:403 ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        None,
        id="ACCESS_TOKEN_SCOPE_INSUFFICIENT-only",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            "The domain administrators have disabled Gmail apps.",
            "domainPolicy",
            state="PERMISSION_DENIED",
        ),
        JSON,
        USER_ACTION,
        "gmail:403 domainPolicy",
        None,
        id="domainPolicy",
    ),
    pytest.param(
        400,
        gmail_error(400, "Mail service not enabled", "failedPrecondition", state="FAILED_PRECONDITION"),
        JSON,
        USER_ACTION,
        "gmail:400 failedPrecondition",
        None,
        id="failedPrecondition",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            QUOTA_MESSAGE,
            "rateLimitExceeded",
            state="PERMISSION_DENIED",
            domain="usageLimits",
            details=error_info("RATE_LIMIT_EXCEEDED", quota_limit="QueriesPerMinutePerUser"),
        ),
        JSON,
        RATE_LIMITED,
        "gmail:403 rateLimitExceeded",
        None,
        id="403-rateLimitExceeded",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            "User Rate Limit Exceeded",
            "userRateLimitExceeded",
            state="PERMISSION_DENIED",
            domain="usageLimits",
        ),
        JSON,
        RATE_LIMITED,
        "gmail:403 userRateLimitExceeded",
        None,
        id="userRateLimitExceeded",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            "Daily Limit Exceeded",
            "dailyLimitExceeded",
            state="PERMISSION_DENIED",
            domain="usageLimits",
        ),
        JSON,
        RATE_LIMITED,
        "gmail:403 dailyLimitExceeded",
        None,
        id="dailyLimitExceeded",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            QUOTA_MESSAGE.replace("per minute", "per day"),
            "quotaExceeded",
            state="PERMISSION_DENIED",
            domain="usageLimits",
        ),
        JSON,
        RATE_LIMITED,
        "gmail:403 quotaExceeded",
        None,
        id="quotaExceeded",
    ),
    pytest.param(
        429,
        gmail_error(
            429,
            "User-rate limit exceeded.  Retry after 2025-06-03T11:30:00.000Z",
            "rateLimitExceeded",
            state="RESOURCE_EXHAUSTED",
        ),
        JSON,
        RATE_LIMITED,
        "gmail:429 rateLimitExceeded",
        5400.0,
        id="429-sending-limit-retry-after-in-message",
    ),
    pytest.param(
        429,
        gmail_error(429, "Too many concurrent requests for user", "rateLimitExceeded", state="RESOURCE_EXHAUSTED"),
        {**JSON, "Retry-After": "45"},
        RATE_LIMITED,
        "gmail:429 rateLimitExceeded",
        45.0,
        id="429-retry-after-header",
    ),
    pytest.param(
        429,
        GOOGLE_SORRY_PAGE,
        {**HTML, "Retry-After": "Tue, 03 Jun 2025 10:05:00 GMT"},
        RATE_LIMITED,
        "gmail:429",
        300.0,
        id="429-html-http-date",
    ),
    pytest.param(
        400,
        gmail_error(400, "Invalid To header", "invalidArgument", state="INVALID_ARGUMENT"),
        JSON,
        BAD_MESSAGE,
        "gmail:400 invalidArgument",
        None,
        id="invalidArgument",
    ),
    pytest.param(
        413,
        gmail_error(413, "Request payload size exceeds the limit: 36700160 bytes.", "uploadTooLarge", state="N/A"),
        JSON,
        BAD_MESSAGE,
        "gmail:413 uploadTooLarge",
        None,
        id="413",
    ),
    pytest.param(
        403,
        gmail_error(
            403,
            API_DISABLED,
            "accessNotConfigured",
            state="PERMISSION_DENIED",
            domain="usageLimits",
            details=error_info("SERVICE_DISABLED"),
        ),
        JSON,
        APP_CONFIG,
        "gmail:403 accessNotConfigured",
        None,
        id="api-disabled",
    ),
    pytest.param(
        500,
        gmail_error(500, "Internal error encountered.", "backendError", state="INTERNAL"),
        JSON,
        TRANSIENT,
        "gmail:500",
        None,
        id="500",
    ),
    pytest.param(
        503,
        gmail_error(503, "The service is currently unavailable.", "backendError", state="UNAVAILABLE"),
        {**JSON, "Retry-After": "30"},
        TRANSIENT,
        "gmail:503",
        30.0,
        id="503-retry-after",
    ),
    pytest.param(502, GOOGLE_502, HTML, TRANSIENT, "gmail:502", None, id="502-html"),
    pytest.param(401, b"<html><body>Unauthorized</body></html>", HTML, TRANSIENT, "gmail:401", None, id="401-html"),
    pytest.param(
        404,
        gmail_error(404, "Requested entity was not found.", "notFound", state="NOT_FOUND"),
        JSON,
        TRANSIENT,
        "gmail:404 notFound",
        None,
        id="unknown-404",
    ),
]


def test_gmail_accepts_decoded_and_text_bodies() -> None:
    body = gmail_error(403, SCOPES_MESSAGE, "insufficientPermissions", state="PERMISSION_DENIED")
    as_bytes = classify_gmail_response(403, body, JSON)
    assert classify_gmail_response(403, json.loads(body), JSON) == as_bytes
    assert classify_gmail_response(403, body.decode(), JSON) == as_bytes


# --- Microsoft Graph ------------------------------------------------------------------------------


def graph_error(code: str, message: str, inner_code: str | None = None) -> bytes:
    inner: dict[str, str] = {
        "date": "2025-06-03T10:00:00",
        "request-id": "5f0b3c1e-2a4d-4e6f-8a9b-0c1d2e3f4a5b",
        "client-request-id": "5f0b3c1e-2a4d-4e6f-8a9b-0c1d2e3f4a5b",
    }
    if inner_code is not None:
        inner["code"] = inner_code
    return json.dumps({"error": {"code": code, "message": message, "innerError": inner}}).encode()


GATEWAY_TIMEOUT = (
    b"<html><head><title>504 Gateway Time-out</title></head><body><h1>504 Gateway Time-out</h1></body></html>"
)


GRAPH_RESPONSES = [
    pytest.param(
        401,
        graph_error("InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."),
        JSON,
        AUTH_LOST,
        "graph:401 InvalidAuthenticationToken",
        None,
        id="401",
    ),
    pytest.param(
        403,
        graph_error("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
        JSON,
        USER_ACTION,
        "graph:403 ErrorAccessDenied",
        None,
        id="ErrorAccessDenied",
    ),
    pytest.param(
        403,
        graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
        JSON,
        USER_ACTION,
        "graph:403 Authorization_RequestDenied",
        None,
        id="Authorization_RequestDenied",
    ),
    pytest.param(
        404,
        graph_error(
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ),
        JSON,
        USER_ACTION,
        "graph:404 MailboxNotEnabledForRESTAPI",
        None,
        id="MailboxNotEnabledForRESTAPI",
    ),
    pytest.param(
        404,
        graph_error(
            "ResourceNotFound",
            "REST API is not yet supported for this mailbox.",
            "MailboxNotSupportedForRESTAPI",
        ),
        JSON,
        USER_ACTION,
        "graph:404 MailboxNotSupportedForRESTAPI",
        None,
        id="inner-MailboxNotSupportedForRESTAPI",
    ),
    pytest.param(
        403,
        graph_error(
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail "
            "on behalf of the specified sending account., Cannot submit message.",
        ),
        JSON,
        USER_ACTION,
        "graph:403 ErrorSendAsDenied",
        None,
        id="ErrorSendAsDenied",
    ),
    pytest.param(
        403,
        graph_error(
            "ErrorMessageSubmissionBlocked",
            "Cannot send mail. Follow the instructions in your Inbox to verify your account., Cannot submit message.",
        ),
        JSON,
        USER_ACTION,
        "graph:403 ErrorMessageSubmissionBlocked",
        None,
        id="ErrorMessageSubmissionBlocked",
    ),
    pytest.param(
        403,
        graph_error("ErrorQuotaExceeded", "The mailbox quota has been exceeded."),
        JSON,
        USER_ACTION,
        "graph:403 ErrorQuotaExceeded",
        None,
        id="ErrorQuotaExceeded-mailbox-full",
    ),
    pytest.param(
        403,
        graph_error(
            "ErrorExceededMessageLimit",
            "Cannot send mail. Daily Message/Recipient limit exceeded. Follow the instructions in your "
            "Inbox to verify your account.",
        ),
        JSON,
        RATE_LIMITED,
        "graph:403 ErrorExceededMessageLimit",
        None,
        id="ErrorExceededMessageLimit",
    ),
    pytest.param(
        429,
        graph_error("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
        {**JSON, "Retry-After": "10"},
        RATE_LIMITED,
        "graph:429 ApplicationThrottled",
        10.0,
        id="429",
    ),
    pytest.param(
        400,
        graph_error(
            "ErrorMessageSizeExceeded",
            "The message exceeds the maximum supported size., Cannot save changes made to an item to store.",
        ),
        JSON,
        BAD_MESSAGE,
        "graph:400 ErrorMessageSizeExceeded",
        None,
        id="ErrorMessageSizeExceeded",
    ),
    pytest.param(
        400,
        graph_error("ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."),
        JSON,
        BAD_MESSAGE,
        "graph:400 ErrorMimeContentInvalidBase64String",
        None,
        id="ErrorMimeContentInvalidBase64String",
    ),
    pytest.param(
        400,
        graph_error(
            "ErrorInvalidRecipients",
            "At least one recipient is not valid., Recipient 'jorg.muller@@beispiel.de' is not resolved. "
            "All recipients must be resolved before a message can be submitted.",
        ),
        JSON,
        RECIPIENT_REJECTED,
        "graph:400 ErrorInvalidRecipients",
        None,
        id="ErrorInvalidRecipients",
    ),
    pytest.param(
        503,
        graph_error("ServiceUnavailable", "Service Unavailable"),
        {**JSON, "Retry-After": "30"},
        TRANSIENT,
        "graph:503",
        30.0,
        id="503",
    ),
    pytest.param(504, GATEWAY_TIMEOUT, HTML, TRANSIENT, "graph:504", None, id="504-html"),
    pytest.param(
        400,
        graph_error("ErrorInvalidIdMalformed", "Id is malformed."),
        JSON,
        TRANSIENT,
        "graph:400 ErrorInvalidIdMalformed",
        None,
        id="unknown-code",
    ),
]


@pytest.mark.parametrize(
    ("classify", "status", "body", "headers", "kind", "code", "retry_after"),
    [
        *(pytest.param(classify_gmail_response, *case.values, id=f"gmail-{case.id}") for case in GMAIL_RESPONSES),
        *(pytest.param(classify_graph_response, *case.values, id=f"graph-{case.id}") for case in GRAPH_RESPONSES),
    ],
)
def test_api_responses(
    classify: Callable[..., Failure],
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    kind: FailureKind,
    code: str,
    retry_after: float | None,
) -> None:
    failure = classify(status, body, headers, now=NOW)
    check(failure, kind, code)
    assert failure.retry_after == retry_after


@pytest.mark.parametrize(
    ("raised", "name"),
    [
        pytest.param(requests.exceptions.ConnectTimeout("connect timeout"), "connection_failed", id="connect"),
        pytest.param(requests.exceptions.ReadTimeout("read timed out"), "timeout", id="read-timeout"),
        pytest.param(requests.exceptions.ConnectionError("connection reset"), "connection_failed", id="reset"),
        pytest.param(requests.exceptions.ChunkedEncodingError("body cut short"), "network", id="cut-short"),
    ],
)
@pytest.mark.parametrize(
    ("api", "url", "classify"),
    [
        pytest.param("gmail", "https://gmail.googleapis.com/gmail/v1/users/me", classify_gmail_exception, id="gmail"),
        pytest.param("graph", "https://graph.microsoft.com/v1.0/me/sendMail", classify_graph_exception, id="graph"),
    ],
)
def test_api_calls_that_get_no_answer(
    raised: requests.RequestException,
    name: str,
    api: str,
    url: str,
    classify: Callable[[requests.RequestException], Failure],
) -> None:
    session, _ = canned_session(raised)
    with pytest.raises(requests.RequestException) as caught:
        session.post(url, data=b"{}", timeout=5)
    check(classify(caught.value), TRANSIENT, f"{api}:{name}")


# --- Microsoft identity platform (msal) -----------------------------------------------------------


def aad_error(error: str, code: int, description: str, suberror: str | None = None) -> bytes:
    """A token-endpoint error as Microsoft Entra sends it."""
    ids = "Trace ID: 8c4e0b52-9d3a-4f1e-b7c6-2a1d0e9f8b00 Correlation ID: 1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6"
    body: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} {ids} Timestamp: 2025-06-03 10:00:00Z",
        "error_codes": [code],
        "timestamp": "2025-06-03 10:00:00Z",
        "trace_id": "8c4e0b52-9d3a-4f1e-b7c6-2a1d0e9f8b00",
        "correlation_id": "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6",
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    if suberror is not None:
        body["suberror"] = suberror
    return json.dumps(body).encode()


def msal_app(session: requests.Session) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        MS_CLIENT_ID,
        client_credential=MS_CLIENT_SECRET,
        authority=MS_AUTHORITY,
        http_client=session,
        instance_discovery=False,
    )


def msal_refresh(reply: Reply | requests.RequestException) -> dict[str, Any]:
    session, _ = canned_session(reply)
    result: dict[str, Any] = msal_app(session).acquire_token_by_refresh_token(REFRESH_TOKEN, scopes=MS_SCOPES)
    return result


GRAPH_APP = "'00000003-0000-0000-c000-000000000000'"
MOVED = "Due to a configuration change made by your administrator, or because you moved to a new location, you must"
ISSUED = "The token was issued on 2025-03-01T08:00:00.0000000Z"

MSAL_CASES = [
    pytest.param(
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a new "
        "interactive authorization request for this user and resource.",
        None,
        AUTH_LOST,
        id="70008",
    ),
    pytest.param(
        "invalid_grant",
        700082,
        f"The refresh token has expired due to inactivity. {ISSUED} and was inactive for 90.00:00:00.",
        None,
        AUTH_LOST,
        id="700082",
    ),
    pytest.param(
        "invalid_grant",
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
        "might have changed or reset their password. The grant was issued on '2025-03-01T08:00:00.0000000Z' "
        "and the TokensValidFrom date (before which tokens are not valid) for this user is "
        "'2025-05-20T14:12:09.0000000Z'.",
        None,
        AUTH_LOST,
        id="50173",
    ),
    pytest.param(
        "invalid_grant",
        70000,
        "The request was denied because one or more scopes requested are unauthorized or expired. The user "
        "must first sign in and grant the client application access to the requested scope.",
        None,
        AUTH_LOST,
        id="70000",
    ),
    pytest.param(
        "invalid_grant",
        50034,
        "The user account {EUII Hidden} does not exist in the 6b1f8d2e-4c3a-4e5b-9d7f-0a1b2c3d4e5f "
        "directory. To sign into this application, the account must be added to the directory.",
        None,
        AUTH_LOST,
        id="50034",
    ),
    pytest.param(
        "invalid_grant",
        50076,
        f"{MOVED} use multi-factor authentication to access {GRAPH_APP}.",
        "basic_action",
        USER_ACTION,
        id="50076",
    ),
    pytest.param(
        "invalid_grant",
        50079,
        f"{MOVED} enroll in multi-factor authentication to access {GRAPH_APP}.",
        "basic_action",
        USER_ACTION,
        id="50079",
    ),
    pytest.param(
        "invalid_grant",
        50078,
        "Presented multi-factor authentication has expired due to policies configured by your administrator, "
        f"you must refresh your multi-factor authentication to access {GRAPH_APP}.",
        "basic_action",
        USER_ACTION,
        id="50078",
    ),
    pytest.param(
        "invalid_grant",
        65001,
        f"The user or administrator has not consented to use the application with ID '{MS_CLIENT_ID}' named "
        "'sendwell'. Send an interactive authorization request for this user and resource.",
        "consent_required",
        USER_ACTION,
        id="65001",
    ),
    pytest.param(
        "invalid_grant",
        53003,
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        "message_only",
        USER_ACTION,
        id="53003",
    ),
    pytest.param(
        "invalid_grant",
        530032,
        "The tenant admin has configured a security policy that blocks this request. Check the security "
        "policies that are defined on the tenant level to determine if your request meets the policy "
        "requirements.",
        "message_only",
        USER_ACTION,
        id="530032",
    ),
    pytest.param("invalid_grant", 50057, "The user account is disabled.", "message_only", USER_ACTION, id="50057"),
    pytest.param(
        "invalid_grant",
        50053,
        "The account is locked, you've tried to sign in too many times with an incorrect user ID or password.",
        "message_only",
        TRANSIENT,  # a lockout lifts by itself, and the saved sign-in is still good
        id="50053",
    ),
    pytest.param("invalid_grant", 50055, "The password is expired.", "user_password_expired", USER_ACTION, id="50055"),
    pytest.param(
        "invalid_grant",
        50132,
        "The session has been revoked due to password change or password expiry.",
        "bad_token",
        USER_ACTION,
        id="50132",
    ),
    pytest.param(
        "invalid_grant",
        70043,
        "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. "
        f"{ISSUED} and the maximum allowed lifetime for this request is 86400.",
        "bad_token",
        USER_ACTION,
        id="70043",
    ),
    pytest.param(
        "invalid_client",
        7000222,
        f"The provided client secret keys for app '{MS_CLIENT_ID}' are expired. Visit the Azure portal to "
        "create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
        "credentials for added security: https://aka.ms/certCreds.",
        None,
        APP_CONFIG,
        id="7000222",
    ),
    pytest.param(
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        f"value, not the client secret ID, for a secret added to app '{MS_CLIENT_ID}'.",
        None,
        APP_CONFIG,
        id="7000215",
    ),
    pytest.param(
        "unauthorized_client",
        700016,
        f"Application with identifier '{MS_CLIENT_ID}' was not found in the directory 'Contoso'. This can "
        "happen if the application has not been installed by the administrator of the tenant or consented to "
        "by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
        None,
        APP_CONFIG,
        id="700016",
    ),
]


@pytest.mark.parametrize(("error", "aadsts", "description", "suberror", "kind"), MSAL_CASES)
def test_msal_results(error: str, aadsts: int, description: str, suberror: str | None, kind: FailureKind) -> None:
    status = 401 if error == "invalid_client" else 400
    result = msal_refresh((status, aad_error(error, aadsts, description, suberror), JSON))
    check(classify_msal_result(result), kind, f"aadsts:{aadsts}")


def test_each_msal_user_action_has_its_own_reason_and_fix() -> None:
    failures = [
        classify_msal_result({"error": "invalid_grant", "error_codes": [case.values[1]]})
        for case in MSAL_CASES
        if case.values[4] is USER_ACTION
    ]
    assert len({f.reason for f in failures}) == len({f.fix for f in failures}) == len(failures)


@pytest.mark.parametrize("aadsts", [53003, 530032, 50057, 65001, 70043])
def test_msal_fix_says_when_the_microsoft_365_admin_must_act(aadsts: int) -> None:
    assert "Microsoft 365 admin" in classify_msal_result({"error": "invalid_grant", "error_codes": [aadsts]}).fix


@pytest.mark.parametrize(
    ("result", "kind", "code"),
    [
        # Codes not in the table fall back on the OAuth error, keeping the AADSTS code for ops.
        pytest.param(
            (
                401,
                aad_error(
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ),
                JSON,
            ),
            APP_CONFIG,
            "aadsts:7000218",
            id="invalid_client-other-code",
        ),
        pytest.param(
            (
                400,
                aad_error(
                    "interaction_required",
                    50158,
                    "External security challenge not satisfied. User will be "
                    "redirected to another page or authentication provider to satisfy additional "
                    "authentication challenges.",
                    "basic_action",
                ),
                JSON,
            ),
            USER_ACTION,
            "aadsts:50158",
            id="interaction_required",
        ),
        pytest.param(
            (
                400,
                aad_error(
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'grant_type'.",
                ),
                JSON,
            ),
            TRANSIENT,
            "aadsts:900144",
            id="unknown-invalid_request",
        ),
        # On a 5xx msal raises instead; OAuth also lets these two come with a 400, which msal returns.
        pytest.param(
            (
                400,
                aad_error("temporarily_unavailable", 90033, "A transient error has occurred. Please try again."),
                JSON,
            ),
            TRANSIENT,
            "aadsts:90033",
            id="temporarily_unavailable",
        ),
        pytest.param(
            (400, oauth_error("server_error", "Server error"), JSON),
            TRANSIENT,
            "msal:server_error",
            id="server_error",
        ),
    ],
)
def test_msal_results_by_oauth_error(result: Reply, kind: FailureKind, code: str) -> None:
    check(classify_msal_result(msal_refresh(result)), kind, code)


@pytest.mark.parametrize(
    ("reply", "raised", "code"),
    [
        pytest.param(
            (503, b"<html><body>Service Unavailable</body></html>", HTML),
            MsalServiceError,
            "msal:http_error",
            id="503-html",
        ),
        pytest.param(
            (500, aad_error("server_error", 90100, "Internal error."), JSON),
            MsalServiceError,
            "msal:http_error",
            id="500",
        ),
        pytest.param(
            (429, b"<html><body>Too Many Requests</body></html>", {**HTML, "Retry-After": "30"}),
            json.JSONDecodeError,
            "msal:non_json_response",
            id="429-html",
        ),
        pytest.param(
            requests.exceptions.ConnectionError("Max retries exceeded with url: /organizations/oauth2/v2.0/token"),
            requests.exceptions.ConnectionError,
            "msal:connection_failed",
            id="connection",
        ),
        pytest.param(
            requests.exceptions.ReadTimeout("Read timed out. (read timeout=10)"),
            requests.exceptions.ReadTimeout,
            "msal:timeout",
            id="timeout",
        ),
    ],
)
def test_msal_exceptions(reply: Reply | requests.RequestException, raised: type[Exception], code: str) -> None:
    with pytest.raises(raised) as caught:
        msal_refresh(reply)
    check(classify_msal_exception(caught.value), TRANSIENT, code)


def test_msal_replays_a_cached_error_without_asking_microsoft() -> None:
    """Why classify_msal_result warns that an immediate retry sees the same answer."""
    session, adapter = canned_session((400, aad_error("invalid_grant", 50076, f"{MOVED} use MFA."), JSON))
    app = msal_app(session)
    first = app.acquire_token_by_refresh_token(REFRESH_TOKEN, scopes=MS_SCOPES)
    second = app.acquire_token_by_refresh_token(REFRESH_TOKEN, scopes=MS_SCOPES)
    assert adapter.posts == 1
    assert classify_msal_result(second) == classify_msal_result(first)


# --- SMTP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        # Built by hand: resolving a name for real would ask a DNS server outside this machine.
        pytest.param(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "smtp:dns", id="dns"),
        pytest.param(
            smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server."),
            "smtp:protocol_error",
            id="no-auth-extension",
        ),
        pytest.param(
            smtplib.SMTPException("No suitable authentication method found."),
            "smtp:protocol_error",
            id="no-auth-method",
        ),
    ],
)
def test_smtp_errors_without_a_reply(error: OSError, code: str) -> None:
    check(classify_smtp_error(error), TRANSIENT, code)


# --- IMAP -----------------------------------------------------------------------------------------


def test_imap_abort_is_caught_before_its_parent_error() -> None:
    error = imaplib.IMAP4.abort("socket error: EOF")
    assert isinstance(error, imaplib.IMAP4.error)
    check(classify_imap_error(error), TRANSIENT, "imap:abort")


# --- Across providers -----------------------------------------------------------------------------


def _unknown_google() -> Failure:
    data = {"error": "brand_new_error", "error_description": "Something Google added later"}
    return classify_google_refresh_error(google_exceptions.RefreshError("brand_new_error", data, retryable=False))


UNKNOWN_INPUTS: list[Callable[[], Failure]] = [
    _unknown_google,
    lambda: classify_google_refresh_error(google_exceptions.RefreshError("")),
    lambda: classify_gmail_response(403, gmail_error(403, "New", "brandNewReason", state="PERMISSION_DENIED"), JSON),
    lambda: classify_gmail_response(418, b"", {}),
    lambda: classify_graph_response(403, graph_error("ErrorBrandNew", "New"), JSON),
    lambda: classify_graph_response(400, b"null", JSON),
    lambda: classify_msal_result({}),
    lambda: classify_msal_result({"error": "brand_new_error", "error_codes": [9999999]}),
    lambda: classify_msal_exception(ValueError("token_endpoint not found in configuration")),
    lambda: classify_smtp_error(smtplib.SMTPResponseException(599, b"9.9.9 something new")),
    lambda: classify_smtp_error(smtplib.SMTPRecipientsRefused({})),
    lambda: classify_imap_error(imaplib.IMAP4.error(b"[BRANDNEW] Something new")),
    lambda: classify_imap_error(imaplib.IMAP4.error()),
]


@pytest.mark.parametrize("classify", UNKNOWN_INPUTS)
def test_unknown_inputs_are_transient(classify: Callable[[], Failure]) -> None:
    failure = classify()
    assert failure.kind is TRANSIENT and failure.kind.disconnects is False
    assert failure.reason


ECHOED_SECRETS = f"refresh_token={REFRESH_TOKEN} access_token={ACCESS_TOKEN} password={TEST_PASSWORD}"
LEAKY_INPUTS: list[Callable[[], Failure]] = [
    lambda: classify_google_refresh_error(
        google_exceptions.RefreshError("x", {"error": REFRESH_TOKEN, "error_description": ECHOED_SECRETS})
    ),
    lambda: classify_google_refresh_error(
        google_exceptions.RefreshError("x", {"error": "invalid_grant", "error_subtype": ACCESS_TOKEN})
    ),
    lambda: classify_gmail_response(403, gmail_error(403, ECHOED_SECRETS, ACCESS_TOKEN, state=REFRESH_TOKEN), JSON),
    lambda: classify_graph_response(401, graph_error(ACCESS_TOKEN, ECHOED_SECRETS, MS_CLIENT_SECRET), JSON),
    lambda: classify_msal_result({"error": MS_CLIENT_SECRET, "error_description": ECHOED_SECRETS}),
    lambda: classify_smtp_error(smtplib.SMTPAuthenticationError(535, f"5.7.8 {ECHOED_SECRETS}".encode())),
    lambda: classify_smtp_error(
        smtplib.SMTPDataError(554, f"5.2.0 STOREDRV.Submission.Exception:{ACCESS_TOKEN}".encode())
    ),
    lambda: classify_imap_error(imaplib.IMAP4.error(f"[AUTHENTICATIONFAILED] {ECHOED_SECRETS}".encode())),
]


@pytest.mark.parametrize("classify", LEAKY_INPUTS)
def test_provider_text_never_reaches_a_failure(classify: Callable[[], Failure]) -> None:
    failure = classify()
    text = f"{failure.code} {failure.reason} {failure.fix}"
    for secret in SECRETS:
        assert secret not in text
