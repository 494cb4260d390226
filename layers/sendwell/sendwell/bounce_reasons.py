"""Why a delivery failed, in sisimai's vocabulary, from the remote server's reply.

The phrases are sisimai's own (``bounce_phrases``, generated from go-sisimai's reason tables); the
order of the checks follows sisimai's ``reason.Find``, which has been tuned on real bounces for
years: the specific reasons a server states (mailbox full, unknown user, blocklisted) first, then
what the enhanced status code says (RFC 3463), then the generic words (system error, expired).

Two things besides the words decide between reasons, as in sisimai:
- the SMTP command the reply answered: "user unknown" after RCPT TO is the address; after DATA
  it is a filter turning the message away (sisimai's "filtered"); a reply to MAIL FROM is about
  our sender address ("rejected");
- the status code where it is specific (5.1.1, 5.2.2, 5.7.25).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sendwell.bounce_phrases import ALIGNED, PHRASES, PROVIDER_CODES, PROVIDER_HOSTS, PROVIDER_RULES, RULED_OUT

# RFC 3463 subjects and details, as sisimai names them (smtp/status.Name).
STATUS_REASONS = {
    "4.1.6": "hasmoved", "4.1.7": "rejected", "4.1.8": "rejected", "4.1.9": "systemerror",
    "4.2.1": "blocked", "4.2.2": "mailboxfull", "4.2.3": "exceedlimit", "4.2.4": "filtered",
    "4.3.1": "systemfull", "4.3.2": "notaccept", "4.3.3": "systemerror", "4.3.5": "systemerror",
    "4.4.1": "expired", "4.4.2": "networkerror", "4.4.3": "systemerror", "4.4.4": "networkerror",
    "4.4.5": "systemfull", "4.4.6": "networkerror", "4.4.7": "expired", "4.4.8": "networkerror",
    "4.5.3": "systemerror", "4.5.5": "systemerror", "4.6.0": "contenterror", "4.6.2": "contenterror",
    "4.6.5": "contenterror", "4.7.1": "blocked", "4.7.2": "blocked", "4.7.5": "securityerror",
    "4.7.6": "securityerror", "4.7.7": "securityerror", "4.7.12": "securityerror", "4.7.15": "securityerror",
    "4.7.16": "mesgtoobig", "4.7.24": "authfailure", "4.7.25": "requireptr", "4.7.26": "authfailure",
    "5.1.0": "userunknown", "5.1.1": "userunknown", "5.1.2": "hostunknown", "5.1.3": "userunknown",
    "5.1.4": "filtered", "5.1.6": "hasmoved", "5.1.7": "rejected", "5.1.8": "rejected",
    "5.1.9": "systemerror", "5.1.10": "notaccept", "5.2.0": "filtered", "5.2.1": "filtered",
    "5.2.2": "mailboxfull", "5.2.3": "exceedlimit", "5.2.4": "filtered", "5.3.0": "systemerror",
    "5.3.1": "systemfull", "5.3.2": "notaccept", "5.3.3": "systemerror", "5.3.4": "mesgtoobig",
    "5.3.5": "systemerror", "5.4.0": "networkerror", "5.4.3": "systemerror", "5.4.4": "hostunknown",
    "5.5.2": "syntaxerror", "5.5.3": "toomanyconn", "5.5.4": "systemerror", "5.5.5": "systemerror",
    "5.5.6": "syntaxerror", "5.6.0": "contenterror", "5.6.1": "contenterror", "5.6.2": "contenterror",
    "5.6.3": "contenterror", "5.6.5": "contenterror", "5.6.6": "contenterror", "5.6.7": "contenterror",
    "5.6.8": "contenterror", "5.6.9": "contenterror", "5.7.0": "securityerror", "5.7.1": "securityerror",
    "5.7.2": "securityerror", "5.7.3": "securityerror", "5.7.4": "securityerror", "5.7.5": "securityerror",
    "5.7.6": "securityerror", "5.7.7": "securityerror", "5.7.8": "securityerror", "5.7.9": "securityerror",
    "5.7.10": "securityerror", "5.7.11": "securityerror", "5.7.13": "suspend", "5.7.14": "securityerror",
    "5.7.15": "securityerror", "5.7.16": "mesgtoobig", "5.7.17": "hasmoved", "5.7.18": "hasmoved",
    "5.7.19": "securityerror", "5.7.20": "authfailure", "5.7.21": "authfailure", "5.7.22": "authfailure",
    "5.7.23": "authfailure", "5.7.24": "authfailure", "5.7.25": "requireptr", "5.7.26": "authfailure",
    "5.7.27": "notaccept", "5.7.28": "spamdetected", "5.7.29": "authfailure", "5.7.30": "failedstarttls",
}  # fmt: skip

# Reasons a status code can only suggest: the words get another look (sisimai's GetRetried).
_SUGGESTED_ONLY = frozenset(
    {"undefined", "onhold", "systemerror", "securityerror", "expired", "networkerror", "hostunknown", "userunknown"}
)
# The specific reasons, most specific first (sisimai's ClassOrder[0]).
_STATED = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying", "authfailure",
    "userunknown", "filtered", "requireptr", "notcompliantrfc", "badreputation", "contenterror",
    "rejected", "hostunknown", "spamdetected", "speeding", "toomanyconn", "blocked",
)  # fmt: skip
# The words alone, where nothing above matched (ClassOrder[1]).
_WORDED = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected",
    "policyviolation", "norelaying", "systemerror", "networkerror", "suspend", "contenterror",
    "systemfull", "notaccept", "expired", "failedstarttls", "securityerror", "suppressed", "mailererror",
)  # fmt: skip
_BEFORE_DATA = frozenset({"CONN", "EHLO", "HELO", "MAIL", "RCPT"})
# SMTP commands in the order of a session: where a report names several, the last one is the one
# the failing reply answered (sisimai's smtp/command.Find).
_COMMANDS = (
    ("HELO", "HELO"), ("EHLO", "EHLO"), ("STARTTLS", "STARTTLS"), ("AUTH", "AUTH"), ("MAIL F", "MAIL"),
    ("RCPT", "RCPT"), ("DATA", "DATA"), ("QUIT", "QUIT"),
)  # fmt: skip
# The lines of a report that say which command a reply answered: Postfix "(in reply to RCPT TO
# command)", Exim "after RCPT TO:<...>", Sendmail's transcript ">>> DATA".
# A transcript may also give the command alone on its line ("DATA", "RCPT TO:<...>").
_COMMAND_LINE = re.compile(
    r"in reply to|^\s*>>>|\bafter (?:RCPT|MAIL|DATA|end of|EHLO|HELO)|while talking|command"
    r"|^\s*(?:DATA|RCPT TO:.*|MAIL FROM:.*)\s*$",
    re.M,
)
# Turned away before any command: Postfix "refused to talk to me", Exim "after initial connection",
# a greeting that says no.
_AT_CONNECT = re.compile(
    r"refused to\s+talk to me|after initial connection|not accepting connections|connection refused by",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Failure:
    status: str | None  # "5.1.1"; None when the report gives none
    diagnostic: str  # the server's reply
    action: str = "failed"  # failed | delayed
    command: str | None = None  # RCPT, DATA, ...: the command the reply answered
    diagnostic_type: str = "smtp"  # the Diagnostic-Code type: smtp, x-unix, x-postfix
    # Who answered, to read a provider's own replies by its own table: the recipient's domain, and
    # the host names of the remote servers, then of the reporting one.
    recipient_domain: str = ""
    hosts: tuple[str, ...] = ()


def included_in(reason: str, text: str) -> bool:
    """Whether ``text`` (lower-cased) says ``reason`` in sisimai's words."""
    if not text or any(phrase in text for phrase in RULED_OUT.get(reason, ())):
        return False
    if any(phrase in text for phrase in PHRASES.get(reason, ())):
        return True
    return any(_aligned(text, parts) for parts in ALIGNED.get(reason, ()))


