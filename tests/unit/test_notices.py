"""Notice content, for every cause the classifier can disconnect an inbox for.

Each cause starts from what the provider's client library raises or returns (google-auth's
RefreshError with Google's JSON, msal's error dict, smtplib's and imaplib's exceptions with the
server's reply), goes through the real classifier, and ends in the rendered notice.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.auth import exceptions as google_exceptions
from markupsafe import escape

from sendwell.classify import (
    classify_gmail_response,
    classify_google_refresh_error,
    classify_imap_error,
    classify_msal_result,
    classify_smtp_error,
)
from sendwell.failures import Failure
from sendwell.models import Inbox, InboxStatus
from sendwell.ports.platform import Email
from sendwell.services import notices
from sendwell.services.notices import Recipient, Role

NOW = datetime(2026, 11, 23, 9, 0, 5, tzinfo=UTC)
WORKSPACE = "Acme Outreach"
ADMINS = ("admin@agency.example",)
RECONNECT_URL = "https://sendwell.example.test/r/Hx3kQ9vT2mPz8LwR4nYc7JdF1sAe6GbU0oKiV5tXqWE"
HOSTILE_NAME = "Dana <script>alert('x')</script> & Co"


def google_refresh(error: str, description: str, **extra: str) -> Failure:
    data = {"error": error, "error_description": description, **extra}
    return classify_google_refresh_error(
        google_exceptions.RefreshError(f"{error}: {description}", data, retryable=False)
    )


def gmail(status: int, reason: str, message: str) -> Failure:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": "PERMISSION_DENIED",
        }
    }
    return classify_gmail_response(status, body, {"Content-Type": "application/json; charset=UTF-8"})


def aad(error: str, code: int, description: str) -> Failure:
    return classify_msal_result(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: 8c4e0b52-9d3a-4f1e-b7c6-2a1d0e9f8b00",
            "error_codes": [code],
            "timestamp": "2026-11-23 09:00:04Z",
            "correlation_id": "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6",
        }
    )


def smtp_auth(code: int, reply: bytes) -> Failure:
    return classify_smtp_error(smtplib.SMTPAuthenticationError(code, reply))


def imap(reply: bytes) -> Failure:
    return classify_imap_error(imaplib.IMAP4.error(reply))


CAUSES: dict[str, tuple[str, Callable[[], Failure]]] = {
    "google password changed": (
        "gmail",
        lambda: google_refresh("invalid_grant", "Token has been expired or revoked."),
    ),
    "google reauth required": (
        "gmail",
        lambda: google_refresh("invalid_grant", "reauth related error (invalid_rapt)", error_subtype="invalid_rapt"),
    ),
    "gmail scopes missing": (
        "gmail",
        lambda: gmail(403, "insufficientPermissions", "Request had insufficient authentication scopes."),
    ),
    "gmail blocked by workspace admin": (
        "gmail",
        lambda: gmail(403, "domainPolicy", "The domain administrators have disabled Gmail apps."),
    ),
    "microsoft refresh token expired": (
        "outlook",
        lambda: aad("invalid_grant", 70008, "The provided authorization code or refresh token has expired."),
    ),
    "microsoft mfa required": (
        "outlook",
        lambda: aad(
            "invalid_grant",
            50076,
            "Due to a configuration change made by your administrator, or because you moved to a new "
            "location, you must use multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.",
        ),
    ),
    "microsoft conditional access": (
        "outlook",
        lambda: aad("invalid_grant", 53003, "Access has been blocked by Conditional Access policies."),
    ),
    "microsoft account disabled": (
        "outlook",
        lambda: aad("invalid_grant", 50057, "The user account is disabled."),
    ),
    "smtp password changed": (
        "custom",
        lambda: smtp_auth(
            535,
            b"5.7.8 Username and Password not accepted. For more information, go to\n5.7.8  "
            b"https://support.google.com/mail/?p=BadCredentials d2e1a72fcca58-7a3b 20 - gsmtp",
        ),
    ),
    "smtp auth disabled by tenant": (
        "custom",
        lambda: smtp_auth(
            535,
            b"5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
            b"Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR02CA0001.eurprd02.prod.outlook.com]",
        ),
    ),
    "smtp app password required": (
        "custom",
        lambda: smtp_auth(
            534,
            b"5.7.9 Application-specific password required. For more information, go to\n5.7.9  "
            b"https://support.google.com/mail/?p=InvalidSecondFactor a1-20020a05 - gsmtp",
        ),
    ),
    "imap password changed": ("custom", lambda: imap(b"[AUTHENTICATIONFAILED] Invalid credentials (Failure)")),
    "imap account locked": ("custom", lambda: imap(b"[AUTHORIZATIONFAILED] Account is locked")),
}


def disconnected_inbox(provider: str, failure: Failure, *, display_name: str = HOSTILE_NAME) -> Inbox:
    return Inbox(
        inbox_id="ibx_sales",
        provider=provider,
        address="sales@client.example",
        display_name=display_name,
        owner_email="dana@client.example",
        created_at=NOW - timedelta(days=90),
        status=InboxStatus.DISCONNECTED.value,
        status_code=failure.code,
        status_reason=failure.reason,
        status_fix=failure.fix,
        failed_at=NOW,
        incident_id="inc_5f2a9c1e07b3d4a8",
    )


def render(inbox: Inbox, role: Role, *, reminder: int = 0) -> Email:
    address = {Role.ADMIN: ADMINS[0], Role.OWNER: inbox.owner_email, Role.INBOX: inbox.address}[role]
    return notices.disconnected(
        workspace=WORKSPACE,
        inbox=inbox,
        recipient=Recipient(role, address),
        admin_emails=ADMINS,
        reconnect_url=RECONNECT_URL,
        link_expires=NOW + timedelta(days=7),
        campaigns=["Q4 outreach", "Webinar <follow-up>"],
        reminder=reminder,
    )


def plain(html: str) -> str:
    """The HTML part's visible text, to look for sentences that must be there."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.parametrize("cause", CAUSES)
