"""What arrived in an inbox, and what it means for the sequences sent from it.

``classify_inbound`` sorts one incoming message into a reply, a hard or soft bounce, a spam
complaint, an automatic reply, a report that *our sender* hit a sending limit, or anything else.
The order of the checks is the point: a delivery report often carries In-Reply-To like a reply
does, a vacation responder answers "Re: <subject>" like a person does, and a sending-limit report
names the prospect as the failed recipient although the prospect did nothing wrong.

Automated before human: mail that shows any sign of being machine-made (a null Return-Path, a
daemon sender, a report, ``Auto-Submitted``, list or challenge-response markers) is never read as
a person's reply, however it is threaded or whatever it attaches: an attached original links such
a message to our step, never makes it an answer.

Message-IDs are handled without angle brackets.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.utils import parseaddr
from html.parser import HTMLParser


class InboundKind(enum.StrEnum):
    REPLY = "reply"  # a person answered one of our messages: stop the enrollment
    BOUNCE = "bounce"  # the recipient is gone (hard): unknown user or domain, moved
    SOFT_BOUNCE = "soft_bounce"  # the mailbox can't take it now: full, suspended, expired, too big
    SENDER_BLOCKED = "sender_blocked"  # refused for our side: spam, policy, auth, reputation, PTR, relay
    SENDER_LIMIT = "sender_limit"  # our own inbox is over a provider sending (rate) limit
    COMPLAINT = "complaint"  # a feedback report (RFC 5965, providers' FBLs): marked as spam
    AUTO_REPLY = "auto_reply"  # out-of-office, autoresponder
    RECEIPT = "receipt"  # a delivery or read receipt: nothing to act on
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    kind: InboundKind
    message_id: str | None = None  # the Message-ID of ours it refers to (no angle brackets)
    recipients: tuple[str, ...] = ()  # bounces: the failed recipients, lower-cased
    status: str | None = None  # enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the remote server's words, whitespace collapsed
    pause: timedelta | None = None  # SENDER_LIMIT: how long the report says to wait, when it says
    # Bounces: the reason in sisimai's vocabulary (userunknown, mailboxfull, blocked, ...), which
    # decided the kind above; None where the report gives nothing to go on.
    reason: str | None = None


def parse_message_ids(value: str | None) -> list[str]:
    """Message-IDs in a Message-ID, In-Reply-To or References value, in order, without brackets.

    Tolerates folding (even inside an id, as some mailers break long ids), comments, commas between
    ids, and a lone id written without its angle brackets.
    """
    if not value:
        return []
    bracketed = [re.sub(r"\s+", "", found) for found in _BRACKETED_ID.findall(value)]
    if bracketed:
        return [found for found in bracketed if "@" in found]
    return [token.strip(",;") for token in value.split() if _BARE_ID.fullmatch(token.strip(",;"))]


def classify_inbound(
    msg: EmailMessage,
    *,
    is_ours: Callable[[str], bool],
    thread_is_ours: Callable[[str], bool] | None = None,
    provider_thread_id: str | None = None,
) -> InboundVerdict:
    """Decide what ``msg`` is. ``is_ours`` answers whether a Message-ID (no brackets) is one we sent."""
    recipients = _delivery_status_recipients(msg)
    text = _own_text(msg)
    if recipients or _looks_like_delivery_report(msg, text):
        return _delivery_report_verdict(msg, recipients, text, is_ours)

    ours = _first_ours(_referenced_ids(msg), is_ours)  # threading, attached originals, receipts
    if _is_feedback_report(msg):
        return InboundVerdict(InboundKind.COMPLAINT, message_id=ours)
    # The thread lookup costs the caller a query: only ask when no Message-ID of ours settled it.
    in_our_thread = ours is None and bool(provider_thread_id and thread_is_ours and thread_is_ours(provider_thread_id))
    if _is_list_mail(msg) and ours is None and not in_our_thread:
        # Newsletters carry Precedence: bulk like autoresponders do; they answer nothing we sent.
        return InboundVerdict(InboundKind.OTHER)
    if _is_automatic_reply(msg):
        return InboundVerdict(InboundKind.AUTO_REPLY, message_id=ours)
    if _is_automated(msg):
        # Machine-made: never a reply, whatever it quotes or attaches (a person's forward-as-
        # attachment, below, is one; a daemon's copy of our message is not).
        return InboundVerdict(InboundKind.OTHER, message_id=ours)
    if ours is not None or in_our_thread:
        return InboundVerdict(InboundKind.REPLY, message_id=ours)
    return InboundVerdict(InboundKind.OTHER)


# --- delivery reports ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RecipientStatus:
    address: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str
    diagnostic: str | None


_DELIVERY_STATUS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DISPOSITION = frozenset({"message/disposition-notification", "message/global-disposition-notification"})
_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_BARE_ID = re.compile(r"[^\s<>()\"@]+@[^\s<>()\"@]+")
_ADDRESS = r"<?([A-Za-z0-9._%+=/'&!#$*?^`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?"
_ENHANCED_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
# "550 5.1.1 ..." or "550-5.1.1 ...": the rest of the line is the diagnostic. A bare "550 ..." counts
# only where a report introduces the server's words, so a phone number in the text can't pass for one.
_SMTP_REPLY_ENHANCED = re.compile(r"(?<![\d.])([45]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})(?![.\d])[^\n]*")
_SMTP_REPLY_BARE = re.compile(
    r"(?:^|said:|response:|error:)[ \t]*(([45]\d\d)[ :-][^\n]*)", re.IGNORECASE | re.MULTILINE
)

_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:undeliverable|undelivered mail returned to sender|delivery status notification"
    r"|mail delivery failed|failure notice|returned mail|delivery failure|delayed mail"
    r"|delivery delayed|mail delivery failure|message not delivered|unzustellbar|non remis)",
    re.IGNORECASE,
)
_DAEMON_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mailer_daemon", "post_master"}
)
# A person forwarding a delivery report ("Fwd: Returned mail ...") quotes the report's own fields.
_FORWARD_PREFIX = re.compile(r"^\s*(?:(?:fwd?|fw|wg|tr|rv|enc|doorst)\s*:\s*)+", re.IGNORECASE)
_QUOTED_REPORT_FIELD = re.compile(r"^[ \t>]*(?:final-recipient|diagnostic-code)\s*:", re.IGNORECASE | re.MULTILINE)
_DAEMON_NAMES = re.compile(r"mail delivery (?:subsystem|system)|microsoft outlook", re.IGNORECASE)
_QMAIL_REPORT = re.compile(r"this is the qmail-send program|i'm afraid i wasn't able to deliver", re.I)
# Where a plain-text report starts quoting the original message: nothing below is the report.
_QUOTED_ORIGINAL = re.compile(
    r"^-{2,} ?(?:below this line is a copy of the message|this is a copy of the message"
    r"|original message follows|start of returned message)",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_MESSAGE_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\n]+>)", re.IGNORECASE | re.MULTILINE)
_TEXT_RECIPIENTS = tuple(
    re.compile(pattern, re.IGNORECASE | re.MULTILINE)
    for pattern in (
        rf"^{_ADDRESS}:",  # qmail and Postfix: "<user@example.com>:" opens each recipient's entry
        rf"(?:wasn't|was not|couldn't be|could not be) delivered to:?\s+{_ADDRESS}",  # Gmail
        rf"your message to:?\s+{_ADDRESS}\s+(?:couldn't|could not|wasn't|was not)",  # Exchange
        rf"(?:address\(es\)|addresses|recipients?(?:\(s\))?) failed(?: permanently)?:\s+{_ADDRESS}",  # Exim
    )
)
_SOFT_WORDS = re.compile(
    r"delivery status notification \(delay\)|delayed mail|delivery delayed|still being retried"
    r"|will (?:retry|continue trying|keep trying)|temporary (?:failure|problem)",
    re.IGNORECASE,
)

# Reports that *our* sender is over a provider limit. Status codes alone can't tell: X.2.2 is
# also "recipient mailbox full" and X.4.5 "congestion", so only the providers' own words count.
_SENDER_LIMIT = re.compile(
    r"daily user sending (?:quota|limit) exceeded"  # Gmail / Workspace, 550-5.4.5
    r"|reached a (?:limit|quota) for sending mail"  # Gmail's own bounce text
    r"|submission ?quota ?exceeded"  # Exchange: SubmissionQuotaExceededException (5.2.2 / 5.2.0)
    r"|(?:recipient|submission) ?rate ?limit ?exceeded"  # Exchange recipient-rate limit
    r"|wascl useraction verdict"  # Outlook.com: the account is throttled or suspended
    r"|message submission rate for this client has exceeded"  # Exchange on-premises 4.4.2
    r"|exceeded (?:the|your) (?:daily |hourly )?(?:sending|message|recipient) (?:limit|quota|rate)"
    r"|exceeded the max(?:imum)? (?:emails|messages|recipients) per (?:hour|day)",  # cPanel / Exim
    re.IGNORECASE,
)
_PAUSE_FOR = re.compile(
    r"(?:try again|retry|resume sending|send again|able to send|wait)\D{0,40}?"
    r"(\d+)\s*(second|minute|hour|day)s?\b",
    re.IGNORECASE,
)
_PAUSE_PER = re.compile(r"(?:emails|messages|recipients) per (hour|day)", re.IGNORECASE)


def _delivery_report_verdict(
    msg: Message,
    recipients: Sequence[_RecipientStatus],
    text: str,
    is_ours: Callable[[str], bool],
) -> InboundVerdict:
    message_id = _first_ours(_bounced_ids(msg, text), is_ours)
    report = _QUOTED_ORIGINAL.split(text, maxsplit=1)[0]
    subject = _header(msg, "Subject") or ""
    diagnostics = [r.diagnostic for r in recipients if r.diagnostic]
    text_status, text_diagnostic = _status_in_text(report)

    if _SENDER_LIMIT.search("\n".join([subject, report, *diagnostics])):
        # No recipients on purpose: the prospect did nothing wrong, our inbox must slow down.
        first = recipients[0] if recipients else None
        return InboundVerdict(
            InboundKind.SENDER_LIMIT,
            message_id=message_id,
            status=first.status if first else text_status,
            diagnostic=first.diagnostic if first and first.diagnostic else text_diagnostic,
            pause=_suggested_pause("\n".join([report, *diagnostics])),
        )

    if recipients:
        hard = [r for r in recipients if r.action == "failed" and r.status.startswith("5")]
        soft = [r for r in recipients if r.action == "delayed" or r.status.startswith("4")]
        for kind, group in ((InboundKind.BOUNCE, hard), (InboundKind.SOFT_BOUNCE, soft)):
            if group:
                return InboundVerdict(
                    kind,
                    message_id=message_id,
                    recipients=tuple(dict.fromkeys(r.address for r in group)),
                    status=group[0].status,
                    diagnostic=group[0].diagnostic,
                )
        if all(r.action in ("delivered", "relayed", "expanded") for r in recipients):
            return InboundVerdict(InboundKind.OTHER, message_id=message_id)  # a success notice

    # A report without a usable delivery-status part: qmail, Exim, older gateways.
    failed = _header_addresses(_headers(msg, "X-Failed-Recipients")) or _text_recipients(report)
    soft_report = (text_status or "").startswith("4") or bool(_SOFT_WORDS.search(f"{subject}\n{report}"))
    return InboundVerdict(
        InboundKind.SOFT_BOUNCE if soft_report else InboundKind.BOUNCE,
        message_id=message_id,
        recipients=tuple(failed),
        status=text_status,
        diagnostic=text_diagnostic,
    )


def _looks_like_delivery_report(msg: Message, text: str) -> bool:
    if _header(msg, "X-Failed-Recipients") or _QMAIL_REPORT.search(text):
        return True
    subject = _header(msg, "Subject") or ""
    forwarded = _FORWARD_PREFIX.match(subject)
    if forwarded and _BOUNCE_SUBJECT.search(subject[forwarded.end() :]) and _QUOTED_REPORT_FIELD.search(text):
        return True
    if not _BOUNCE_SUBJECT.search(subject):
        return False
    # The subject alone could be a person's; reports come from a daemon with a null envelope sender.
    return _from_daemon(msg) or _null_return_path(msg)


def _from_daemon(msg: Message) -> bool:
    name, address = parseaddr(_header(msg, "From") or "")
    # "MAILER-DAEMON <>" (DragonFly, some gateways) leaves the address empty: the name says it.
    local = (address.partition("@")[0] or name.strip().strip('"')).lower()
    return local in _DAEMON_LOCAL_PARTS or bool(_DAEMON_NAMES.search(name))


def _null_return_path(msg: Message) -> bool:
    return any(value.strip() == "<>" for value in _headers(msg, "Return-Path"))


def _delivery_status_recipients(msg: Message) -> list[_RecipientStatus]:
    """Per-recipient fields of every RFC 3464 delivery-status part of the message itself."""
    found: list[_RecipientStatus] = []
    for fields in _report_blocks(msg, _DELIVERY_STATUS):
        recipient = _header(fields, "Final-Recipient") or _header(fields, "Original-Recipient")
        action = (_header(fields, "Action") or "").strip().lower()
        if not recipient or not action:
            continue  # the per-message block, or a malformed one
        address = str(recipient).rpartition(";")[2].strip().strip("<>").lower()
        diagnostic = _collapse((_header(fields, "Diagnostic-Code") or "").partition(";")[2]) or None
        stated = _ENHANCED_STATUS.search(f"{_header(fields, 'Status') or ''} {diagnostic or ''}")
        status = stated.group(1) if stated else {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
        found.append(_RecipientStatus(address, action, status, diagnostic))
    return found


def _report_blocks(msg: Message, content_types: frozenset[str]) -> Iterator[Message]:
    """The header blocks of the machine-readable part of a report (RFC 3464, RFC 8098)."""
    for part in _own_parts(msg):
        if part.get_content_type() not in content_types:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):  # the email package splits message/delivery-status into blocks
            yield from (block for block in payload if isinstance(block, Message))
        elif isinstance(payload, str):  # the UTF-8 variants (RFC 6533) arrive as text: split them here
            for block in re.split(r"\n\s*\n", payload):
                yield HeaderParser(policy=policy.default).parsestr(block)


def _status_in_text(report: str) -> tuple[str | None, str | None]:
    """The status and the remote server's reply line, from a report written for people."""
    reply = _SMTP_REPLY_ENHANCED.search(report)
    if reply:
        return reply.group(2), _collapse(reply.group(0))
    bare = _SMTP_REPLY_BARE.search(report)
    if bare:
        return f"{bare.group(2)[0]}.0.0", _collapse(bare.group(1))
    enhanced = _ENHANCED_STATUS.search(report)
    return (enhanced.group(1) if enhanced else None), None