def _aligned(text: str, parts: tuple[str, ...]) -> bool:
    at = 0
    for part in parts:
        found = text.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


def smtp_command(report: str) -> str | None:
    """The SMTP command a report says the failing reply answered, if it says."""
    lines = "\n".join(line for line in report.splitlines() if _COMMAND_LINE.search(line))
    found = "CONN" if _AT_CONNECT.search(report) else None
    for word, command in _COMMANDS:
        # A one-word command must stand alone ("DATA", not "METADATA"); "MAIL F" is its own guard.
        after = "" if " " in word else r"(?![A-Za-z0-9@`])"
        if re.search(rf"(?<![A-Za-z0-9@`]){word}{after}", lines):
            found = command
    return found


def preferred_status(field: str, in_message: str, reply: str | None) -> str:
    """Which of the Status field and the code in the server's words to believe (sisimai's
    status.Prefer): a class the reply code agrees with, then the more specific of the two."""
    if not field or not in_message or field == in_message:
        return field or in_message
    if reply and field[0] != in_message[0]:
        if reply[0] == field[0]:
            return field
        if reply[0] == in_message[0]:
            return in_message
    if ".0.0" in field[1:]:
        return field if ".0.0" in in_message[1:] else in_message
    if ".0" in field[1:] and ".0" not in in_message[1:]:
        return in_message
    if ".0.0" in in_message[1:]:
        return field
    if field in ("4.4.7", "4.7.0") or field.startswith("5.3.") or field[1:4] in (".5.1", ".5.2", ".5.4", ".5.5"):
        return in_message  # ambiguous codes: "expired", "too many errors", a system or command error
    if field == "5.1.1":
        return field if ".0" in in_message[1:] or in_message.startswith("5.5.") else in_message
    if field == "5.1.3" and in_message.startswith("5.7."):
        return in_message
    return field


