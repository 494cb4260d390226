"""Turn whatever a provider returned or raised into a :class:`~sendwell.failures.Failure`.

Every provider has a table of ``code -> _Rule(kind, reason, fix)``; the functions below only pull
the provider's code out of its error and look it up. Three rules hold for every table:

* Only a code listed as ``AUTH_LOST`` or ``USER_ACTION`` disconnects an inbox. Anything not
  recognised - an unknown code, an HTML error page, a network fault - is ``TRANSIENT``.
* Reasons and fixes are our own words for the inbox owner (or, for ``APP_CONFIG``, for the
  operator). Provider text is never copied into them: it can carry tokens, addresses and
  sign-in URLs. A provider's code is kept in ``Failure.code`` only if it is a short identifier.
* Classification reads codes, never exception types or message wording, except where the
  library offers nothing else (network exceptions, google-auth's own reauth message).

The functions are pure: no I/O, and ``now`` can be passed where a date is turned into a delay.
"""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar

import requests
from google.auth import exceptions as google_exceptions
from msal.exceptions import MsalServiceError

from sendwell.clock import utcnow
from sendwell.failures import Failure, FailureKind

__all__ = [
    "classify_gmail_exception",
    "classify_gmail_response",
    "classify_google_refresh_error",
    "classify_google_transport_error",
    "classify_graph_exception",
    "classify_graph_response",
    "classify_imap_error",
    "classify_msal_exception",
    "classify_msal_result",
    "classify_smtp_error",
    "parse_retry_after",
    "retry_after_from_headers",
]

AUTH_LOST: Final = FailureKind.AUTH_LOST
USER_ACTION: Final = FailureKind.USER_ACTION
APP_CONFIG: Final = FailureKind.APP_CONFIG
TRANSIENT: Final = FailureKind.TRANSIENT
RATE_LIMITED: Final = FailureKind.RATE_LIMITED
RECIPIENT_REJECTED: Final = FailureKind.RECIPIENT_REJECTED
BAD_MESSAGE: Final = FailureKind.BAD_MESSAGE


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: FailureKind
    reason: str
    fix: str = ""

    def failure(self, code: str, retry_after: float | None = None) -> Failure:
        # A wait only means something for kinds that resume by themselves.
        waits = self.kind in (TRANSIENT, RATE_LIMITED)
        return Failure(self.kind, code, self.reason, self.fix, retry_after if waits else None)


_K = TypeVar("_K")


def _table(rules: Mapping[_K, _Rule]) -> Mapping[_K, _Rule]:
    """Tables are module constants, so they are made read-only."""
    return MappingProxyType(dict(rules))


# Provider codes are identifiers ("invalid_grant", "ErrorAccessDenied"); anything else - a long
# string, something with dots or slashes - could be a token, so it never reaches Failure.code.
_SAFE_CODE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,47}")


def _safe_code(value: object) -> str | None:
    return value if isinstance(value, str) and _SAFE_CODE.fullmatch(value) else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# --- Retry-After ---------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())