def _text_recipients(report: str) -> list[str]:
    found = (match.group(1).lower() for pattern in _TEXT_RECIPIENTS for match in pattern.finditer(report))
    return list(dict.fromkeys(found))


def _header_addresses(values: Iterable[object]) -> list[str]:
    found = (match.group(1).lower() for value in values for match in re.finditer(_ADDRESS, str(value)))
    return list(dict.fromkeys(found))


def _suggested_pause(text: str) -> timedelta | None:
    units = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    wait = _PAUSE_FOR.search(text)
    if wait:
        return timedelta(seconds=int(wait.group(1)) * units[wait.group(2).lower()])
    per = _PAUSE_PER.search(text)  # "max emails per hour": the window reopens within one unit
    return timedelta(seconds=units[per.group(1).lower()]) if per else None


def _bounced_ids(msg: Message, text: str) -> list[str]:
    """Where a report names the message that failed, most trustworthy first."""
    ids = _attached_ids(msg)
    for fields in _report_blocks(msg, _DELIVERY_STATUS):  # Gmail names it in the per-message block too
        ids += parse_message_ids(_header(fields, "X-Original-Message-ID"))
    ids += [mid for quoted in _QUOTED_MESSAGE_ID.findall(text) for mid in parse_message_ids(quoted)]
    return ids + _threading_ids(msg)