def reply_code(diagnostic: str) -> str | None:
    code = re.search(r"(?:^|\s)([245]\d\d)(?:[\s-]|$)", diagnostic)
    return code.group(1) if code else None


def find(failure: Failure) -> str:
    """The reason in sisimai's vocabulary: a reason name, or "onhold"/"undefined" when unclear."""
    status = failure.status or ""
    if status.startswith("2."):
        return "delivered"
    text = " ".join(failure.diagnostic.lower().split())
    named = STATUS_REASONS.get(status, "")
    by_provider = _provider_reason(failure, text)
    if by_provider:
        return by_provider
    if failure.diagnostic_type in ("smtp", ""):
        for reason in _STATED:
            if _probe(reason, failure, text, named):
                return reason
    if failure.command in ("CONN", "EHLO", "HELO") and named not in ("hostunknown", "expired"):
        # Refused before the message was offered: the server turned away who we are (sisimai's
        # MTA modules read it so; sisimai itself falls back to it for HELO and EHLO).
        return "blocked"
    reason = _from_words_or_status(failure, text, named)
    if reason:
        return reason
    if failure.action == "delayed":
        return "expired"
    return "onhold" if text else "undefined"


def provider(failure: Failure) -> str | None:
    """The provider whose servers answered (sisimai's rhost.Name): by the recipient's domain, then
    by the hosts, in order."""
    domain = failure.recipient_domain.lower()
    for name, suffixes in PROVIDER_HOSTS.items():
        if domain and any(suffix.endswith(domain) for suffix in suffixes):
            return name
    for host in failure.hosts:
        for name, suffixes in PROVIDER_HOSTS.items():
            if host and any(host.lower().endswith(suffix) for suffix in suffixes):
                return name
    return None


# Where each provider puts its error code in a reply (sisimai's rhost modules): Cox "AUP#CXBL",
# GoDaddy "IB607", Orange and La Poste "LPN007_416" (the last three digits), i.ua ".i.ua/err/06/".
_CODE_IN_REPLY = {
    "Cox": re.compile(r"AUP#([A-Za-z0-9]+)"),
    "GoDaddy": re.compile(r"\b(IB\d{3})\b"),
    "FrancePTT": re.compile(r"\b(?:lpn|ofr|ouk)[a-z]*\d*[_-](\d{3})\b", re.IGNORECASE),
    "IUA": re.compile(r"\.i\.ua/err/(\d+)/", re.IGNORECASE),
}


