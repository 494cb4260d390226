"""Provider codes the first tables missed or read wrong, through the real libraries.

Each payload is quoted from the provider's documentation or a public report named beside it. Google
token errors go through google-auth's refresh, Microsoft's through msal, Graph bodies through the
Graph classifier, exactly as in ``test_classify.py`` (whose helpers these reuse).
"""

from __future__ import annotations

import pytest

from sendwell.classify import classify_google_refresh_error, classify_graph_response, classify_msal_result
from sendwell.failures import FailureKind
from tests.unit.test_classify import (
    APP_CONFIG,
    AUTH_LOST,
    JSON,
    NOW,
    RATE_LIMITED,
    TRANSIENT,
    USER_ACTION,
    aad_error,
    check,
    google_refresh_error,
    graph_error,
    msal_refresh,
    oauth_error,
)

# --- Google token endpoint ------------------------------------------------------------------------
# developers.google.com/identity/protocols/oauth2/web-server, "Authorization errors" and
# "Refresh token expiration"; disabled_client as Google's token endpoint answers it.


@pytest.mark.parametrize(
    ("error", "description", "kind"),
    [
        pytest.param(
            "admin_policy_enforced",
            "The Google Account is unable to authorize one or more scopes requested due to the policies of their "
            "Google Workspace administrator.",
            USER_ACTION,
            id="admin_policy_enforced",
        ),
        pytest.param(
            "policy_enforced",
            "The Google Account is unable to authorize one or more scopes requested due to the policies of "
            "Google's Advanced Protection Program.",
            USER_ACTION,
            id="policy_enforced",
        ),
        pytest.param(
            "deleted_client",
            "The OAuth client being used to make the request has been deleted.",
            APP_CONFIG,
            id="deleted",
        ),
        pytest.param("disabled_client", "The OAuth client was disabled.", APP_CONFIG, id="disabled"),
        pytest.param(
            "org_internal",
            "This client is restricted to users within its organization.",
            APP_CONFIG,
            id="org_internal",
        ),
    ],
)
def test_google_token_endpoint_codes(error: str, description: str, kind: FailureKind) -> None:
    failure = classify_google_refresh_error(google_refresh_error((400, oauth_error(error, description), JSON)))
    check(failure, kind, f"google:{error}")


def test_a_deleted_google_account_is_conclusive_and_an_expired_token_is_not() -> None:
    """A consent screen left in Testing ends every grant after 7 days with "Token has been expired or
    revoked.": that must be confirmed (and seen by the breaker), never taken as final."""
    deleted = classify_google_refresh_error(
        google_refresh_error((400, oauth_error("invalid_grant", "Account has been deleted"), JSON))
    )
    expired = classify_google_refresh_error(
        google_refresh_error((400, oauth_error("invalid_grant", "Token has been expired or revoked."), JSON))
    )
    assert deleted.conclusive and deleted.code == "google:invalid_grant account-deleted"
    assert not expired.conclusive and expired.kind is AUTH_LOST


# --- Microsoft identity platform ------------------------------------------------------------------
# learn.microsoft.com/entra/identity-platform/reference-error-codes


@pytest.mark.parametrize(
    ("aadsts", "description", "kind"),
    [
        pytest.param(
            53000,
            "Device is not in required device state: compliant. Conditional Access policy requires a compliant "
            "device, and the device is not compliant. The user must enroll their device with an approved MDM "
            "provider like Intune.",
            USER_ACTION,
            id="53000",
        ),
        pytest.param(
            530003, "Your device is required to be managed to access this resource.", USER_ACTION, id="530003"
        ),
        pytest.param(
            53001,
            "Device is not in required device state: domainJoined. Conditional Access policy requires a domain "
            "joined device, and the device isn't domain joined.",
            USER_ACTION,
            id="53001",
        ),
        pytest.param(
            50053,
            "Sign-in was blocked because it came from an IP address with malicious activity.",
            TRANSIENT,
            id="50053-ip",
        ),
        pytest.param(
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            "value, not the client secret ID, for a secret added to app '3f2b7c1e-8d4a-4b6e-9f0a-1c2d3e4f5a6b'.",
            APP_CONFIG,
            id="7000215",
        ),
        pytest.param(50133, "Session is invalid due to expiration or recent password change.", USER_ACTION, id="50133"),
        pytest.param(
            50105,
            "Your administrator has configured the application to block users unless they are specifically "
            "granted ('assigned') access to the application.",
            USER_ACTION,
            id="50105",
        ),
        pytest.param(90094, "The grant requires admin permission.", USER_ACTION, id="90094"),
        pytest.param(
            7000112,
            "Application '3f2b7c1e-8d4a-4b6e-9f0a-1c2d3e4f5a6b'(sendwell) is disabled.",
            APP_CONFIG,
            id="7000112",
        ),
        pytest.param(
            650056,
            "Misconfigured application. This could be due to one of the following: the client has not listed any "
            "permissions for 'Microsoft Graph' in the requested permissions in the client's application "
            "registration. Or, the admin has not consented in the tenant.",
            APP_CONFIG,
            id="650056",
        ),
        pytest.param(90033, "A transient error has occurred. Please try again.", TRANSIENT, id="90033"),
    ],
)
def test_microsoft_codes(aadsts: int, description: str, kind: FailureKind) -> None:
    error = "invalid_client" if aadsts in (7000215, 7000112) else "invalid_grant"
    status = 401 if error == "invalid_client" else 400
    check(
        classify_msal_result(msal_refresh((status, aad_error(error, aadsts, description), JSON))),
        kind,
        f"aadsts:{aadsts}",
    )


