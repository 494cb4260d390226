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
    Meaning,
    Rule,
    as_text,
    network_failure,
    refine,
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
_SMTP_SIGN_IN_REFUSED: Final = Rule(
    AUTH_LOST,
    "The mail server refused this inbox's sign-in: the password was changed, the app password was "
    "revoked, or the provider now requires another way to sign in.",
    "Sign in to this mailbox's webmail to check the password and any notice from the provider, then "
    "reconnect the inbox with the current password (or a new app password).",
)
_GOOGLE_APP_PASSWORD: Final = Rule(
    USER_ACTION,
    "Google requires an app password for this account because 2-Step Verification is on; the "
    "normal password no longer works here.",
    "Create an app password at myaccount.google.com/apppasswords (Google Account > Security > "
    "2-Step Verification > App passwords), then reconnect this inbox and enter the 16-character "
    "app password instead of your normal password. Or reconnect it as a Google account (sign "
    "in with Google), which needs no password.",
)
_GOOGLE_WEB_LOGIN: Final = Rule(
    USER_ACTION,
    "Google blocked the sign-in and wants you to confirm it is you.",
    "Sign in to this Gmail account in a web browser, complete the security check Google shows, "
    "then reconnect the inbox. If the account uses 2-Step Verification, reconnect with an app "
    "password instead of the normal password.",
)
# Provider-neutral: 5.1.8 is "bad sender's system address" (RFC 3463) anywhere; the fix names the
# provider's own way out where the server is known (_SENDER_BLOCKED_AT).
_SENDER_BLOCKED: Final = Rule(
    USER_ACTION,
    "The mail server refused to send from this inbox: the provider has blocked or restricted the "
    "account's sending, usually after mail it judged to be spam or unusual activity.",
    "Sign in to this mailbox's webmail: the provider usually explains there (or in an email to the "
    "mailbox) how to unblock sending. If it is a company account, ask your email admin. Then reconnect "
    "the inbox.",
)
_SEND_AS: Final = re.compile(
    r"relay|not owned|not one of your|send(?:ing)? as|mismatch|does not match|not (?:allowed|authori[sz]ed|permitted)"
    r"|sender address rejected",
    re.IGNORECASE,
)

