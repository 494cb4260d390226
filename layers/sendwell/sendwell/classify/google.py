"""Google: OAuth token refreshes (google-auth) and the Gmail API."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import requests
from google.auth import exceptions as google_exceptions

from sendwell.classify.rules import (
    APP_CONFIG,
    AUTH_LOST,
    BAD_MESSAGE,
    NETWORK,
    RATE_LIMITED,
    TRANSIENT,
    USER_ACTION,
    HttpTable,
    Rule,
    by_type,
    classify_http,
    json_error,
    mappings_in,
    network_failure,
    retry_after_from_headers,
    safe_code,
    table,
)
from sendwell.clock import utcnow
from sendwell.failures import Failure

# --- Google OAuth token refresh --------------------------------------------------------------------

_RECONNECT_GOOGLE: Final = "Open the reconnect link and sign in with Google again."

_GOOGLE_REAUTH: Final = Rule(
    USER_ACTION,
    "Your Google Workspace admin requires you to sign in again.",
    _RECONNECT_GOOGLE + " If this keeps happening, your Google Workspace admin controls how often "
    "sign-in is required (the session length / reauthentication setting in the Google Admin console).",
)

# Keyed by OAuth ``error``, and by ``error_subtype`` for the reauth case (google.oauth2.reauth).
_GOOGLE_REFRESH: Final = table(
    {
        "invalid_grant": Rule(
            AUTH_LOST,
            "Google no longer accepts this inbox's connection: the password was changed, access for "
            "this app was removed from the Google account, or the connection expired.",
            _RECONNECT_GOOGLE,
        ),
        "invalid_rapt": _GOOGLE_REAUTH,
        "rapt_required": _GOOGLE_REAUTH,
        "invalid_scope": Rule(
            USER_ACTION,
            "Google no longer gives this app the permissions it needs to read and send this inbox's email.",
            "Open the reconnect link, sign in with Google and allow every permission Google asks about.",
        ),
        "invalid_client": Rule(
            APP_CONFIG,
            "Google rejected this app's OAuth client: it was deleted or disabled, or the configured "
            "client secret is wrong.",
            "Operator: check the Google OAuth client ID and secret in the app's configuration against "
            "Google Cloud console > APIs & Services > Credentials. Inboxes stay connected.",
        ),
        "unauthorized_client": Rule(
            APP_CONFIG,
            "Google says this inbox was connected through a different OAuth client than the one now configured.",
            "Operator: configure the OAuth client the inboxes were connected with, or have each inbox "
            "reconnected after changing it.",
        ),
    }
)
_GOOGLE_TEMPORARY: Final = Rule(TRANSIENT, "Google's sign-in service had a temporary problem.")
_GOOGLE_ERROR_PAGE: Final = Rule(
    TRANSIENT, "Google's sign-in service answered with an error page instead of a normal reply."
)
_GOOGLE_UNKNOWN: Final = Rule(
    TRANSIENT, "Google's sign-in service returned an error sendwell does not recognise; it will retry."
)
# google-auth raises this message, with no response data, when Google answers invalid_grant with
# an ``invalid_rapt``/``rapt_required`` subtype and the reauth flow is off (the default).
_GOOGLE_AUTH_REAUTH_MESSAGE: Final = "Reauthentication is needed."


def classify_google_refresh_error(exc: google_exceptions.RefreshError) -> Failure:
    """Classify a google-auth ``RefreshError`` from refreshing a user's OAuth token.

    google-auth raises ``RefreshError("error: description", response_data, retryable=...)`` for a
    JSON error and ``RefreshError(body_text)`` for anything else. ``retryable=False`` only means
    google-auth did not retry; it is not evidence that the grant is gone.
    """
    message = exc.args[0] if exc.args else None
    if isinstance(exc, google_exceptions.ReauthFailError) or (
        isinstance(message, str) and message.startswith(_GOOGLE_AUTH_REAUTH_MESSAGE)
    ):
        return _GOOGLE_REAUTH.failure("google:reauth_required")
    data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else None
    error = safe_code(data.get("error")) if data is not None else None
    if exc.retryable:
        return _GOOGLE_TEMPORARY.failure(f"google:{error or 'retryable'}")
    if data is None:  # e.g. a 502 HTML page from Google's front end
        return _GOOGLE_ERROR_PAGE.failure("google:non_json_response")
    for key in (safe_code(data.get("error_subtype")), error):
        if key is not None and key in _GOOGLE_REFRESH:
            return _GOOGLE_REFRESH[key].failure(f"google:{key}")
    return _GOOGLE_UNKNOWN.failure(f"google:{error or 'unknown'}")


def classify_google_transport_error(exc: google_exceptions.TransportError) -> Failure:
    """google-auth wraps network errors in ``TransportError``; they never disconnect."""
    cause = exc.__cause__
    found = by_type("google", cause, NETWORK) if cause is not None else None
    return found or _GOOGLE_TEMPORARY.failure("google:transport")


_GMAIL_RATE: Final = Rule(
    RATE_LIMITED,
    "Gmail is limiting this inbox for now: it reached a sending limit or made too many requests.",
    "Nothing to do: sending resumes by itself when Gmail allows it.",
)
_GMAIL_DAILY: Final = Rule(
    RATE_LIMITED,
    "This inbox reached Gmail's daily sending limit (about 500 recipients a day for personal Gmail, "
    "2,000 for Google Workspace).",
    "Sending resumes by itself once Gmail lifts the limit. If it happens often, lower this inbox's "
    "daily sending limit.",
)
_GMAIL_SCOPES: Final = Rule(
    USER_ACTION,
    "This inbox was connected without permission to read or send its email in Gmail.",
    "Open the reconnect link, sign in with Google and tick the boxes that allow reading and sending email.",
)
_GMAIL_API_DISABLED: Final = Rule(
    APP_CONFIG,
    "The Gmail API is not enabled in the Google Cloud project that owns this app's OAuth client.",
    "Operator: enable it in Google Cloud console > APIs & Services > Library > Gmail API. Inboxes stay connected.",
)

# Keyed by ``errors[].reason``, ``details[].reason`` (google.rpc.ErrorInfo) and ``status``.
_GMAIL: Final = HttpTable(
    prefix="gmail",
    by_code=table(
        {
            "insufficientPermissions": _GMAIL_SCOPES,
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT": _GMAIL_SCOPES,
            "domainPolicy": Rule(
                USER_ACTION,
                "Your Google Workspace admin blocked this app from using Gmail.",
                "Ask your Google Workspace admin to allow the app: in the Google Admin console, Security > "
                "Access and data control > API controls > Manage Third-Party App Access, find the app "
                "and set it to Trusted (or allow Gmail for it). Then open the reconnect link and sign in "
                "with Google again.",
            ),
            "failedPrecondition": Rule(
                USER_ACTION,
                "Gmail is not turned on for this Google account.",
                "Ask your Google Workspace admin to turn Gmail on for your account (Google Admin console > "
                "Apps > Google Workspace > Gmail > Service status), then reconnect the inbox.",
            ),
            "rateLimitExceeded": _GMAIL_RATE,
            "userRateLimitExceeded": _GMAIL_RATE,
            "RATE_LIMIT_EXCEEDED": _GMAIL_RATE,
            "RESOURCE_EXHAUSTED": _GMAIL_RATE,
            "dailyLimitExceeded": _GMAIL_DAILY,
            "quotaExceeded": _GMAIL_DAILY,
            "invalidArgument": Rule(
                BAD_MESSAGE,
                "Gmail refused the email as malformed (for example an invalid address in a header).",
                "Check the recipient's address and the step's template; this email will not be retried.",
            ),
            "accessNotConfigured": _GMAIL_API_DISABLED,
            "SERVICE_DISABLED": _GMAIL_API_DISABLED,
        }
    ),
    by_status=table(
        {
            401: Rule(
                AUTH_LOST,
                "Gmail refused this inbox's access even after signing in again: access was revoked.",
                _RECONNECT_GOOGLE,
            ),
            413: Rule(BAD_MESSAGE, "The email is larger than Gmail accepts.", "Make the email smaller."),
            429: _GMAIL_RATE,
        }
    ),
    unavailable=Rule(TRANSIENT, "Gmail had a temporary problem."),
    unknown=Rule(TRANSIENT, "Gmail returned an error sendwell does not recognise; it will retry."),
)

# Gmail's sending limit says when it ends in the message, not in a header:
# "User-rate limit exceeded.  Retry after 2024-11-12T11:16:42.247Z".
_GMAIL_RETRY_AT: Final = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)")


def _gmail_retry_after(error: Mapping[str, Any], now: datetime | None) -> float | None:
    message = error.get("message")
    match = _GMAIL_RETRY_AT.search(message) if isinstance(message, str) else None
    if match is None:
        return None
    return max(0.0, (datetime.fromisoformat(match[1]) - (now or utcnow())).total_seconds())


def classify_gmail_response(
    status: int,
    body: bytes | str | Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> Failure:
    """Classify a Gmail API error response (status, raw or decoded body, headers).

    A 401 is read as a lost grant, so call this only after a token refresh was tried.
    ``invalidArgument`` means a malformed message when sending; callers of other endpoints
    should treat ``BAD_MESSAGE`` as a bug of their own request.
    """
    error = json_error(body)
    retry_after = retry_after_from_headers(headers, now=now)
    codes: list[str | None] = []
    if error is not None:
        if retry_after is None:
            retry_after = _gmail_retry_after(error, now)
        items = [*mappings_in(error.get("errors")), *mappings_in(error.get("details"))]
        codes = [safe_code(item.get("reason")) for item in items] + [safe_code(error.get("status"))]
    return classify_http(_GMAIL, status, error, codes, retry_after)


def classify_gmail_exception(exc: requests.RequestException) -> Failure:
    """A Gmail API call that got no answer (timeout, connection refused or reset): TRANSIENT."""
    return network_failure("gmail", exc, _GMAIL.unavailable)