def test_each_cause_says_why_and_what_to_do(cause: str) -> None:
    provider, make = CAUSES[cause]
    failure = make()
    assert failure.kind.disconnects, failure
    assert failure.reason and failure.fix
    inbox = disconnected_inbox(provider, failure)
    for role in Role:
        email = render(inbox, role)
        assert email.to == ({Role.ADMIN: ADMINS[0], Role.OWNER: inbox.owner_email, Role.INBOX: inbox.address}[role],)
        assert email.subject == "Action needed: sales@client.example was disconnected"
        for part in (email.text, plain(email.html)):
            assert "sending from this inbox, and reply and bounce detection for it" in part
            assert "nothing is lost" in part
        # The reason and the fix, verbatim in the text and escaped in the HTML.
        assert f"Why: {failure.reason}" in email.text
        assert f"What to do: {failure.fix}" in email.text
        assert str(escape(failure.reason)) in email.html
        assert str(escape(failure.fix)) in email.html
        assert f'href="{RECONNECT_URL}"' in email.html and f"Reconnect: {RECONNECT_URL}" in email.text
        assert notices.provider_name(provider) in email.text


def test_the_fix_is_specific_to_the_cause() -> None:
    fixes = {cause: make().fix for cause, (_, make) in CAUSES.items()}
    # Causes that need different actions never share a fix text.
    microsoft = ("microsoft mfa required", "microsoft conditional access", "microsoft account disabled")
    smtp = ("smtp password changed", "smtp auth disabled by tenant", "smtp app password required")
    for group in (microsoft, smtp):
        assert len({fixes[cause] for cause in group}) == len(group), group
    assert fixes["gmail blocked by workspace admin"] != fixes["google password changed"]
    assert "admin" in fixes["microsoft conditional access"].lower()
    assert "app password" in fixes["smtp app password required"].lower()
    assert "smtp auth" in fixes["smtp auth disabled by tenant"].lower()


def test_an_inbox_name_with_markup_is_escaped_in_html() -> None:
    inbox = disconnected_inbox("gmail", CAUSES["google password changed"][1]())
    for role in Role:
        email = render(inbox, role)
        assert "<script>" not in email.html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in email.html
        assert "Webinar &lt;follow-up&gt;" in email.html  # campaign names too
        assert f"Inbox: {HOSTILE_NAME} <sales@client.example> (Google)" in email.text  # plain text stays readable


def test_who_can_forward_a_link_depends_on_the_recipient() -> None:
    inbox = disconnected_inbox("outlook", CAUSES["microsoft mfa required"][1]())
    admin, owner, mailbox = (render(inbox, role) for role in Role)
    assert "As a workspace admin you can also create a new reconnect link" in admin.text
    assert "can also forward you" not in admin.text
    for email in (owner, mailbox):
        assert "Your workspace admin (admin@agency.example) can also forward you a new reconnect link." in email.text
        assert "can also forward you a new reconnect link" in plain(email.html)
        assert email.reply_to == ADMINS  # a reply reaches someone who can help
    assert admin.reply_to == ()