# Looked up from most to least specific: "<reply> <enhanced>", "<enhanced> <Exchange exception>",
# "<enhanced>", "<class>.<subject>", "<reply>", "<reply class>xx".
_SMTP: Final = table(
    {
        "535 5.7.8": _SMTP_PASSWORD,
        "535": _SMTP_PASSWORD,
        "534 5.7.9": _GOOGLE_APP_PASSWORD,
        "534 5.7.14": _GOOGLE_WEB_LOGIN,
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
        # "530 5.7.0 Authentication Required" (Gmail) at MAIL FROM: the server never took our sign-in.
        "530": _SMTP_SIGN_IN_REFUSED,
        "5.1.8": _SENDER_BLOCKED,
        # Exchange Online's restricted senders and spam verdicts on outgoing mail. Source:
        # learn.microsoft.com/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online
        # (5.1.8, 5.7.501, 5.7.502, 5.7.503) and STOREDRV "OutboundSpamException".
        "5.7.501": _SENDER_BLOCKED,
        "5.7.502": _SENDER_BLOCKED,
        "5.7.503": _SENDER_BLOCKED,
        "5.2.0 OutboundSpamException": _SENDER_BLOCKED,
        # "530 5.7.57 Client not authenticated to send mail": SMTP AUTH is off, so the server never
        # took the sign-in.
        "5.7.57": Rule(
            USER_ACTION,
            "The mail server did not accept this inbox's sign-in before sending; at Microsoft 365 this "
            "means SMTP AUTH is turned off for the mailbox.",
            _SMTP_ENABLE_SMTP_AUTH,
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

# Fixes by who runs the server, told by its host name or by what its replies say of themselves.
_PROVIDER_HOSTS: Final = (
    ("google", re.compile(r"(?:^|\.)(?:gmail|googlemail|google)\.com$|\bgsmtp\b", re.IGNORECASE)),
    ("microsoft", re.compile(r"(?:^|\.)(?:office365|outlook|hotmail|live)\.com$|protection\.outlook\.com", re.I)),
    ("zoho", re.compile(r"(?:^|\.)zoho(?:mail)?\.[a-z.]+$|\bzoho\b", re.IGNORECASE)),
    ("yahoo", re.compile(r"(?:^|\.)(?:yahoo|aol)\.[a-z.]+$", re.IGNORECASE)),
    ("icloud", re.compile(r"(?:^|\.)(?:me|icloud|mac)\.com$", re.IGNORECASE)),
)
_SENDER_BLOCKED_AT: Final = {
    "microsoft": GRAPH_BLOCKED_SENDER,
    "google": Rule(
        USER_ACTION,
        "Google suspended sending from this account, usually after mail it judged to be spam.",
        "Sign in to Gmail in a web browser and follow what Google shows; a Google Workspace admin can "
        "restore sending in the Google Admin console (Users > the user > Restore sending). Then reconnect "
        "the inbox.",
    ),
    "zoho": Rule(
        USER_ACTION,
        "Zoho Mail blocked sending from this account after unusual sending activity.",
        "Sign in to Zoho Mail in a web browser and follow the prompt to unblock the account (an "
        "organization's Zoho admin can unblock it in the Zoho Mail admin console > Users). Then reconnect "
        "the inbox.",
    ),
    "yahoo": Rule(
        USER_ACTION,
        "Yahoo blocked sending from this account, usually after mail it judged to be spam or unusual activity.",
        "Sign in to Yahoo Mail in a web browser and complete the check Yahoo shows, then reconnect the inbox.",
    ),
}
_SEND_AS_REFUSED: Final = _SMTP_SEND_AS

_ENHANCED_STATUS: Final = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Exchange names the failure in its 5.2.0 text: "STOREDRV.Submission.Exception:<Name>; ...".
_EXCHANGE_SUBMISSION: Final = re.compile(r"STOREDRV\.Submission\.Exception:([A-Za-z]+Exception)\b")


_GOOGLE_534_WEB_LOGIN: Final = (
    # Google answers 534 5.7.9 both for "Application-specific password required" and for "Please log
    # in with your web browser and then try again". Source: support.google.com/a/answer/3726730
    # (Gmail SMTP errors and codes).
    Meaning(re.compile(r"web ?browser|web login|WebLoginRequired", re.IGNORECASE), "web-login", _GOOGLE_WEB_LOGIN),
)


def _provider(host: str | None, text: str) -> str | None:
    for name, pattern in _PROVIDER_HOSTS:
        if (host and pattern.search(host)) or pattern.search(text):
            return name
    return None


def _smtp_reply(reply: int, message: bytes | str, *, phase: str, host: str | None = None) -> Failure:
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
            rule = _SMTP[key]
            if rule is _SENDER_BLOCKED:
                rule = _SENDER_BLOCKED_AT.get(_provider(host, text) or "", rule)
            if key == "534 5.7.9":
                rule, code = refine(rule, code, text, _GOOGLE_534_WEB_LOGIN)
            return rule.failure(code)
    # What the protocol itself says, for a reply no table knows. A permanent refusal of AUTH is a
    # refusal of the credentials (RFC 4954: 535, 534, and any 5xx there); of MAIL FROM, a refusal
    # of this inbox as a sender (553 and "relay"/"not owned": this address; else the account); of
    # RCPT TO, of that recipient.
    if 500 <= reply < 600:
        if phase == "auth" and reply > 504:  # 500-504: the command itself was not understood
            return _SMTP_SIGN_IN_REFUSED.failure(code)
        if phase == "mail":
            if reply == 553 or _SEND_AS.search(text):
                return _SEND_AS_REFUSED.failure(code)
            return _SENDER_BLOCKED_AT.get(_provider(host, text) or "", _SENDER_BLOCKED).failure(code)
        if phase == "rcpt":
            return _SMTP_RECIPIENT_REFUSED.failure(code)
    return _SMTP_UNKNOWN.failure(code)


def classify_smtp_error(exc: smtplib.SMTPException | OSError, *, host: str | None = None) -> Failure:
    """Classify an smtplib or socket error by reply code and enhanced status code (RFC 3463).

    The command the reply answered comes from smtplib's exception type; ``host`` (the server we
    talked to) picks the provider's own fix where one code means different steps at each.
    """
    refusals = list(exc.recipients.values()) if isinstance(exc, smtplib.SMTPRecipientsRefused) else []
    if refusals:
        # Each message goes to one recipient, so the first refusal is the one that matters.
        reply, message = refusals[0]
        return _smtp_reply(reply, message, phase="rcpt", host=host)
    if isinstance(exc, smtplib.SMTPResponseException):
        phase = (
            "auth"
            if isinstance(exc, smtplib.SMTPAuthenticationError)
            else "mail"
            if isinstance(exc, smtplib.SMTPSenderRefused)
            else "data"
        )
        return _smtp_reply(exc.smtp_code, exc.smtp_error, phase=phase, host=host)
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


# A NO to LOGIN or AUTHENTICATE refuses the credentials (RFC 9051 6.2.2/6.2.3), unless its code
# says the server is the problem. Servers without a code say which refusal it is only in words:
# Gmail's "[ALERT] Application-specific password required", "[WEBALERT <url>] Web login required",
# "[ALERT] Please log in via your web browser"; Gmail and Zoho when IMAP is off for the account;
# Gmail's "[ALERT] Too many simultaneous connections" and "... bandwidth limits", which are not about
# the credentials at all. Outlook answers a bare "LOGIN failed." for a wrong password as for a fault:
# only the confirming attempt tells them apart.
_IMAP_LOGIN_TRANSIENT: Final = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG", "OVERQUOTA"})
_IMAP_LOGIN_WORDS: Final = (
    Meaning(
        re.compile(r"too many simultaneous|bandwidth|try again later|temporar|server error|system error", re.I),
        "busy",
        Rule(TRANSIENT, "The mail server refused the sign-in for now: too many connections or a fault on its side."),
    ),
    Meaning(re.compile(r"application-specific password|app password", re.I), "app-password", _GOOGLE_APP_PASSWORD),
    Meaning(re.compile(r"^\[WEBALERT|web ?browser|web login", re.I), "web-login", _GOOGLE_WEB_LOGIN),
    Meaning(
        re.compile(r"not enabled for IMAP|enable IMAP|IMAP (?:access )?(?:is )?(?:disabled|not enabled)", re.I),
        "imap-disabled",
        Rule(
            USER_ACTION,
            "IMAP is turned off for this mailbox, so sendwell cannot read its replies.",
            "Turn IMAP on in the mailbox's settings (Gmail: Settings > See all settings > Forwarding and "
            "POP/IMAP > Enable IMAP; Zoho: Settings > Mail Accounts > IMAP Access), or ask your email admin "
            "to allow it. Then reconnect the inbox.",
        ),
    ),
)
_IMAP_LOGIN_REFUSED: Final = Rule(
    AUTH_LOST,
    "The mail server refused this inbox's username and password for reading email: the password was "
    "changed, the app password was revoked, or the provider now requires another way to sign in.",
    "Sign in to this mailbox's webmail to check the password and any notice from the provider, then "
    "reconnect the inbox with the current password (or a new app password).",
)
# Outlook.com and Exchange Online accept LOGIN with a wrong password (or a token without IMAP
# permission) and refuse the next command with this, and no code. Source: the Microsoft Q&A
# threads "IMAP: User is authenticated but not connected" (2022-2024).
_NOT_CONNECTED: Final = re.compile(r"User is authenticated but not connected", re.IGNORECASE)


def _imap_text(exc: imaplib.IMAP4.error) -> str:
    message = exc.args[0] if exc.args else ""
    return as_text(message) if isinstance(message, bytes | str) else ""


def classify_imap_error(exc: imaplib.IMAP4.error | OSError, *, at_login: bool = False) -> Failure:
    """Classify an imaplib or socket error by the IMAP response code in brackets.

    ``at_login``: the error answered LOGIN or AUTHENTICATE, where a NO refuses the credentials.
    """
    if isinstance(exc, imaplib.IMAP4.abort):  # a subclass of IMAP4.error: the connection is gone
        return _IMAP_ABORT.failure("imap:abort")
    if not isinstance(exc, imaplib.IMAP4.error):
        return network_failure("imap", exc, _IMAP_UNKNOWN)
    text = _imap_text(exc)
    match = _IMAP_RESPONSE_CODE.search(text)
    code = match[1] if match else None
    if code is not None and code in _IMAP:
        return _IMAP[code].failure(f"imap:{code}")
    if _NOT_CONNECTED.search(text):
        return _IMAP_LOGIN_REFUSED.failure("imap:not-connected")
    # imaplib raises a NO to LOGIN/AUTHENTICATE with the server's text alone, and a BAD as
    # "<CMD> command error: BAD [...]": only the first is a refusal.
    refused = at_login and not text.startswith(("LOGIN command error", "AUTHENTICATE command error"))
    if not refused or code in _IMAP_LOGIN_TRANSIENT:
        return _IMAP_UNKNOWN.failure(f"imap:{code}" if code else "imap:error")
    name = f"imap:{code}" if code else "imap:login-refused"
    words = text.removeprefix(f"[{code}]").strip() if code else text
    rule, name = refine(_IMAP_LOGIN_REFUSED, name, text if code == "WEBALERT" else words, _IMAP_LOGIN_WORDS)
    return rule.failure(name)
