"""Google: OAuth token refreshes (google-auth) and the Gmail API."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import requests

from sendwell.classify.rules import (
    APP_CONFIG,
    AUTH_LOST,
    BAD_MESSAGE,
    NETWORK,
    RATE_LIMITED,
    TRANSIENT,
    USER_ACTION,
    HttpTable,
    Meaning,
    Rule,
    by_type,
    classify_http,
    json_error,
    mappings_in,
    network_failure,
    refine,
    retry_after_from_headers,
    safe_code,
    table,
)
from sendwell.clock import utcnow
from sendwell.failures import Failure

if TYPE_CHECKING:
    # Only google-auth raises what these functions take: the SMTP and IMAP paths, which load this
    # package too, need not load google-auth.
    from google.auth import exceptions as google_exceptions

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
        # Also what every inbox gets when the app's consent screen is in Testing (its grants end
        # after 7 days): not conclusive, so it is confirmed, and the breaker sees it.
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
        # Google Workspace: the admin restricted the app or its scopes (API controls). Source:
        # developers.google.com/identity/protocols/oauth2/web-server, "admin_policy_enforced".
        "admin_policy_enforced": Rule(
            USER_ACTION,
            "Your Google Workspace admin's policy no longer lets this app use your account.",
            "Ask your Google Workspace admin to trust the app: Google Admin console > Security > Access and "
            "data control > API controls > Manage Third-Party App Access, find the app and set it to "
            "Trusted. Then open the reconnect link and sign in with Google again.",
        ),
        # Advanced Protection (or another account policy) blocks apps asking for Gmail scopes.
        # Source: same page, "policy_enforced".
        "policy_enforced": Rule(
            USER_ACTION,
            "Google blocked this app from your account under a security policy (for example the Advanced "
            "Protection Program, which lets only some apps read email).",
            "Connect this inbox with a password instead (an app password), or leave the Advanced Protection "
            "Program; your Google Workspace admin may also set the policy. Then reconnect the inbox.",
        ),
        "invalid_client": Rule(
            APP_CONFIG,
            "Google rejected this app's OAuth client: it was deleted or disabled, or the configured "
            "client secret is wrong.",
            "Operator: check the Google OAuth client ID and secret in the app's configuration against "
            "Google Cloud console > APIs & Services > Credentials. Inboxes stay connected.",
        ),
        # The app's own OAuth client, not the user's grant. Source: same page, "deleted_client",
        # and Google's token endpoint answering {"error": "disabled_client", "error_description":
        # "The OAuth client was disabled."}.
        "deleted_client": Rule(
            APP_CONFIG,
            "Google says this app's OAuth client was deleted.",
            "Operator: restore it within 30 days (Google Cloud console > APIs & Services > Credentials > "
            "Deleted credentials), or create a new client and configure it; with a new client every inbox "
            "must be reconnected. Inboxes stay connected meanwhile.",
        ),
        "disabled_client": Rule(
            APP_CONFIG,
            "Google says this app's OAuth client was disabled.",
            "Operator: enable the client again in Google Cloud console > APIs & Services > Credentials "
            "(a client Google disabled for a policy reason says why there). Inboxes stay connected.",
        ),
        "org_internal": Rule(
            APP_CONFIG,
            "This app's Google consent screen is set to Internal, so only accounts of its own Google "
            "Workspace organization may use it.",
            "Operator: set the OAuth consent screen's user type to External (Google Cloud console > APIs & "
            "Services > OAuth consent screen). Inboxes stay connected.",
        ),
        "unauthorized_client": Rule(
            APP_CONFIG,
            "Google says this inbox was connected through a different OAuth client than the one now configured.",
            "Operator: configure the OAuth client the inboxes were connected with, or have each inbox "
            "reconnected after changing it.",
        ),
    }
)
# invalid_grant covers several causes; Google's description names a deleted account outright.
_GOOGLE_REFRESH_MEANINGS: Final = {
    "invalid_grant": (
        Meaning(
            re.compile(r"\baccount (?:has been |was )?deleted\b", re.IGNORECASE),
            "account-deleted",
            Rule(
                AUTH_LOST,
                "This Google account was deleted.",
                "If the mailbox moved to another account, connect that one; otherwise remove the inbox.",
                conclusive=True,
            ),
        ),
    ),
}
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
    from google.auth.exceptions import ReauthFailError

    message = exc.args[0] if exc.args else None
    if isinstance(exc, ReauthFailError) or (
        isinstance(message, str) and message.startswith(_GOOGLE_AUTH_REAUTH_MESSAGE)
    ):
        return _GOOGLE_REAUTH.failure("google:reauth_required")
    data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else None
    error = safe_code(data.get("error")) if data is not None else None
    if exc.retryable:
        return _GOOGLE_TEMPORARY.failure(f"google:{error or 'retryable'}")
    if data is None:  # e.g. a 502 HTML page from Google's front end
        return _GOOGLE_ERROR_PAGE.failure("google:non_json_response")
    description = data.get("error_description")
    for key in (safe_code(data.get("error_subtype")), error):
        if key is not None and key in _GOOGLE_REFRESH:
            text = description if isinstance(description, str) else ""
            rule, code = refine(_GOOGLE_REFRESH[key], f"google:{key}", text, _GOOGLE_REFRESH_MEANINGS.get(key, ()))
            return rule.failure(code)
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