def test_a_reminder_says_since_when() -> None:
    inbox = disconnected_inbox("gmail", CAUSES["google password changed"][1]())
    email = render(inbox, Role.OWNER, reminder=2)
    assert email.subject == "Reminder: sales@client.example is still disconnected"
    assert "Reminder: this inbox has been disconnected since 23 November 2026 at 09:00 UTC." in email.text
    assert "Reminder: this inbox has been disconnected since 23 November 2026 at 09:00 UTC." in plain(email.html)


def test_a_stored_reason_without_a_full_stop_still_reads_as_a_sentence() -> None:
    inbox = disconnected_inbox("custom", CAUSES["imap password changed"][1](), display_name="")
    inbox.status_reason, inbox.status_fix = "The password was changed", None
    email = render(inbox, Role.ADMIN)
    assert "Why: The password was changed.\n" in email.text
    assert "What to do" not in email.text
    assert "Inbox: sales@client.example (your mail server)" in email.text


def test_recipients_are_distinct_addresses_admins_first() -> None:
    inbox = disconnected_inbox("gmail", CAUSES["google password changed"][1]())
    inbox.owner_email = "Admin@Agency.example"  # the owner is also an admin
    found = notices.recipients(["admin@agency.example", " ops@agency.example ", ""], inbox)
    assert found == [
        Recipient(Role.ADMIN, "admin@agency.example"),
        Recipient(Role.ADMIN, "ops@agency.example"),
        Recipient(Role.INBOX, "sales@client.example"),
    ]
    inbox.owner_email = "dana@client.example"
    assert [r.role for r in notices.recipients(ADMINS, inbox)] == [Role.ADMIN, Role.OWNER, Role.INBOX]


def test_a_subject_is_always_one_line() -> None:
    inbox = disconnected_inbox("gmail", CAUSES["google password changed"][1]())
    inbox.address = "sales@client.example\r\nBcc: everyone@client.example"
    email = render(inbox, Role.ADMIN)
    assert "\r" not in email.subject and "\n" not in email.subject


def test_the_app_configuration_notice_disconnects_nobody() -> None:
    failure = aad("invalid_client", 7000222, "The provided client secret keys for app '1b2c' are expired.")
    email = notices.app_config(
        workspace=WORKSPACE, provider="outlook", code=failure.code, reason=failure.reason, fix=failure.fix, to=ADMINS
    )
    assert email.subject == "Action needed: the Microsoft 365 app configuration is failing"
    assert failure.reason in email.text and failure.fix in email.text
    assert "No inbox was disconnected" in email.text and "No inbox was disconnected" in email.html
    assert "Error code: aadsts:7000222" in email.text


def test_the_degraded_notice_is_not_a_disconnect() -> None:
    inbox = disconnected_inbox("gmail", CAUSES["google password changed"][1]())
    inbox.status = InboxStatus.CONNECTED.value
    email = notices.degraded(workspace=WORKSPACE, inbox=inbox, since=NOW - timedelta(hours=25), to=ADMINS)
    assert email.subject == "sales@client.example is having trouble reaching Google"
    assert "failed with temporary errors since 22 November 2026 at 08:00 UTC" in email.text
    assert "NOT disconnected" in email.text and "Reconnect" not in email.text
    assert "<script>" not in email.html


def test_the_blocked_notice_pauses_sending_and_bounces_nobody() -> None:
    inbox = disconnected_inbox("gmail", CAUSES["google password changed"][1]())
    inbox.status, inbox.display_name = InboxStatus.CONNECTED.value, HOSTILE_NAME
    refusal = "5.7.1 550 5.7.1 Service unavailable; client host [203.0.113.9] blocked using zen.spamhaus.org"
    email = notices.blocked(
        workspace=WORKSPACE, inbox=inbox, blocks=6, sent=40, last_reason=refusal, paused_at=NOW, to=ADMINS
    )
    assert email.subject == "Sending paused: sales@client.example is being refused as a sender"
    for body in (email.text, email.html):
        assert "6 messages" in body and "of 40 sent today" in body and "zen.spamhaus.org" in body
        assert "not marked bounced" in body and "23 November 2026 at 09:00 UTC" in body
    assert "Reconnect" not in email.text and "<script>" not in email.html and escape(HOSTILE_NAME) in email.html