# --- replies and automatic replies -----------------------------------------------------------

_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply|out of (?:the )?office"
    r"|automatische antwort|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica)\s*:",
    re.IGNORECASE,
)
_READ_RECEIPT = "disposition-notification"  # RFC 8098 report type


def _is_automatic_reply(msg: Message) -> bool:
    auto_submitted = re.split(r"[;(]", _header(msg, "Auto-Submitted") or "")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":  # RFC 3834: auto-replied, auto-generated...
        return True
    for header in ("X-Autoreply", "X-Autorespond"):
        value = _header(msg, header)
        if value is not None and value.strip().lower() != "no":
            return True
    # Exchange stamps mail generated by an inbox rule (its OOF included) with this loop guard.
    # X-Auto-Response-Suppress is no marker: Outlook puts it on ordinary mail a person wrote.
    if _header(msg, "X-MS-Exchange-Inbox-Rules-Loop") is not None:
        return True
    if (_header(msg, "Precedence") or "").strip().lower() in ("auto_reply", "bulk", "junk"):
        return True
    if msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == _READ_RECEIPT:
        return True
    return bool(_AUTO_REPLY_SUBJECT.search(_header(msg, "Subject") or ""))


# A feedback report (RFC 5965), or the shape of a provider's loop that sends the complained-about
# message back with its own marker instead of a report.
_FEEDBACK_REPORT = "feedback-report"
# Outlook.com's JMRP returns the message itself, stamped with the complainer: on the attached copy.
_FEEDBACK_HEADERS = ("X-HmXmrOriginalRecipient", "X-AOL-IP-Complaint")
_NO_REPLY_LOCAL_PARTS = frozenset({"noreply", "no-reply", "donotreply", "do-not-reply", "no_reply"})
# Challenge-response filters (BoxTrapper, SpamArrest, ...), and list servers answering by machine
# (fml, Mailman, ezmlm: "you are not a member").
_MACHINE_HEADERS = (
    "X-Boxtrapper",
    "X-Spam-Arrest",
    "X-Challenge",
    "X-Challenge-Response",
    "X-ASK-Info",
    "List-Id",
    "List-Unsubscribe",
    "Mailing-List",
    "X-Mailing-List",
    "X-MLServer",
    "X-ML-Name",
)


