"""Custom inboxes: SMTP replies and IMAP responses."""

from __future__ import annotations

import imaplib
import re
import smtplib
from typing import Final

from sendwell.classify.microsoft import GRAPH_BLOCKED_SENDER
from sendwell.classify.rules import (
    AUTH_LOST,
    BAD_MESSAGE,
    RATE_LIMITED,
    RECIPIENT_REJECTED,
    TRANSIENT,
    USER_ACTION,
    Rule,
    as_text,
    network_failure,
    safe_code,
    table,
)
from sendwell.failures import Failure

# --- SMTP ---------------------------------------------------------------------------------------------

_SMTP_PASSWORD: Final = Rule(
    AUTH_LOST,
    "The mail server rejected the username and password: the password was changed or the app password was revoked.",
    "Reconnect this inbox with the current password (or a new app password).",
)
_SMTP_ENABLE_SMTP_AUTH: Final = (
    "Simplest: reconnect this inbox as a Microsoft 365 account (sign in with Microsoft) instead of "
    "with a password. Otherwise your Microsoft 365 admin must turn on Authenticated SMTP for this "
    "mailbox (Microsoft 365 admin center > Users > Active users > the user > Mail > Manage email "
    'apps) and for the organization (Exchange admin center > Settings > Mail flow: untick "Turn off '
    'SMTP AUTH protocol for your organization"); security defaults also block it.'
)
_SMTP_OVERSIZE: Final = Rule(
    BAD_MESSAGE, "The email is larger than the mail server accepts.", "Make the email smaller."
)
_SMTP_SEND_AS: Final = Rule(
    USER_ACTION,
    "The mail server does not allow this account to send as this inbox's address.",
    "Ask your email admin to give the account Send As permission for the address, or reconnect the "
    "inbox with the mailbox's own account.",
)
_SMTP_TEMPORARY: Final = Rule(TRANSIENT, "The mail server had a temporary problem and asked to retry later.")

# Looked up from most to least specific: "<reply> <enhanced>", "<enhanced> <Exchange exception>",
# "<enhanced>", "<class>.<subject>", "<reply>", "<reply class>xx".
_SMTP: Final = table(
    {
        "535 5.7.8": _SMTP_PASSWORD,
        "535": _SMTP_PASSWORD,
        "534 5.7.9": Rule(
            USER_ACTION,
            "Google requires an app password for this account because 2-Step Verification is on; the "
            "normal password no longer works here.",
            "Create an app password at myaccount.google.com/apppasswords (Google Account > Security > "
            "2-Step Verification > App passwords), then reconnect this inbox and enter the 16-character "
            "app password instead of your normal password. Or reconnect it as a Google account (sign "
            "in with Google), which needs no password.",
        ),
        "534 5.7.14": Rule(
            USER_ACTION,
            "Google blocked the sign-in and wants you to confirm it is you.",
            "Sign in to this Gmail account in a web browser, complete the security check Google shows, "
            "then reconnect the inbox. If the account uses 2-Step Verification, reconnect with an app "
            "password instead of the normal password.",
        ),
        "535 5.7.139": Rule(
            USER_ACTION,
            "Your Microsoft 365 admin disabled SMTP AUTH (password sign-in for sending) for this mailbox "
            "or the whole organization.",
            _SMTP_ENABLE_SMTP_AUTH,
        ),
        "535 5.7.3": Rule(
            USER_ACTION,
            "Microsoft 365 refused the password: SMTP AUTH is disabled for this mailbox, or the password was changed.",
            _SMTP_ENABLE_SMTP_AUTH + " If the password was changed, reconnect with the new one.",
        ),
        "5.4.5": Rule(
            RATE_LIMITED,
            "This inbox reached Gmail's daily sending limit.",
            "Sending resumes by itself once Gmail lifts the limit (a rolling 24 hours). If it happens "
            "often, lower this inbox's daily sending limit.",
        ),
        "5.2.0 SubmissionQuotaExceededException": Rule(
            RATE_LIMITED,
            "This inbox reached Microsoft 365's sending limit.",
            "Sending resumes by itself once Microsoft lifts the limit (a rolling 24 hours). If it "
            "happens often, lower this inbox's daily sending limit.",
        ),
        "5.2.0 SendAsDeniedException": _SMTP_SEND_AS,
        "5.7.60": _SMTP_SEND_AS,
        "5.1.8": Rule(
            USER_ACTION,
            "The mail server refused this inbox as a sender; at Microsoft 365 this means the account "
            "was restricted for sending what looked like spam.",
            GRAPH_BLOCKED_SENDER.fix,
        ),
        "5.3.4": _SMTP_OVERSIZE,
        "5.2.3": _SMTP_OVERSIZE,
        "5.6": Rule(
            BAD_MESSAGE,
            "The mail server could not accept the email's content or format.",
            "Check the step's template.",
        ),
        "5.1": Rule(
            RECIPIENT_REJECTED,
            "The recipient's address does not exist or cannot receive email.",
            "Check the prospect's email address.",
        ),
        "421": Rule(TRANSIENT, "The mail server is busy or closing connections and asked to retry later."),
        "454": Rule(
            TRANSIENT,
            "The mail server could not check the sign-in right now (a fault, or too many attempts).",
        ),
        "4xx": _SMTP_TEMPORARY,
    }
)
_SMTP_RECIPIENT_REFUSED: Final = Rule(
    RECIPIENT_REJECTED,
    "The recipient's mail server refused this address.",
    "Check the prospect's email address.",
)
_UNRECOGNISED_MAIL_ERROR: Final = "The mail server returned an error sendwell does not recognise; it will retry."
_SMTP_UNKNOWN: Final = Rule(TRANSIENT, _UNRECOGNISED_MAIL_ERROR)