@pytest.mark.parametrize("aadsts", [53000, 53001, 53002, 530002, 530003])
def test_device_policies_say_only_the_tenant_admin_can_fix_them(aadsts: int) -> None:
    failure = classify_msal_result({"error": "invalid_grant", "error_codes": [aadsts]})
    assert "Microsoft 365 admin must exclude this app" in failure.fix
    assert "will not help" in failure.fix


def test_a_lockout_never_disconnects() -> None:
    failure = classify_msal_result({"error": "invalid_grant", "error_codes": [50053]})
    assert not failure.kind.disconnects


def test_the_client_secret_fix_names_every_cause() -> None:
    fix = classify_msal_result({"error": "invalid_client", "error_codes": [7000215]}).fix
    assert "Value, not its Secret ID" in fix and "another app" in fix and "add a new secret" in fix


@pytest.mark.parametrize(("aadsts", "conclusive"), [(50173, True), (50034, True), (700082, True), (70008, False)])
def test_which_microsoft_codes_are_conclusive(aadsts: int, conclusive: bool) -> None:
    assert classify_msal_result({"error": "invalid_grant", "error_codes": [aadsts]}).conclusive is conclusive


# --- Microsoft Graph ------------------------------------------------------------------------------


def test_a_code_in_the_body_beats_the_status_class() -> None:
    """Exchange refuses an unverified outlook.com sender with a 5xx whose body names the cause.
    Source: Microsoft Q&A "ErrorMessageSubmissionBlocked" on /me/sendMail."""
    body = graph_error(
        "ErrorMessageSubmissionBlocked",
        "Cannot send mail. Follow the instructions in your Inbox to verify your account.",
    )
    for status in (554, 503):
        check(
            classify_graph_response(status, body, JSON, now=NOW),
            USER_ACTION,
            f"graph:{status} ErrorMessageSubmissionBlocked",
        )
    # A 5xx with an unknown code is still the service's own trouble.
    check(classify_graph_response(503, graph_error("ServiceUnavailable", "x"), JSON, now=NOW), TRANSIENT, "graph:503")


def test_error_quota_exceeded_has_two_meanings() -> None:
    """ "Cannot get ID from name." is the mailbox's named-property limit, not a full mailbox.
    Sources: microsoftgraph/msgraph-sdk-java#765; microsoft-graph-docs-contrib#3504 (the mailbox was 41%
    used) and #7751 ("Mailbox has exceeded maximum mailbox size.")."""
    named = classify_graph_response(403, graph_error("ErrorQuotaExceeded", "Cannot get ID from name."), JSON, now=NOW)
    full = classify_graph_response(
        403, graph_error("ErrorQuotaExceeded", "Mailbox has exceeded maximum mailbox size."), JSON, now=NOW
    )
    check(named, USER_ACTION, "graph:403 ErrorQuotaExceeded named-properties")
    check(full, USER_ACTION, "graph:403 ErrorQuotaExceeded")
    assert "named properties" in named.reason and "full" in full.reason


def test_graph_send_limit_and_missing_mailbox() -> None:
    check(
        classify_graph_response(
            429, graph_error("ErrorSubmissionQuotaExceeded", "Submission quota exceeded."), JSON, now=NOW
        ),
        RATE_LIMITED,
        "graph:429 ErrorSubmissionQuotaExceeded",
    )
    check(
        classify_graph_response(
            404,
            graph_error("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."),
            JSON,
            now=NOW,
        ),
        USER_ACTION,
        "graph:404 ErrorNonExistentMailbox",
    )