def _is_feedback_report(msg: Message) -> bool:
    if msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == _FEEDBACK_REPORT:
        return True
    if any(part.get_content_type() == "message/feedback-report" for part in msg.walk()):
        return True
    return any(
        _header(headers, name) is not None for headers in (msg, *_attached_headers(msg)) for name in _FEEDBACK_HEADERS
    )


def _is_automated(msg: Message) -> bool:
    """Whether anything about the message says a machine made it (RFC 3834 and what mailers do)."""
    if _null_return_path(msg) or _from_daemon(msg) or _header(msg, "X-Failed-Recipients"):
        return True
    if msg.get_content_type() == "multipart/report":
        return True
    if any(_header(msg, name) is not None for name in _MACHINE_HEADERS):
        return True
    _, address = parseaddr(_header(msg, "From") or "")
    return address.partition("@")[0].lower() in _NO_REPLY_LOCAL_PARTS


def _is_list_mail(msg: Message) -> bool:
    return _header(msg, "List-Id") is not None or _header(msg, "List-Unsubscribe") is not None


def _referenced_ids(msg: Message) -> list[str]:
    """Ids a reply or forward refers to: threading headers, then messages forwarded as attachments."""
    receipts = _report_blocks(msg, _DISPOSITION)  # a read receipt names the message that was read
    read = [mid for fields in receipts for mid in parse_message_ids(_header(fields, "Original-Message-ID"))]
    return _threading_ids(msg) + _attached_ids(msg) + read