_ENHANCED_STATUS: Final = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Exchange names the failure in its 5.2.0 text: "STOREDRV.Submission.Exception:<Name>; ...".
_EXCHANGE_SUBMISSION: Final = re.compile(r"STOREDRV\.Submission\.Exception:([A-Za-z]+Exception)\b")


def _smtp_reply(reply: int, message: bytes | str, *, at_recipient: bool) -> Failure:
    text = as_text(message)
    enhanced = _ENHANCED_STATUS.match(text)
    status = ".".join(enhanced.groups()) if enhanced else None
    found = _EXCHANGE_SUBMISSION.search(text)
    submission = safe_code(found[1]) if found else None
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
    return network_failure("smtp", exc, _SMTP_UNKNOWN)


# --- IMAP ---------------------------------------------------------------------------------------------

# Keyed by the response code in brackets (RFC 5530).
_IMAP: Final = table(
    {
        "AUTHENTICATIONFAILED": Rule(
            AUTH_LOST,
            "The mail server rejected the username and password for reading email: the password was "
            "changed or the app password was revoked.",
            "Reconnect this inbox with the current password (or a new app password).",
        ),
        "AUTHORIZATIONFAILED": Rule(
            USER_ACTION,
            "The mail server accepted the password but does not let this account read email over IMAP.",
            "Ask your email admin to allow IMAP access for this mailbox, then reconnect the inbox.",
        ),
        "EXPIRED": Rule(
            USER_ACTION,
            "The password of this mailbox has expired.",
            "Sign in to your email in a web browser, set a new password, then reconnect the inbox with it.",
        ),
        "CONTACTADMIN": Rule(
            USER_ACTION,
            "The mail server says this account needs attention from your email admin (it may be suspended or locked).",
            "Contact your email provider or admin, then reconnect the inbox.",
        ),
        "PRIVACYREQUIRED": Rule(
            USER_ACTION,
            "The mail server refuses to sign in over an unencrypted connection.",
            "Reconnect the inbox with encryption turned on (SSL/TLS, usually port 993).",
        ),
        "UNAVAILABLE": Rule(TRANSIENT, "The mail server is temporarily unavailable."),
        "INUSE": Rule(TRANSIENT, "The mailbox is busy with another connection."),
        "LIMIT": Rule(TRANSIENT, "The mail server's connection or request limit was reached."),
        "SERVERBUG": Rule(TRANSIENT, "The mail server hit an internal error."),
    }
)
_IMAP_ABORT: Final = Rule(TRANSIENT, "The connection to the mail server broke off.")
_IMAP_UNKNOWN: Final = Rule(TRANSIENT, _UNRECOGNISED_MAIL_ERROR)
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
        match = _IMAP_RESPONSE_CODE.search(as_text(message) if isinstance(message, bytes | str) else "")
        if match is None:
            return _IMAP_UNKNOWN.failure("imap:error")
        return _IMAP.get(match[1], _IMAP_UNKNOWN).failure(f"imap:{match[1]}")
    return network_failure("imap", exc, _IMAP_UNKNOWN)