def _provider_reason(failure: Failure, text: str) -> str | None:
    name = provider(failure) or ""
    coded = _CODE_IN_REPLY.get(name)
    found = coded.search(failure.diagnostic) if coded else None
    if found and PROVIDER_CODES[name].get(found.group(1)):
        return PROVIDER_CODES[name][found.group(1)]
    rules = PROVIDER_RULES.get(name, ())
    if not rules or not text:
        return None
    code, status = reply_code(text), failure.status or ""
    for reason, phrase, reply, stated, low, high in rules:
        if reply and reply != code:
            continue
        if stated and low < 0 and stated != status:
            continue
        if stated and low >= 0:
            third = status.split(".")[2] if status.count(".") == 2 else ""
            if not (status.startswith(stated) and third.isdigit() and low <= int(third) <= high):
                continue
        if phrase.lower() in text:
            return reason
    return None


def _probe(reason: str, failure: Failure, text: str, named: str) -> bool:
    """sisimai's ProbesInto: the status code and the command, as well as the words."""
    command = failure.command or ""
    if reason == "userunknown":
        if named == "userunknown":
            others = ("norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept")
            return not any(included_in(other, text) for other in others)
        # Where the report doesn't say which command, the words mean what they say: most servers
        # check the address at RCPT TO, and reading a gone address as filtered would keep mailing it.
        return command in ("RCPT", "") and included_in(reason, text)
    if reason == "filtered":
        if named == "suspend":
            return False
        if named == "filtered":
            return included_in("userunknown", text) or included_in("filtered", text)
        return command not in _BEFORE_DATA and (included_in("filtered", text) or included_in("userunknown", text))
    if reason == "rejected":
        if named == "rejected":
            return True
        if command == "MAIL":
            return included_in(reason, text)
        if command == "DATA":
            return named != "userunknown" and included_in(reason, text)
        return named in ("", "securityerror", "systemerror") and included_in(reason, text)
    if reason == "hostunknown":
        if named == "hostunknown":
            return not included_in("networkerror", text)
        return included_in(reason, text)
    if reason == "mesgtoobig":
        if named == "mesgtoobig":
            return True
        return named != "exceedlimit" and failure.status != "5.2.3" and included_in(reason, text)
    if reason == "suspend":
        return reply_code(text) == "525" or included_in(reason, text)
    if reason == "norelaying":
        return command not in ("CONN", "EHLO", "HELO") and included_in(reason, text)
    if reason == "spamdetected":
        if not failure.status:
            return False
        return named == reason or (command not in _BEFORE_DATA and included_in(reason, text))
    if reason == "contenterror" and _probe("spamdetected", failure, text, named):
        return False
    if reason in ("hasmoved", "notcompliantrfc", "badreputation", "speeding"):
        return included_in(reason, text)
    return named == reason or included_in(reason, text)


def _from_words_or_status(failure: Failure, text: str, named: str) -> str:
    """sisimai's anotherone: the generic words, then the status code's class."""
    if named and named not in _SUGGESTED_ONLY and failure.diagnostic_type not in ("smtp", ""):
        return named
    for reason in _WORDED:
        if included_in(reason, text):
            return reason
    if named:
        return named
    status = failure.status or ""
    if status[:3] in ("5.6", "4.6"):
        return "contenterror"
    if status[:3] in ("5.7", "4.7"):
        return "securityerror"
    if failure.diagnostic_type.startswith("x-unix"):
        return "mailererror"
    code = reply_code(text)
    if code and (400 < int(code) < 408 or 500 < int(code) < 508):
        return "syntaxerror"
    if failure.action in ("delayed", "expired"):
        return "expired"
    return ""