def _attached_ids(msg: Message) -> list[str]:
    return [mid for headers in _attached_headers(msg) for mid in parse_message_ids(_header(headers, "Message-ID"))]


def _threading_ids(msg: Message) -> list[str]:
    in_reply_to = parse_message_ids(" ".join(_headers(msg, "In-Reply-To")))
    references = parse_message_ids(" ".join(_headers(msg, "References")))
    return in_reply_to + references[::-1]  # the newest reference is the likeliest to be ours


def _first_ours(ids: Iterable[str], is_ours: Callable[[str], bool]) -> str | None:
    return next((mid for mid in dict.fromkeys(ids) if is_ours(mid)), None)


# --- walking the message ---------------------------------------------------------------------

_TEXT_LIMIT = 200_000  # characters; reports are short, and regexes must stay cheap on huge mail


def _own_parts(msg: Message) -> Iterator[Message]:
    """The message and its multipart children, never the inside of an attached message."""
    yield msg
    if msg.get_content_maintype() == "multipart":
        for part in msg.get_payload():
            if isinstance(part, Message):
                yield from _own_parts(part)


def _attached_headers(msg: Message) -> Iterator[Message]:
    """Headers of messages attached whole (message/rfc822) or as headers only (text/rfc822-headers)."""
    for part in _own_parts(msg):
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                yield inner[0]
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            yield HeaderParser(policy=policy.default).parsestr(_decoded_text(part).lstrip())


def _own_text(msg: Message) -> str:
    chunks: list[str] = []
    for part in _own_parts(msg):
        content_type = part.get_content_type()
        if part.get_content_disposition() == "attachment" or content_type not in ("text/plain", "text/html"):
            continue
        text = _decoded_text(part)
        chunks.append(_html_to_text(text) if content_type == "text/html" else text)
    return "\n".join(chunks)[:_TEXT_LIMIT]


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, ValueError):  # an unknown or mangled charset name: ASCII still carries the report
        return payload.decode("latin-1")


class _TextExtractor(HTMLParser):
    _SKIPPED = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(data)


def _html_to_text(html: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return "".join(extractor.chunks)


def _header(msg: Message, name: str) -> str | None:
    values = _headers(msg, name)
    return values[0] if values else None


def _headers(msg: Message, name: str) -> list[str]:
    """A header's values as text, read raw: the email package's parsers for address headers raise
    on some malformed values, and nothing here needs them parsed."""
    found = []
    for key, raw in msg.raw_items():
        if key.lower() == name.lower():
            unfolded = re.sub(r"\r?\n(?=[ \t])", "", str(raw))
            try:
                found.append(str(make_header(decode_header(unfolded))))
            except (HeaderParseError, UnicodeError, LookupError):  # a broken encoded-word: keep it raw
                found.append(unfolded)
    return found


def _collapse(value: str) -> str:
    return " ".join(value.split())