def retry_after_from_headers(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """``Retry-After`` from headers of any case (a plain dict is not case-insensitive)."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            return parse_retry_after(value, now=now)
    return None


# --- Network faults, shared by every provider ------------------------------------------------------

# Looked up along the exception's MRO, so the most specific entry wins (ConnectionRefusedError
# before ConnectionError, SMTPServerDisconnected before SMTPException before OSError).
_NETWORK: Final[Mapping[type[BaseException], tuple[str, _Rule]]] = MappingProxyType(
    {
        socket.gaierror: ("dns", _Rule(TRANSIENT, "The server's name could not be looked up (DNS).")),
        TimeoutError: ("timeout", _Rule(TRANSIENT, "The server did not answer in time.")),
        ConnectionRefusedError: ("connection_refused", _Rule(TRANSIENT, "The server refused connections.")),
        ssl.SSLError: ("tls", _Rule(TRANSIENT, "A secure (TLS) connection to the server failed.")),
        ConnectionError: ("connection_lost", _Rule(TRANSIENT, "The connection to the server was lost.")),
        smtplib.SMTPServerDisconnected: (
            "disconnected",
            _Rule(TRANSIENT, "The mail server closed the connection unexpectedly."),
        ),
        smtplib.SMTPException: ("protocol_error", _Rule(TRANSIENT, "The mail server answered unexpectedly.")),
        requests.exceptions.Timeout: ("timeout", _Rule(TRANSIENT, "The server did not answer in time.")),
        requests.exceptions.ConnectionError: (
            "connection_failed",
            _Rule(TRANSIENT, "The server could not be reached."),
        ),
        OSError: ("network", _Rule(TRANSIENT, "A network error occurred while talking to the server.")),
    }
)


def _by_type(
    prefix: str, exc: BaseException, *tables: Mapping[type[BaseException], tuple[str, _Rule]]
) -> Failure | None:
    for cls in type(exc).__mro__:
        for table in tables:
            if cls in table:
                name, rule = table[cls]
                return rule.failure(f"{prefix}:{name}")
    return None


def _network_failure(prefix: str, exc: BaseException, unknown: _Rule) -> Failure:
    # smtplib turns a socket error while reading a reply (a timeout, a reset) into
    # SMTPServerDisconnected; the socket error it was raised from says more.
    underlying = exc.__cause__ or exc.__context__
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(underlying, OSError):
        exc = underlying
    return _by_type(prefix, exc, _NETWORK) or unknown.failure(f"{prefix}:unknown")


# --- Google OAuth token refresh --------------------------------------------------------------------

_RECONNECT_GOOGLE: Final = "Open the reconnect link and sign in with Google again."

_GOOGLE_REAUTH: Final = _Rule(
    USER_ACTION,
    "Your Google Workspace admin requires you to sign in again.",
    _RECONNECT_GOOGLE + " If this keeps happening, your Google Workspace admin controls how often "
    "sign-in is required (the session length / reauthentication setting in the Google Admin console).",
)

# Keyed by OAuth ``error``, and by ``error_subtype`` for the reauth case (google.oauth2.reauth).
_GOOGLE_REFRESH: Final = _table(
    {
        "invalid_grant": _Rule(
            AUTH_LOST,
            "Google no longer accepts this inbox's connection: the password was changed, access for "
            "this app was removed from the Google account, or the connection expired.",
            _RECONNECT_GOOGLE,
        ),
        "invalid_rapt": _GOOGLE_REAUTH,
        "rapt_required": _GOOGLE_REAUTH,
        "invalid_scope": _Rule(
            USER_ACTION,
            "Google no longer gives this app the permissions it needs to read and send this inbox's email.",
            "Open the reconnect link, sign in with Google and allow every permission Google asks about.",
        ),
        "invalid_client": _Rule(
            APP_CONFIG,
            "Google rejected this app's OAuth client: it was deleted or disabled, or the configured "
            "client secret is wrong.",
            "Operator: check the Google OAuth client ID and secret in the app's configuration against "
            "Google Cloud console > APIs & Services > Credentials. Inboxes stay connected.",
        ),
        "unauthorized_client": _Rule(
            APP_CONFIG,
            "Google says this inbox was connected through a different OAuth client than the one now "
            "configured.",
            "Operator: configure the OAuth client the inboxes were connected with, or have each inbox "
            "reconnected after changing it.",
        ),
    }
)
_GOOGLE_TEMPORARY: Final = _Rule(TRANSIENT, "Google's sign-in service had a temporary problem.")
_GOOGLE_ERROR_PAGE: Final = _Rule(
    TRANSIENT, "Google's sign-in service answered with an error page instead of a normal reply."
)
_GOOGLE_UNKNOWN: Final = _Rule(
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
    error = _safe_code(data.get("error")) if data is not None else None
    if exc.retryable:
        return _GOOGLE_TEMPORARY.failure(f"google:{error or 'retryable'}")
    if data is None:  # e.g. a 502 HTML page from Google's front end
        return _GOOGLE_ERROR_PAGE.failure("google:non_json_response")
    for key in (_safe_code(data.get("error_subtype")), error):
        if key is not None and key in _GOOGLE_REFRESH:
            return _GOOGLE_REFRESH[key].failure(f"google:{key}")
    return _GOOGLE_UNKNOWN.failure(f"google:{error or 'unknown'}")


def classify_google_transport_error(exc: google_exceptions.TransportError) -> Failure:
    """google-auth wraps network errors in ``TransportError``; they never disconnect."""
    cause = exc.__cause__
    found = _by_type("google", cause, _NETWORK) if cause is not None else None
    return found or _GOOGLE_TEMPORARY.failure("google:transport")


# --- HTTP APIs (Gmail, Microsoft Graph) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HttpTable:
    prefix: str
    by_code: Mapping[str, _Rule]
    by_status: Mapping[int, _Rule]  # when no code in the body is known
    unavailable: _Rule  # 5xx, or a body that is not the API's JSON error (a proxy's HTML page)
    unknown: _Rule


def _json_error(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``error`` object of a JSON error body, or None when the body is not one."""
    if isinstance(body, Mapping):
        payload: object = body
    else:
        try:
            payload = json.loads(body)
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            return None
    error = payload.get("error") if isinstance(payload, Mapping) else None
    return error if isinstance(error, Mapping) else None


def _items(value: object) -> Iterable[Mapping[str, Any]]:
    return (item for item in value if isinstance(item, Mapping)) if isinstance(value, list) else ()


def _classify_http(
    table: _HttpTable,
    status: int,
    error: Mapping[str, Any] | None,
    codes: Sequence[str | None],
    retry_after: float | None,
) -> Failure:
    prefix = f"{table.prefix}:{status}"
    # An error page carries no code, so only its status can be trusted, and only for throttling.
    if status >= 500 or (error is None and status != 429):
        return table.unavailable.failure(prefix, retry_after)
    known = [code for code in codes if code is not None]
    for code in known:
        if code in table.by_code:
            return table.by_code[code].failure(f"{prefix} {code}", retry_after)
    code = f"{prefix} {known[0]}" if known else prefix
    return table.by_status.get(status, table.unknown).failure(code, retry_after)


_GMAIL_RATE: Final = _Rule(
    RATE_LIMITED,
    "Gmail is limiting this inbox for now: it reached a sending limit or made too many requests.",
    "Nothing to do: sending resumes by itself when Gmail allows it.",
)
_GMAIL_DAILY: Final = _Rule(
    RATE_LIMITED,
    "This inbox reached Gmail's daily sending limit (about 500 recipients a day for personal Gmail, "
    "2,000 for Google Workspace).",
    "Sending resumes by itself once Gmail lifts the limit. If it happens often, lower this inbox's "
    "daily sending limit.",
)
_GMAIL_SCOPES: Final = _Rule(
    USER_ACTION,
    "This inbox was connected without permission to read or send its email in Gmail.",
    "Open the reconnect link, sign in with Google and tick the boxes that allow reading and sending email.",
)
_GMAIL_API_DISABLED: Final = _Rule(
    APP_CONFIG,
    "The Gmail API is not enabled in the Google Cloud project that owns this app's OAuth client.",
    "Operator: enable it in Google Cloud console > APIs & Services > Library > Gmail API. Inboxes "
    "stay connected.",
)

# Keyed by ``errors[].reason``, ``details[].reason`` (google.rpc.ErrorInfo) and ``status``.
_GMAIL: Final = _HttpTable(
    prefix="gmail",
    by_code=_table(
        {
            "insufficientPermissions": _GMAIL_SCOPES,
            "ACCESS_TOKEN_SCOPE_INSUFFICIENT": _GMAIL_SCOPES,
            "domainPolicy": _Rule(
                USER_ACTION,
                "Your Google Workspace admin blocked this app from using Gmail.",
                "Ask your Google Workspace admin to allow the app: in the Google Admin console, Security > "
                "Access and data control > API controls > Manage Third-Party App Access, find the app "
                "and set it to Trusted (or allow Gmail for it). Then open the reconnect link and sign in "
                "with Google again.",
            ),
            "failedPrecondition": _Rule(
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
            "invalidArgument": _Rule(
                BAD_MESSAGE,
                "Gmail refused the email as malformed (for example an invalid address in a header).",
                "Check the recipient's address and the step's template; this email will not be retried.",
            ),
            "accessNotConfigured": _GMAIL_API_DISABLED,
            "SERVICE_DISABLED": _GMAIL_API_DISABLED,
        }
    ),
    by_status=_table(
        {
            401: _Rule(
                AUTH_LOST,
                "Gmail refused this inbox's access even after signing in again: access was revoked.",
                _RECONNECT_GOOGLE,
            ),
            413: _Rule(BAD_MESSAGE, "The email is larger than Gmail accepts.", "Make the email smaller."),
            429: _GMAIL_RATE,
        }
    ),
    unavailable=_Rule(TRANSIENT, "Gmail had a temporary problem."),
    unknown=_Rule(TRANSIENT, "Gmail returned an error sendwell does not recognise; it will retry."),
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
    error = _json_error(body)
    retry_after = retry_after_from_headers(headers, now=now)
    codes: list[str | None] = []
    if error is not None:
        if retry_after is None:
            retry_after = _gmail_retry_after(error, now)
        items = [*_items(error.get("errors")), *_items(error.get("details"))]
        codes = [_safe_code(item.get("reason")) for item in items] + [_safe_code(error.get("status"))]
    return _classify_http(_GMAIL, status, error, codes, retry_after)


_RECONNECT_MICROSOFT: Final = "Open the reconnect link and sign in with Microsoft again."

_GRAPH_DENIED: Final = _Rule(
    USER_ACTION,
    "Microsoft 365 denied this app access to the mailbox.",
    "Open the reconnect link, sign in with Microsoft and accept every permission it asks for. If it "
    "still fails, your Microsoft 365 admin has blocked apps from this mailbox (an application access "
    "policy, or REST access turned off for the mailbox) and must allow it.",
)
_GRAPH_NO_MAILBOX: Final = _Rule(
    USER_ACTION,
    "This Microsoft account has no Exchange Online mailbox that apps can use: it has no licence, is "
    "inactive, or is hosted on an on-premises Exchange server.",
    "Ask your Microsoft 365 admin to assign this user a licence that includes Exchange Online, wait "
    "until the mailbox is ready, then open the reconnect link and sign in with Microsoft again.",
)
_GRAPH_SEND_AS: Final = _Rule(
    USER_ACTION,
    "Microsoft 365 does not allow the signed-in account to send as this inbox's address.",
    "Reconnect signed in as the mailbox itself, or ask your Microsoft 365 admin to give that account "
    "Send As permission (Exchange admin center > Recipients > Mailboxes > the mailbox > Delegation).",
)
_GRAPH_BLOCKED_SENDER: Final = _Rule(
    USER_ACTION,
    "Microsoft blocked this account from sending email, usually because it looked like spam.",
    "Your Microsoft 365 admin must release the account in the Microsoft Defender portal (Email & "
    "collaboration > Review > Restricted entities); Outlook.com users follow the steps Microsoft "
    "emailed them. Then reconnect the inbox.",
)
_GRAPH_MALFORMED: Final = _Rule(
    BAD_MESSAGE, "Microsoft 365 could not read the email's content.", "This email will not be retried."
)
_GRAPH_TOO_BIG: Final = _Rule(
    BAD_MESSAGE, "The email is larger than Microsoft 365 accepts.", "Make the email smaller."
)
_GRAPH_RATE: Final = _Rule(
    RATE_LIMITED,
    "Microsoft 365 is limiting how fast this inbox can send or be read.",
    "Nothing to do: sending resumes by itself when Microsoft allows it.",
)

# Keyed by ``error.code`` and ``error.innerError.code``.
_GRAPH: Final = _HttpTable(
    prefix="graph",
    by_code=_table(
        {
            "ErrorAccessDenied": _GRAPH_DENIED,
            "Authorization_RequestDenied": _GRAPH_DENIED,
            "MailboxNotEnabledForRESTAPI": _GRAPH_NO_MAILBOX,
            "MailboxNotSupportedForRESTAPI": _GRAPH_NO_MAILBOX,
            "ErrorSendAsDenied": _GRAPH_SEND_AS,
            "SendAsDenied": _GRAPH_SEND_AS,
            "ErrorMessageSubmissionBlocked": _GRAPH_BLOCKED_SENDER,
            "ErrorAccountSuspend": _GRAPH_BLOCKED_SENDER,
            "ErrorQuotaExceeded": _Rule(
                USER_ACTION,
                "The mailbox is full, and Microsoft 365 does not send from a full mailbox.",
                "Delete old email and empty Deleted Items (or ask your Microsoft 365 admin for more "
                "space), then reconnect the inbox.",
            ),
            # A daily sending limit, not a permission problem: the inbox resumes by itself.
            "ErrorExceededMessageLimit": _Rule(
                RATE_LIMITED,
                "This inbox reached Microsoft's daily sending limit.",
                "Sending resumes by itself once Microsoft lifts the limit. Outlook.com accounts may first "
                "have to verify the account from a notice in their inbox.",
            ),
            "ErrorMessageSizeExceeded": _GRAPH_TOO_BIG,
            "ErrorMimeContentInvalid": _GRAPH_MALFORMED,
            "ErrorMimeContentInvalidBase64String": _GRAPH_MALFORMED,
            "ErrorMimeContentConversionFailed": _GRAPH_MALFORMED,
            "ErrorInvalidRecipients": _Rule(
                RECIPIENT_REJECTED,
                "Microsoft 365 rejected the recipient's address as invalid.",
                "Check the prospect's email address.",
            ),
        }
    ),
    by_status=_table(
        {
            401: _Rule(
                AUTH_LOST,
                "Microsoft 365 refused this inbox's access even after signing in again: access was revoked.",
                _RECONNECT_MICROSOFT,
            ),
            413: _GRAPH_TOO_BIG,
            429: _GRAPH_RATE,
        }
    ),
    unavailable=_Rule(TRANSIENT, "Microsoft 365 had a temporary problem."),
    unknown=_Rule(TRANSIENT, "Microsoft 365 returned an error sendwell does not recognise; it will retry."),
)


def classify_graph_response(
    status: int,
    body: bytes | str | Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> Failure:
    """Classify a Microsoft Graph error response. A 401 is read as a lost grant (see Gmail's)."""
    error = _json_error(body)
    codes: list[str | None] = []
    if error is not None:
        inner = error.get("innerError", error.get("innererror"))
        inner_code = inner.get("code") if isinstance(inner, Mapping) else None
        codes = [_safe_code(error.get("code")), _safe_code(inner_code)]
    return _classify_http(_GRAPH, status, error, codes, retry_after_from_headers(headers, now=now))


def classify_gmail_exception(exc: requests.RequestException) -> Failure:
    """A Gmail API call that got no answer (timeout, connection refused or reset): TRANSIENT."""
    return _network_failure("gmail", exc, _GMAIL.unavailable)


def classify_graph_exception(exc: requests.RequestException) -> Failure:
    """A Microsoft Graph call that got no answer (timeout, connection refused or reset): TRANSIENT."""
    return _network_failure("graph", exc, _GRAPH.unavailable)


# --- Microsoft identity platform (msal) ------------------------------------------------------------

_MS_ADMIN_POLICY: Final = "Microsoft Entra admin center > Protection > Conditional Access"
_MS_GRANT_EXPIRED: Final = _Rule(
    AUTH_LOST,
    "Microsoft says this inbox's sign-in has expired or was revoked.",
    _RECONNECT_MICROSOFT,
)

# Keyed by AADSTS code (``error_codes``). Fixes speak to the inbox owner, and say when their
# Microsoft 365 admin has to act; APP_CONFIG fixes speak to the operator.
_AADSTS: Final[Mapping[int, _Rule]] = _table(
    {
        70008: _MS_GRANT_EXPIRED,
        700082: _Rule(
            AUTH_LOST,
            "Microsoft expired this inbox's sign-in because it went unused for too long (90 days).",
            _RECONNECT_MICROSOFT,
        ),
        50173: _Rule(
            AUTH_LOST,
            "The password of this Microsoft account was changed or reset, which ended the inbox's sign-in.",
            _RECONNECT_MICROSOFT + " Use the new password.",
        ),
        70000: _Rule(
            AUTH_LOST,
            "Microsoft no longer accepts this inbox's sign-in: it was revoked or a permission was removed.",
            _RECONNECT_MICROSOFT,
        ),
        50034: _Rule(
            AUTH_LOST,
            "This Microsoft 365 account no longer exists in its organization.",
            "If the mailbox was renamed or moved, reconnect with the new account; otherwise remove the "
            "inbox.",
        ),
        50076: _Rule(
            USER_ACTION,
            "Your organization now requires multi-factor authentication for this account, and the "
            "saved sign-in did not include it.",
            _RECONNECT_MICROSOFT + " Complete the multi-factor prompt (for example approve it in "
            "Microsoft Authenticator) when Microsoft asks.",
        ),
        50079: _Rule(
            USER_ACTION,
            "Your organization requires you to set up multi-factor authentication before this account "
            "can be used.",
            _RECONNECT_MICROSOFT + " When Microsoft asks, set up multi-factor authentication (for "
            "example with the Microsoft Authenticator app), then finish signing in.",
        ),
        50078: _Rule(
            USER_ACTION,
            "Your last multi-factor check has expired under your organization's policy.",
            _RECONNECT_MICROSOFT + " Complete the multi-factor check again when Microsoft asks; how long "
            "one lasts is set by your Microsoft 365 admin.",
        ),
        65001: _Rule(
            USER_ACTION,
            "Permission for this app to use the mailbox was withdrawn or never granted.",
            _RECONNECT_MICROSOFT + " Accept the permissions it shows. If Microsoft says an admin must "
            "approve the app, ask your Microsoft 365 admin to grant admin consent (Microsoft Entra admin "
            "center > Enterprise applications > the app > Permissions).",
        ),
        53003: _Rule(
            USER_ACTION,
            "A Conditional Access policy set by your Microsoft 365 admin blocks this app from signing in.",
            f"Ask your Microsoft 365 admin to allow this app in the policy ({_MS_ADMIN_POLICY}; the "
            "sign-in logs name the policy that blocked it). Then reconnect the inbox.",
        ),
        530032: _Rule(
            USER_ACTION,
            "A security policy of your Microsoft 365 organization blocks this sign-in.",
            "Ask your Microsoft 365 admin to review the organization's security policies for this app "
            f"(security defaults, or {_MS_ADMIN_POLICY}). Then reconnect the inbox.",
        ),
        50057: _Rule(
            USER_ACTION,
            "This Microsoft 365 account has been disabled by an admin.",
            "Ask your Microsoft 365 admin to allow sign-in again (Microsoft 365 admin center > Users > "
            "Active users > the user > Unblock sign-in), then reconnect the inbox.",
        ),
        50053: _Rule(
            USER_ACTION,
            "This Microsoft account is locked after too many sign-in attempts or sign-ins from a "
            "suspicious place.",
            "Wait for the lock to lift (usually a few minutes) or ask your Microsoft 365 admin to unlock "
            "the account, then reconnect the inbox.",
        ),
        50055: _Rule(
            USER_ACTION,
            "The password of this Microsoft account has expired.",
            "Sign in at office.com, choose a new password when asked, then open the reconnect link and "
            "sign in with Microsoft again.",
        ),
        50132: _Rule(
            USER_ACTION,
            "Microsoft ended the saved sign-in because the password was changed or has expired.",
            "Sign in at office.com with your current password (choose a new one if it has expired), "
            "then open the reconnect link and sign in with Microsoft again.",
        ),
        70043: _Rule(
            USER_ACTION,
            "Your Microsoft 365 admin's sign-in frequency policy requires you to sign in again, and the "
            "allowed time has passed.",
            _RECONNECT_MICROSOFT + " This repeats at the interval your admin set; your Microsoft 365 admin "
            f"can exclude this app from the sign-in frequency policy ({_MS_ADMIN_POLICY}).",
        ),
        7000222: _Rule(
            APP_CONFIG,
            "This app's Microsoft client secret has expired.",
            "Operator: create a new client secret (Microsoft Entra admin center > App registrations > "
            "the app > Certificates & secrets) and update the app's configuration. Inboxes stay connected.",
        ),
        7000215: _Rule(
            APP_CONFIG,
            "This app's Microsoft client secret is wrong.",
            "Operator: configure the secret's Value, not its Secret ID. Inboxes stay connected.",
        ),
        700016: _Rule(
            APP_CONFIG,
            "Microsoft cannot find this app's client ID in the inbox's organization.",
            "Operator: check the configured client ID, and that the app registration accepts accounts "
            "in any organization (Supported account types). Inboxes stay connected.",
        ),
    }
)

_MS_TEMPORARY: Final = _Rule(TRANSIENT, "Microsoft's sign-in service had a temporary problem.")
_MS_APP_REJECTED: Final = _Rule(
    APP_CONFIG,
    "Microsoft rejected this app's credentials.",
    "Operator: check the app's Microsoft client ID and secret. Inboxes stay connected.",
)
_MS_SIGN_IN_AGAIN: Final = _Rule(
    USER_ACTION, "Microsoft requires you to sign in to this account again.", _RECONNECT_MICROSOFT
)
# Keyed by OAuth ``error``, used when no AADSTS code is known.
_MSAL_ERRORS: Final = _table(
    {
        "invalid_grant": _MS_GRANT_EXPIRED,
        "interaction_required": _MS_SIGN_IN_AGAIN,
        "consent_required": _MS_SIGN_IN_AGAIN,
        "invalid_client": _MS_APP_REJECTED,
        "unauthorized_client": _MS_APP_REJECTED,
        "temporarily_unavailable": _MS_TEMPORARY,
        "server_error": _MS_TEMPORARY,
    }
)
_MS_UNKNOWN: Final = _Rule(
    TRANSIENT, "Microsoft's sign-in service returned an error sendwell does not recognise; it will retry."
)


def classify_msal_result(result: Mapping[str, Any]) -> Failure:
    """Classify the error dict msal returns (``error``, ``error_description``, ``error_codes``).

    msal caches error responses briefly (its throttling cache: an HTTP 400 for 60 seconds, a
    429/5xx for its Retry-After), keyed by the refresh token, so retrying at once replays the same
    error without reaching Microsoft.
    """
    codes = [code for code in result.get("error_codes") or () if isinstance(code, int)]
    for code in codes:
        if code in _AADSTS:
            return _AADSTS[code].failure(f"aadsts:{code}")
    error = _safe_code(result.get("error"))
    code_name = f"aadsts:{codes[0]}" if codes else f"msal:{error or 'unknown'}"
    rule = _MSAL_ERRORS.get(error, _MS_UNKNOWN) if error is not None else _MS_UNKNOWN
    return rule.failure(code_name)


# msal raises MsalServiceError("HTTP Error: 503") for a 5xx, and lets json.loads' JSONDecodeError
# escape for a non-JSON 4xx (a 429 HTML page); requests' own exceptions pass through untouched.
_MSAL_EXCEPTIONS: Final[Mapping[type[BaseException], tuple[str, _Rule]]] = MappingProxyType(
    {
        MsalServiceError: ("http_error", _MS_TEMPORARY),
        json.JSONDecodeError: (
            "non_json_response",
            _Rule(TRANSIENT, "Microsoft's sign-in service answered with an error page, not a normal reply."),
        ),
    }
)


def classify_msal_exception(exc: Exception) -> Failure:
    """Classify an exception escaping an msal call: all of them are TRANSIENT.

    See :func:`classify_msal_result` about msal's throttling cache.
    """
    return _by_type("msal", exc, _MSAL_EXCEPTIONS, _NETWORK) or _MS_UNKNOWN.failure("msal:unknown")


# --- SMTP ---------------------------------------------------------------------------------------------

_SMTP_PASSWORD: Final = _Rule(
    AUTH_LOST,
    "The mail server rejected the username and password: the password was changed or the app "
    "password was revoked.",
    "Reconnect this inbox with the current password (or a new app password).",
)
_SMTP_ENABLE_SMTP_AUTH: Final = (
    "Simplest: reconnect this inbox as a Microsoft 365 account (sign in with Microsoft) instead of "
    "with a password. Otherwise your Microsoft 365 admin must turn on Authenticated SMTP for this "
    "mailbox (Microsoft 365 admin center > Users > Active users > the user > Mail > Manage email "
    'apps) and for the organization (Exchange admin center > Settings > Mail flow: untick "Turn off '
    'SMTP AUTH protocol for your organization"); security defaults also block it.'
)
_SMTP_OVERSIZE: Final = _Rule(
    BAD_MESSAGE, "The email is larger than the mail server accepts.", "Make the email smaller."
)
_SMTP_SEND_AS: Final = _Rule(
    USER_ACTION,
    "The mail server does not allow this account to send as this inbox's address.",
    "Ask your email admin to give the account Send As permission for the address, or reconnect the "
    "inbox with the mailbox's own account.",
)
_SMTP_TEMPORARY: Final = _Rule(TRANSIENT, "The mail server had a temporary problem and asked to retry later.")

# Looked up from most to least specific: "<reply> <enhanced>", "<enhanced> <Exchange exception>",
# "<enhanced>", "<class>.<subject>", "<reply>", "<reply class>xx".
_SMTP: Final = _table(
    {
        "535 5.7.8": _SMTP_PASSWORD,
        "535": _SMTP_PASSWORD,
        "534 5.7.9": _Rule(
            USER_ACTION,
            "Google requires an app password for this account because 2-Step Verification is on; the "
            "normal password no longer works here.",
            "Create an app password at myaccount.google.com/apppasswords (Google Account > Security > "
            "2-Step Verification > App passwords), then reconnect this inbox and enter the 16-character "
            "app password instead of your normal password. Or reconnect it as a Google account (sign "
            "in with Google), which needs no password.",
        ),
        "534 5.7.14": _Rule(
            USER_ACTION,
            "Google blocked the sign-in and wants you to confirm it is you.",
            "Sign in to this Gmail account in a web browser, complete the security check Google shows, "
            "then reconnect the inbox. If the account uses 2-Step Verification, reconnect with an app "
            "password instead of the normal password.",
        ),
        "535 5.7.139": _Rule(
            USER_ACTION,
            "Your Microsoft 365 admin disabled SMTP AUTH (password sign-in for sending) for this mailbox "
            "or the whole organization.",
            _SMTP_ENABLE_SMTP_AUTH,
        ),
        "535 5.7.3": _Rule(
            USER_ACTION,
            "Microsoft 365 refused the password: SMTP AUTH is disabled for this mailbox, or the password "
            "was changed.",
            _SMTP_ENABLE_SMTP_AUTH + " If the password was changed, reconnect with the new one.",
        ),
        "5.4.5": _Rule(
            RATE_LIMITED,
            "This inbox reached Gmail's daily sending limit.",
            "Sending resumes by itself once Gmail lifts the limit (a rolling 24 hours). If it happens "
            "often, lower this inbox's daily sending limit.",
        ),
        "5.2.0 SubmissionQuotaExceededException": _Rule(
            RATE_LIMITED,
            "This inbox reached Microsoft 365's sending limit.",
            "Sending resumes by itself once Microsoft lifts the limit (a rolling 24 hours). If it "
            "happens often, lower this inbox's daily sending limit.",
        ),
        "5.2.0 SendAsDeniedException": _SMTP_SEND_AS,
        "5.7.60": _SMTP_SEND_AS,
        "5.1.8": _Rule(
            USER_ACTION,
            "The mail server refused this inbox as a sender; at Microsoft 365 this means the account "
            "was restricted for sending what looked like spam.",
            _GRAPH_BLOCKED_SENDER.fix,
        ),
        "5.3.4": _SMTP_OVERSIZE,
        "5.2.3": _SMTP_OVERSIZE,
        "5.6": _Rule(
            BAD_MESSAGE,
            "The mail server could not accept the email's content or format.",
            "Check the step's template.",
        ),
        "5.1": _Rule(
            RECIPIENT_REJECTED,
            "The recipient's address does not exist or cannot receive email.",
            "Check the prospect's email address.",
        ),
        "421": _Rule(TRANSIENT, "The mail server is busy or closing connections and asked to retry later."),
        "454": _Rule(
            TRANSIENT,
            "The mail server could not check the sign-in right now (a fault, or too many attempts).",
        ),
        "4xx": _SMTP_TEMPORARY,
    }
)
_SMTP_RECIPIENT_REFUSED: Final = _Rule(
    RECIPIENT_REJECTED,
    "The recipient's mail server refused this address.",
    "Check the prospect's email address.",
)
_UNRECOGNISED_MAIL_ERROR: Final = (
    "The mail server returned an error sendwell does not recognise; it will retry."
)
_SMTP_UNKNOWN: Final = _Rule(TRANSIENT, _UNRECOGNISED_MAIL_ERROR)

_ENHANCED_STATUS: Final = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Exchange names the failure in its 5.2.0 text: "STOREDRV.Submission.Exception:<Name>; ...".
_EXCHANGE_SUBMISSION: Final = re.compile(r"STOREDRV\.Submission\.Exception:([A-Za-z]+Exception)\b")


def _smtp_reply(reply: int, message: bytes | str, *, at_recipient: bool) -> Failure:
    text = _text(message)
    enhanced = _ENHANCED_STATUS.match(text)
    status = ".".join(enhanced.groups()) if enhanced else None
    found = _EXCHANGE_SUBMISSION.search(text)
    submission = _safe_code(found[1]) if found else None
    candidates = [
        f"{reply} {status}" if status else None,
        f"{status} {submission}" if status and submission else None,
        status,
        status.rsplit(".", 1)[0] if status else None,
        str(reply),
        f"{reply // 100}xx",
    ]
    code = " ".join(part for part in (f"smtp:{reply}", status, submission) if part)
    for key in candidates:
        if key is not None and key in _SMTP:
            return _SMTP[key].failure(code)
    # A permanent refusal of RCPT TO is about that recipient, whatever the code.
    if at_recipient and 500 <= reply < 600:
        return _SMTP_RECIPIENT_REFUSED.failure(code)
    return _SMTP_UNKNOWN.failure(code)


def classify_smtp_error(exc: smtplib.SMTPException | OSError) -> Failure:
    """Classify an smtplib or socket error by reply code and enhanced status code (RFC 3463)."""
    refusals = list(exc.recipients.values()) if isinstance(exc, smtplib.SMTPRecipientsRefused) else []
    if refusals:
        # Each message goes to one recipient, so the first refusal is the one that matters.
        reply, message = refusals[0]
        return _smtp_reply(reply, message, at_recipient=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _smtp_reply(exc.smtp_code, exc.smtp_error, at_recipient=False)
    return _network_failure("smtp", exc, _SMTP_UNKNOWN)


# --- IMAP ---------------------------------------------------------------------------------------------

# Keyed by the response code in brackets (RFC 5530).
_IMAP: Final = _table(
    {
        "AUTHENTICATIONFAILED": _Rule(
            AUTH_LOST,
            "The mail server rejected the username and password for reading email: the password was "
            "changed or the app password was revoked.",
            "Reconnect this inbox with the current password (or a new app password).",
        ),
        "AUTHORIZATIONFAILED": _Rule(
            USER_ACTION,
            "The mail server accepted the password but does not let this account read email over IMAP.",
            "Ask your email admin to allow IMAP access for this mailbox, then reconnect the inbox.",
        ),
        "EXPIRED": _Rule(
            USER_ACTION,
            "The password of this mailbox has expired.",
            "Sign in to your email in a web browser, set a new password, then reconnect the inbox with it.",
        ),
        "CONTACTADMIN": _Rule(
            USER_ACTION,
            "The mail server says this account needs attention from your email admin (it may be "
            "suspended or locked).",
            "Contact your email provider or admin, then reconnect the inbox.",
        ),
        "PRIVACYREQUIRED": _Rule(
            USER_ACTION,
            "The mail server refuses to sign in over an unencrypted connection.",
            "Reconnect the inbox with encryption turned on (SSL/TLS, usually port 993).",
        ),
        "UNAVAILABLE": _Rule(TRANSIENT, "The mail server is temporarily unavailable."),
        "INUSE": _Rule(TRANSIENT, "The mailbox is busy with another connection."),
        "LIMIT": _Rule(TRANSIENT, "The mail server's connection or request limit was reached."),
        "SERVERBUG": _Rule(TRANSIENT, "The mail server hit an internal error."),
    }
)
_IMAP_ABORT: Final = _Rule(TRANSIENT, "The connection to the mail server broke off.")
_IMAP_UNKNOWN: Final = _Rule(TRANSIENT, _UNRECOGNISED_MAIL_ERROR)
# imaplib raises LOGIN failures with the server's text as bytes (b"[AUTHENTICATIONFAILED] ..."),
# AUTHENTICATE failures as str, other failures as "<CMD> command error: BAD [b'...']", and a
# refused greeting as the whole line ("* BYE [UNAVAILABLE] ..."). The response code opens the
# server's text, so it is looked for only there.
_IMAP_RESPONSE_CODE: Final = re.compile(r"(?:^(?:\* [A-Z]+ )?|\[b['\"])\[([A-Z][A-Z0-9-]{0,31})[\] ]")


def classify_imap_error(exc: imaplib.IMAP4.error | OSError) -> Failure:
    """Classify an imaplib or socket error by the IMAP response code in brackets."""
    if isinstance(exc, imaplib.IMAP4.abort):  # a subclass of IMAP4.error: the connection is gone
        return _IMAP_ABORT.failure("imap:abort")
    if isinstance(exc, imaplib.IMAP4.error):
        message = exc.args[0] if exc.args else ""
        match = _IMAP_RESPONSE_CODE.search(_text(message) if isinstance(message, bytes | str) else "")
        if match is None:
            return _IMAP_UNKNOWN.failure("imap:error")
        return _IMAP.get(match[1], _IMAP_UNKNOWN).failure(f"imap:{match[1]}")
    return _network_failure("imap", exc, _IMAP_UNKNOWN)
