"""Microsoft: the Graph API and the identity platform (msal, AADSTS codes)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import requests

from sendwell.classify.rules import (
    APP_CONFIG,
    AUTH_LOST,
    BAD_MESSAGE,
    NETWORK,
    RATE_LIMITED,
    RECIPIENT_REJECTED,
    TRANSIENT,
    USER_ACTION,
    HttpTable,
    Meaning,
    Rule,
    by_type,
    classify_http,
    json_error,
    network_failure,
    retry_after_from_headers,
    safe_code,
    table,
)
from sendwell.failures import Failure

_RECONNECT_MICROSOFT: Final = "Open the reconnect link and sign in with Microsoft again."

_GRAPH_DENIED: Final = Rule(
    USER_ACTION,
    "Microsoft 365 denied this app access to the mailbox.",
    "Open the reconnect link, sign in with Microsoft and accept every permission it asks for. If it "
    "still fails, your Microsoft 365 admin has blocked apps from this mailbox (an application access "
    "policy, or REST access turned off for the mailbox) and must allow it.",
)
_GRAPH_NO_MAILBOX: Final = Rule(
    USER_ACTION,
    "This Microsoft account has no Exchange Online mailbox that apps can use: it has no licence, is "
    "inactive, or is hosted on an on-premises Exchange server.",
    "Ask your Microsoft 365 admin to assign this user a licence that includes Exchange Online, wait "
    "until the mailbox is ready, then open the reconnect link and sign in with Microsoft again.",
)
_GRAPH_SEND_AS: Final = Rule(
    USER_ACTION,
    "Microsoft 365 does not allow the signed-in account to send as this inbox's address.",
    "Reconnect signed in as the mailbox itself, or ask your Microsoft 365 admin to give that account "
    "Send As permission (Exchange admin center > Recipients > Mailboxes > the mailbox > Delegation).",
)
GRAPH_BLOCKED_SENDER: Final = Rule(
    USER_ACTION,
    "Microsoft blocked this account from sending email, usually because it looked like spam.",
    "Your Microsoft 365 admin must release the account in the Microsoft Defender portal (Email & "
    "collaboration > Review > Restricted entities); Outlook.com users follow the steps Microsoft "
    "emailed them. Then reconnect the inbox.",
)
_GRAPH_MALFORMED: Final = Rule(
    BAD_MESSAGE, "Microsoft 365 could not read the email's content.", "This email will not be retried."
)
_GRAPH_TOO_BIG: Final = Rule(BAD_MESSAGE, "The email is larger than Microsoft 365 accepts.", "Make the email smaller.")
_GRAPH_RATE: Final = Rule(
    RATE_LIMITED,
    "Microsoft 365 is limiting how fast this inbox can send or be read.",
    "Nothing to do: sending resumes by itself when Microsoft allows it.",
)

# Keyed by ``error.code`` and ``error.innerError.code``.
_GRAPH: Final = HttpTable(
    prefix="graph",
    by_code=table(
        {
            "ErrorAccessDenied": _GRAPH_DENIED,
            "Authorization_RequestDenied": _GRAPH_DENIED,
            "MailboxNotEnabledForRESTAPI": _GRAPH_NO_MAILBOX,
            "MailboxNotSupportedForRESTAPI": _GRAPH_NO_MAILBOX,
            "ErrorSendAsDenied": _GRAPH_SEND_AS,
            "SendAsDenied": _GRAPH_SEND_AS,
            "ErrorMessageSubmissionBlocked": GRAPH_BLOCKED_SENDER,
            "ErrorAccountSuspend": GRAPH_BLOCKED_SENDER,
            "ErrorQuotaExceeded": Rule(
                USER_ACTION,
                "The mailbox is full, and Microsoft 365 does not send from a full mailbox.",
                "Delete old email and empty Deleted Items (or ask your Microsoft 365 admin for more "
                "space), then reconnect the inbox.",
            ),
            "ErrorNonExistentMailbox": _GRAPH_NO_MAILBOX,
            "ErrorAccountDisabled": Rule(
                USER_ACTION,
                "This Microsoft 365 account is disabled.",
                "Ask your Microsoft 365 admin to allow sign-in again (Microsoft 365 admin center > Users > "
                "Active users > the user > Unblock sign-in), then reconnect the inbox.",
            ),
            "ErrorSubmissionQuotaExceeded": Rule(
                RATE_LIMITED,
                "This inbox reached Microsoft's sending limit.",
                "Sending resumes by itself once Microsoft lifts the limit (a rolling 24 hours).",
            ),
            # A daily sending limit, not a permission problem: the inbox resumes by itself.
            "ErrorExceededMessageLimit": Rule(
                RATE_LIMITED,
                "This inbox reached Microsoft's daily sending limit.",
                "Sending resumes by itself once Microsoft lifts the limit. Outlook.com accounts may first "
                "have to verify the account from a notice in their inbox.",
            ),
            "ErrorMessageSizeExceeded": _GRAPH_TOO_BIG,
            "ErrorMimeContentInvalid": _GRAPH_MALFORMED,
            "ErrorMimeContentInvalidBase64String": _GRAPH_MALFORMED,
            "ErrorMimeContentConversionFailed": _GRAPH_MALFORMED,
            "ErrorInvalidRecipients": Rule(
                RECIPIENT_REJECTED,
                "Microsoft 365 rejected the recipient's address as invalid.",
                "Check the prospect's email address.",
            ),
        }
    ),
    by_status=table(
        {
            401: Rule(
                AUTH_LOST,
                "Microsoft 365 refused this inbox's access even after signing in again: access was revoked.",
                _RECONNECT_MICROSOFT,
            ),
            413: _GRAPH_TOO_BIG,
            429: _GRAPH_RATE,
        }
    ),
    unavailable=Rule(TRANSIENT, "Microsoft 365 had a temporary problem."),
    unknown=Rule(TRANSIENT, "Microsoft 365 returned an error sendwell does not recognise; it will retry."),
    meanings={
        # Exchange reuses ErrorQuotaExceeded when a mailbox has used up its named properties (each
        # new custom property or header name takes one, for good): the mailbox is not full. Source:
        # microsoftgraph/msgraph-sdk-java#765, microsoft-graph-docs-contrib#3504 ("Cannot get ID
        # from name." while the mailbox was 41% used).
        "ErrorQuotaExceeded": (
            Meaning(
                re.compile(r"Cannot get ID from name", re.IGNORECASE),
                "named-properties",
                Rule(
                    USER_ACTION,
                    "This mailbox has used up its named properties, an Exchange limit on distinct custom "
                    "fields that other apps or add-ins created in it; it is not full, but it cannot save "
                    "or send new email until that is fixed.",
                    "Your Microsoft 365 admin must find the app that creates a new property name for "
                    "every message and stop it, then ask Microsoft support to raise or reset the "
                    "mailbox's named-property quota. Then reconnect the inbox.",
                ),
            ),
        ),
    },
)


def classify_graph_response(
    status: int,
    body: bytes | str | Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> Failure:
    """Classify a Microsoft Graph error response. A 401 is read as a lost grant (see Gmail's)."""
    error = json_error(body)
    codes: list[str | None] = []
    if error is not None:
        inner = error.get("innerError", error.get("innererror"))
        inner_code = inner.get("code") if isinstance(inner, Mapping) else None
        codes = [safe_code(error.get("code")), safe_code(inner_code)]
    return classify_http(_GRAPH, status, error, codes, retry_after_from_headers(headers, now=now))


def classify_graph_exception(exc: requests.RequestException) -> Failure:
    """A Microsoft Graph call that got no answer (timeout, connection refused or reset): TRANSIENT."""
    return network_failure("graph", exc, _GRAPH.unavailable)


# --- Microsoft identity platform (msal) ------------------------------------------------------------

_MS_ADMIN_POLICY: Final = "Microsoft Entra admin center > Protection > Conditional Access"
_MS_DEVICE_POLICY: Final = Rule(
    USER_ACTION,
    "A Conditional Access policy of your Microsoft 365 organization allows sign-ins only from managed "
    "or compliant devices or approved apps, and sendwell signs in from a server, which can never be one.",
    "Signing in again will not help: your Microsoft 365 admin must exclude this app from the policy "
    f"({_MS_ADMIN_POLICY}; the sign-in logs name the policy). Then reconnect the inbox.",
)
_MS_GRANT_EXPIRED: Final = Rule(
    AUTH_LOST,
    "Microsoft says this inbox's sign-in has expired or was revoked.",
    _RECONNECT_MICROSOFT,
)

# Keyed by AADSTS code (``error_codes``). Fixes speak to the inbox owner, and say when their
# Microsoft 365 admin has to act; APP_CONFIG fixes speak to the operator.
_AADSTS_OWN: Final[dict[int, Rule]] = {
    70008: _MS_GRANT_EXPIRED,
    700082: Rule(
        AUTH_LOST,
        "Microsoft expired this inbox's sign-in because it went unused for too long (90 days).",
        _RECONNECT_MICROSOFT,
        conclusive=True,
    ),
    50173: Rule(
        AUTH_LOST,
        "The password of this Microsoft account was changed or reset, which ended the inbox's sign-in.",
        _RECONNECT_MICROSOFT + " Use the new password.",
        conclusive=True,
    ),
    70000: Rule(
        AUTH_LOST,
        "Microsoft no longer accepts this inbox's sign-in: it was revoked or a permission was removed.",
        _RECONNECT_MICROSOFT,
    ),
    50034: Rule(
        AUTH_LOST,
        "This Microsoft 365 account no longer exists in its organization.",
        "If the mailbox was renamed or moved, reconnect with the new account; otherwise remove the inbox.",
        conclusive=True,
    ),
    50076: Rule(
        USER_ACTION,
        "Your organization now requires multi-factor authentication for this account, and the "
        "saved sign-in did not include it.",
        _RECONNECT_MICROSOFT + " Complete the multi-factor prompt (for example approve it in "
        "Microsoft Authenticator) when Microsoft asks.",
    ),
    50079: Rule(
        USER_ACTION,
        "Your organization requires you to set up multi-factor authentication before this account can be used.",
        _RECONNECT_MICROSOFT + " When Microsoft asks, set up multi-factor authentication (for "
        "example with the Microsoft Authenticator app), then finish signing in.",
    ),
    50078: Rule(
        USER_ACTION,
        "Your last multi-factor check has expired under your organization's policy.",
        _RECONNECT_MICROSOFT + " Complete the multi-factor check again when Microsoft asks; how long "
        "one lasts is set by your Microsoft 365 admin.",
    ),
    65001: Rule(
        USER_ACTION,
        "Permission for this app to use the mailbox was withdrawn or never granted.",
        _RECONNECT_MICROSOFT + " Accept the permissions it shows. If Microsoft says an admin must "
        "approve the app, ask your Microsoft 365 admin to grant admin consent (Microsoft Entra admin "
        "center > Enterprise applications > the app > Permissions).",
    ),
    53003: Rule(
        USER_ACTION,
        "A Conditional Access policy set by your Microsoft 365 admin blocks this app from signing in.",
        f"Ask your Microsoft 365 admin to allow this app in the policy ({_MS_ADMIN_POLICY}; the "
        "sign-in logs name the policy that blocked it). Then reconnect the inbox.",
    ),
    530032: Rule(
        USER_ACTION,
        "A security policy of your Microsoft 365 organization blocks this sign-in.",
        "Ask your Microsoft 365 admin to review the organization's security policies for this app "
        f"(security defaults, or {_MS_ADMIN_POLICY}). Then reconnect the inbox.",
    ),
    50057: Rule(
        USER_ACTION,
        "This Microsoft 365 account has been disabled by an admin.",
        "Ask your Microsoft 365 admin to allow sign-in again (Microsoft 365 admin center > Users > "
        "Active users > the user > Unblock sign-in), then reconnect the inbox.",
    ),
    # Smart lockout (too many wrong passwords, often someone else's) or sign-ins from an IP
    # address Microsoft distrusts: it lifts by itself, and the saved sign-in is still good.
    # Source: learn.microsoft.com/entra/identity-platform/reference-error-codes, 50053
    # "IdsLocked" / "account is locked ... or sign-in was blocked because it came from an IP
    # address with malicious activity".
    50053: Rule(
        TRANSIENT,
        "Microsoft has locked this account for a while after too many sign-in attempts, or blocked "
        "sign-ins from the address sendwell runs at; it lifts by itself.",
        "Nothing to do unless it lasts: if someone is guessing the password, your Microsoft 365 admin "
        "can see it in the sign-in logs (Microsoft Entra admin center > Monitoring > Sign-in logs).",
    ),
    # Conditional Access demands a compliant, managed or domain-joined device, or an approved
    # client app. A server cannot be any of these, so signing in again never helps: only the
    # tenant admin can, by excluding the app from the policy. Source: the same reference,
    # 53000 DeviceNotCompliant, 53001 DeviceNotDomainJoined, 530003 "Your device is required to
    # be managed to access this resource", 53002 ApplicationUsedIsNotAnApprovedApp.
    53000: _MS_DEVICE_POLICY,
    53001: _MS_DEVICE_POLICY,
    53002: _MS_DEVICE_POLICY,
    530002: _MS_DEVICE_POLICY,
    530003: _MS_DEVICE_POLICY,
    50055: Rule(
        USER_ACTION,
        "The password of this Microsoft account has expired.",
        "Sign in at office.com, choose a new password when asked, then open the reconnect link and "
        "sign in with Microsoft again.",
    ),
    50132: Rule(
        USER_ACTION,
        "Microsoft ended the saved sign-in because the password was changed or has expired.",
        "Sign in at office.com with your current password (choose a new one if it has expired), "
        "then open the reconnect link and sign in with Microsoft again.",
        conclusive=True,
    ),
    70043: Rule(
        USER_ACTION,
        "Your Microsoft 365 admin's sign-in frequency policy requires you to sign in again, and the "
        "allowed time has passed.",
        _RECONNECT_MICROSOFT + " This repeats at the interval your admin set; your Microsoft 365 admin "
        f"can exclude this app from the sign-in frequency policy ({_MS_ADMIN_POLICY}).",
    ),
    7000222: Rule(
        APP_CONFIG,
        "This app's Microsoft client secret has expired.",
        "Operator: create a new client secret (Microsoft Entra admin center > App registrations > "
        "the app > Certificates & secrets) and update the app's configuration. Inboxes stay connected.",
    ),
    # "Invalid client secret provided. Ensure the secret being sent in the request is the client
    # secret value, not the client secret ID, for a secret added to app '<id>'."
    7000215: Rule(
        APP_CONFIG,
        "Microsoft does not accept this app's configured client secret: it is not a current secret "
        "of the app registration.",
        "Operator: in Microsoft Entra admin center > App registrations > the app > Certificates & "
        "secrets, check that the configured secret is listed there (a secret of another app, or one "
        "deleted, fails the same way) and that you stored its Value, not its Secret ID. The Value is "
        "shown only when a secret is created: if you no longer have it, add a new secret and store "
        "its Value in the client-secret parameter. Inboxes stay connected.",
    ),
    700016: Rule(
        APP_CONFIG,
        "Microsoft cannot find this app's client ID in the inbox's organization.",
        "Operator: check the configured client ID, and that the app registration accepts accounts "
        "in any organization (Supported account types). Inboxes stay connected.",
    ),
}
_MS_ADMIN_CONSENT: Final = Rule(
    USER_ACTION,
    "Your Microsoft 365 organization requires an admin to approve this app before it can use the mailbox.",
    "Ask your Microsoft 365 admin to grant admin consent (Microsoft Entra admin center > Enterprise applications "
    "> the app > Permissions > Grant admin consent), then reconnect the inbox.",
)
_MS_NOT_IN_TENANT: Final = Rule(
    USER_ACTION,
    "The account that signed in is not a member of the Microsoft 365 organization the mailbox belongs to.",
    "Reconnect the inbox and sign in with the mailbox's own work account (not a personal or guest account).",
)
_MS_TRANSIENT_CODE: Final = Rule(TRANSIENT, "Microsoft's sign-in service had a temporary problem.")

# Quoted from learn.microsoft.com/entra/identity-platform/reference-error-codes; several codes share
# a meaning (and so a rule) with one above.
_AADSTS: Final[Mapping[int, Rule]] = table(
    {
        **_AADSTS_OWN,
        50133: _AADSTS_OWN[50132],  # "Session is invalid due to expiration or recent password change."
        50144: _AADSTS_OWN[50055],  # the user's Active Directory password has expired
        50072: _AADSTS_OWN[50079],  # the user must enroll for second-factor authentication
        50074: _AADSTS_OWN[50076],  # strong authentication is required
        51004: _AADSTS_OWN[50034],  # the user account is not in the directory
        50131: _AADSTS_OWN[53003],  # ConditionalAccessFailed
        50097: _MS_DEVICE_POLICY,  # DeviceAuthenticationRequired
        50105: Rule(
            USER_ACTION,
            "Your Microsoft 365 organization only lets assigned users use this app, and this account is not assigned.",
            "Ask your Microsoft 365 admin to assign the account to the app (Microsoft Entra admin center > "
            "Enterprise applications > the app > Users and groups), then reconnect the inbox.",
        ),
        50020: _MS_NOT_IN_TENANT,
        90072: _MS_NOT_IN_TENANT,
        65004: Rule(
            USER_ACTION,
            "The permissions this app needs were declined at the last sign-in.",
            _RECONNECT_MICROSOFT + " Accept the permissions Microsoft shows.",
        ),
        90094: _MS_ADMIN_CONSENT,
        90095: _MS_ADMIN_CONSENT,
        500011: _MS_ADMIN_CONSENT,  # Microsoft Graph was never consented to in this organization
        53004: Rule(
            USER_ACTION,
            "Microsoft blocked setting up multi-factor authentication for this account: the sign-in looked risky.",
            "Ask your Microsoft 365 admin to review the account's risk (Microsoft Entra admin center > Protection > "
            "Identity Protection), then reconnect the inbox.",
        ),
        50135: Rule(
            USER_ACTION,
            "Microsoft requires a new password for this account because of a risk on it.",
            "Sign in at office.com, set a new password when asked, then reconnect the inbox.",
        ),
        50142: Rule(
            USER_ACTION,
            "A Conditional Access policy of your organization requires a new password for this account.",
            "Sign in at office.com, set a new password when asked, then reconnect the inbox.",
        ),
        90002: Rule(
            USER_ACTION,
            "Microsoft no longer finds this account's organization: its subscription may have ended or it was deleted.",
            "Ask your Microsoft 365 admin whether the organization still exists; then reconnect the inbox with a "
            "current account, or remove it.",
        ),
        650056: Rule(
            APP_CONFIG,
            "Microsoft says this app is misconfigured: it lists no permission for Microsoft Graph, or an "
            "organization's admin has not consented to it.",
            "Operator: check the app registration's API permissions (Mail.Send, Mail.Read, offline_access, "
            "openid, email, User.Read); if they are there, the organization's admin must grant consent. "
            "Inboxes stay connected.",
        ),
        7000112: Rule(
            APP_CONFIG,
            "Microsoft says this app is disabled.",
            "Operator: enable it again (Microsoft Entra admin center > Enterprise applications > the app > "
            "Properties > Enabled for users to sign-in). Inboxes stay connected.",
        ),
        7000218: Rule(
            APP_CONFIG,
            "Microsoft got no client secret from this app.",
            "Operator: store the client secret in the Microsoft client-secret parameter. Inboxes stay connected.",
        ),
        50194: Rule(
            APP_CONFIG,
            "This app's Microsoft registration accepts accounts of its own organization only.",
            "Operator: set the app registration's Supported account types to accounts in any organizational "
            "directory, or set the authority to that tenant. Inboxes stay connected.",
        ),
        700084: Rule(
            APP_CONFIG,
            "Microsoft issued this inbox's sign-in to a single-page app, whose sign-ins last 24 hours only.",
            "Operator: register the redirect URI under the Web platform, not Single-page application, then have "
            "the inboxes reconnected. Inboxes stay connected meanwhile.",
        ),
        90033: _MS_TRANSIENT_CODE,  # "A transient error has occurred. Try again."
        50196: _MS_TRANSIENT_CODE,  # a loop of identical requests was stopped
        500133: _MS_TRANSIENT_CODE,  # a clock skew: the assertion is not within its valid time
        50089: _MS_TRANSIENT_CODE,  # the flow token expired
    }
)

_MS_TEMPORARY: Final = Rule(TRANSIENT, "Microsoft's sign-in service had a temporary problem.")
_MS_APP_REJECTED: Final = Rule(
    APP_CONFIG,
    "Microsoft rejected this app's credentials.",
    "Operator: check the app's Microsoft client ID and secret. Inboxes stay connected.",
)
_MS_SIGN_IN_AGAIN: Final = Rule(
    USER_ACTION, "Microsoft requires you to sign in to this account again.", _RECONNECT_MICROSOFT
)
# Keyed by OAuth ``error``, used when no AADSTS code is known.
_MSAL_ERRORS: Final = table(
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
_MS_UNKNOWN: Final = Rule(
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
    error = safe_code(result.get("error"))
    code_name = f"aadsts:{codes[0]}" if codes else f"msal:{error or 'unknown'}"
    rule = _MSAL_ERRORS.get(error, _MS_UNKNOWN) if error is not None else _MS_UNKNOWN
    return rule.failure(code_name)


@functools.cache
def _msal_exceptions() -> Mapping[type[BaseException], tuple[str, Rule]]:
    """msal raises MsalServiceError("HTTP Error: 503") for a 5xx, and lets json.loads' JSONDecodeError
    escape for a non-JSON 4xx (a 429 HTML page); requests' own exceptions pass through untouched.

    Built at the first msal error, when msal is loaded already: the Graph tables above serve the
    SMTP classifier too, which must not load msal.
    """
    from msal.exceptions import MsalServiceError

    return MappingProxyType(
        {
            MsalServiceError: ("http_error", _MS_TEMPORARY),
            json.JSONDecodeError: (
                "non_json_response",
                Rule(TRANSIENT, "Microsoft's sign-in service answered with an error page, not a normal reply."),
            ),
        }
    )


def classify_msal_exception(exc: Exception) -> Failure:
    """Classify an exception escaping an msal call: all of them are TRANSIENT.

    See :func:`classify_msal_result` about msal's throttling cache.
    """
    return by_type("msal", exc, _msal_exceptions(), NETWORK) or _MS_UNKNOWN.failure("msal:unknown")
