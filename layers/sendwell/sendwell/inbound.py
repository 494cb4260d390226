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
import json
import re
import sys
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
from typing import Any

from sendwell import bounce_reasons


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
    notification = _ses_notification(msg, text)
    if notification is not None:
        kind, recipients, original_ids = notification
        if kind is InboundKind.COMPLAINT:
            return InboundVerdict(kind, message_id=_first_ours(original_ids, is_ours))
        return _delivery_report_verdict(msg, recipients, text, is_ours, original_ids)
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
    diagnostic_type: str = "smtp"  # Diagnostic-Code: smtp; ... | x-unix; ... | x-postfix; ...
    remote_mta: str = ""  # the host that answered, where the report names it


class _Pattern:
    """A regular expression compiled at its first use, not at import.

    Every function imports this module (the services name ``InboundKind``), and only the pollers
    read mail: compiled at import, these patterns cost every cold start some 30 ms."""

    __slots__ = ("_compiled", "_flags", "_source")

    def __init__(self, source: str, flags: int = 0) -> None:
        self._source, self._flags = source, flags
        self._compiled: re.Pattern[str] | None = None

    def _get(self) -> re.Pattern[str]:
        if self._compiled is None:
            self._compiled = re.compile(self._source, self._flags)
        return self._compiled

    def search(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        return self._get().search(string, pos, endpos)

    def match(self, string: str) -> re.Match[str] | None:
        return self._get().match(string)

    def fullmatch(self, string: str) -> re.Match[str] | None:
        return self._get().fullmatch(string)

    def findall(self, string: str) -> list[Any]:
        return self._get().findall(string)

    def finditer(self, string: str) -> Iterator[re.Match[str]]:
        return self._get().finditer(string)

    def split(self, string: str, maxsplit: int = 0) -> list[Any]:
        return self._get().split(string, maxsplit)


_DELIVERY_STATUS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DISPOSITION = frozenset({"message/disposition-notification", "message/global-disposition-notification"})
_BRACKETED_ID = _Pattern(r"<([^<>]*)>")
_BARE_ID = _Pattern(r"[^\s<>()\"@]+@[^\s<>()\"@]+")
_ADDRESS = r"<?([A-Za-z0-9._%+=/'&!#$*?^`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?"
_ENHANCED_STATUS = _Pattern(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
# "550 5.1.1 ..." or "550-5.1.1 ...": the rest of the line is the diagnostic. A bare "550 ..." counts
# only where a report introduces the server's words, so a phone number in the text can't pass for one.
_SMTP_REPLY_ENHANCED = _Pattern(r"(?<![\d.])([45]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})(?![.\d])[^\n]*")
_SMTP_REPLY_BARE = _Pattern(r"(?:^|said:|response:|error:)[ \t]*(([45]\d\d)[ :-][^\n]*)", re.IGNORECASE | re.MULTILINE)

_BOUNCE_SUBJECT = _Pattern(
    r"^\s*(?:undeliverable|undelivered mail|(?:mail )?delivery status notification|(?:mail )?delivery (?:has )?failed"
    r"|mail failure"
    r"|failure notice|returned mail|delivery failure|delayed mail|delivery delayed|mail delivery failure"
    r"|message not delivered|(?:mail )?delivery notification|failed delivery|mail failed|delivery problem"
    r"|mail system error|message delivery has failed|there was an error sending|warning: message .{0,80} delayed"
    r"|non-?delivery|could not deliver|delivery report"
    r"|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|unzustellbare"  # de
    r"|non remis|non distribu|[ée]chec de (?:la )?(?:remise|distribution)|rapport de non-remise"  # fr
    r"|no (?:se puede|se pudo) entregar|no entregad|error (?:en la|de) entrega|entrega fallida"  # es
    r"|n[ãa]o (?:entregue|foi poss[íi]vel entregar)|falha n[ao] entrega|mensagem n[ãa]o entregue"  # pt
    r"|non recapitabil|mancato recapito|impossibile recapitare|consegna non riuscita"  # it
    r"|onbestelbaar|niet (?:bezorgd|afgeleverd)|bezorging mislukt"  # nl
    r"|недостав|не доставлен|ошибка доставки|возвращ[её]нное (?:сообщение|письмо)"  # ru
    r")"
    r"|配信でき|配送でき|送信でき|届きませんでした|メールエラー|配信エラー|配送エラー"  # ja, anywhere
    r"|配信失敗|エラーメール"
    r"|退信|无法投递|投递失败|未能送达|发送失败|無法傳遞|無法投遞|傳送失敗",  # zh
    re.IGNORECASE,
)
# The words of a report that says a delivery failed or is late, in the report's own text: these
# make a machine-sent message a report even under a subject we don't know.
_BOUNCE_TEXT = _Pattern(
    r"(?:could ?n[o']t|can ?not|cannot|was ?n[o']t|were ?n[o']t|has ?n[o']t|have ?n[o']t|unable to) (?:yet )?"
    r"(?:be |been )?deliver|not (?:yet )?been delivered|did not reach|undeliverable|delivery (?:has )?failed"
    r"|delivery failure|failed permanently|permanent (?:fatal )?error|returned permanent errors"
    r"|following (?:address(?:\(?es\)?)?|recipients?\(?s?\)?) (?:failed|could not be reached|had permanent)"
    r"|trouble delivering|error sending your (?:mail|message)|rejected by (?:a |the )?remote (?:mail )?server"
    r"|delivery (?:to the following recipients? )?(?:has been |was )?delayed|still being retried"
    r"|(?:this is a )?warning message only|message will be retried"
    r"|konnte nicht (?:zugestellt|ausgeliefert)|nicht zugestellt|unzustellbar"  # de
    r"|n'a pas (?:pu|été) (?:être )?(?:remis|distribu|livr)|impossible de (?:remettre|distribuer)"  # fr
    r"|no (?:se ha podido|se pudo|pudo ser|se puede) entregar|no (?:pudo ser|fue) entregad"  # es
    r"|n[ãa]o (?:foi poss[íi]vel entregar|p[ôo]de ser entregue|foi entregue)"  # pt
    r"|non (?:è stato possibile|è stato|può essere) recapit|impossibile recapitare|mancato recapito"  # it
    r"|(?:kon|kan) niet worden (?:bezorgd|afgeleverd)|onbestelbaar"  # nl
    r"|не (?:может быть|удалось|было|был) ?(?:доставлен|доставить)|не доставлен|ошибка доставки"  # ru
    r"|配信できません|配送できません|送信できません|届きませんでした|宛先不明|配信に失敗|配送に失敗"  # ja
    r"|无法投递|投递失败|未能送达|无法送达|無法傳遞|無法投遞|傳送失敗",  # zh
    re.IGNORECASE,
)
_DAEMON_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mailer_daemon", "post_master"}
)
# A person forwarding a delivery report ("Fwd: Returned mail ...") quotes the report's own fields.
_FORWARD_PREFIX = _Pattern(r"^\s*(?:(?:fwd?|fw|wg|tr|rv|enc|doorst)\s*:\s*)+", re.IGNORECASE)
_QUOTED_REPORT_FIELD = _Pattern(r"^[ \t>]*(?:final-recipient|diagnostic-code)\s*:", re.IGNORECASE | re.MULTILINE)
_DAEMON_NAMES = _Pattern(r"mail delivery (?:subsystem|system)|microsoft outlook", re.IGNORECASE)
_QMAIL_REPORT = _Pattern(r"this is the qmail-send program|i'm afraid i wasn't able to deliver", re.I)
# Where a plain-text report starts quoting the original message: nothing below is the report.
_QUOTED_ORIGINAL = _Pattern(
    r"^-{2,} ?(?:below this line is a copy of the message|this is a copy of the message"
    r"|original message follows|start of returned message)"
    # A marker alone on its line: Gmail's "----- Original message -----", IMail's "Original message
    # follows.", DragonFly's "Message headers follow." (never "The original message was received").
    r"|^[ \t-]*(?:original message(?: follows)?|message headers follow|original message headers?)[ \t.:-]*$",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_MESSAGE_ID = _Pattern(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\n]+>)", re.IGNORECASE | re.MULTILINE)
_TEXT_RECIPIENTS = tuple(
    _Pattern(pattern, re.IGNORECASE | re.MULTILINE)
    for pattern in (
        rf"^{_ADDRESS}:",  # qmail and Postfix: "<user@example.com>:" opens each recipient's entry
        rf"(?:wasn't|was not|couldn't be|could not be) delivered to:?\s+{_ADDRESS}",  # Gmail
        rf"your message to:?\s+{_ADDRESS}\s+(?:couldn't|could not|wasn't|was not)",  # Exchange
        rf"(?:address\(es\)|addresses|recipients?(?:\(s\))?) failed(?: permanently)?:\s+{_ADDRESS}",  # Exim
    )
)
_SOFT_WORDS = _Pattern(
    r"delivery status notification \(delay\)|delayed mail|delivery delayed|still being retried"
    r"|will (?:retry|continue trying|keep trying)|temporary (?:failure|problem)",
    re.IGNORECASE,
)

# Reports that *our* sender is over a provider limit. Status codes alone can't tell: X.2.2 is
# also "recipient mailbox full" and X.4.5 "congestion", so only the providers' own words count.
_SENDER_LIMIT = _Pattern(
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
_PAUSE_FOR = _Pattern(
    r"(?:try again|retry|resume sending|send again|able to send|wait)\D{0,40}?"
    r"(\d+)\s*(second|minute|hour|day)s?\b",
    re.IGNORECASE,
)
_PAUSE_PER = _Pattern(r"(?:emails|messages|recipients) per (hour|day)", re.IGNORECASE)


def _delivery_report_verdict(
    msg: Message,
    recipients: Sequence[_RecipientStatus],
    text: str,
    is_ours: Callable[[str], bool],
    original_ids: Sequence[str] = (),
) -> InboundVerdict:
    message_id = _first_ours([*original_ids, *_bounced_ids(msg, text)], is_ours)
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
        if all(r.action in ("delivered", "relayed", "expanded") or r.status.startswith("2") for r in recipients):
            return InboundVerdict(InboundKind.RECEIPT, message_id=message_id)  # a success notice, never a bounce
        failed_now = [r for r in recipients if not r.status.startswith("2")]
        first = failed_now[0]
        command = bounce_reasons.smtp_command(report)
        hosts = _answering_hosts(msg, report)

        def read(r: _RecipientStatus, words: str) -> tuple[str, InboundKind]:
            where = tuple(dict.fromkeys(filter(None, (r.remote_mta, *hosts))))
            return bounce_reason(
                r.status, words, r.action, command, r.diagnostic_type, recipient=r.address, hosts=where
            )

        reason, kind = read(first, _with_command_note(first.diagnostic, report) or _reason_text(report))
        same = [r for r in failed_now if read(r, r.diagnostic or "")[1] is kind] or [first]
        return InboundVerdict(
            kind,
            message_id=message_id,
            recipients=tuple(dict.fromkeys(r.address for r in same)),
            status=first.status,
            diagnostic=first.diagnostic,
            reason=reason,
        )

    # A report without a usable delivery-status part: qmail, Exim, older gateways.
    failed = (
        _header_addresses(_headers(msg, "X-Failed-Recipients")) or _text_recipients(report) or _flufl_recipients(msg)
    )
    if (text_status or "").startswith("2"):
        return InboundVerdict(InboundKind.RECEIPT, message_id=message_id)
    delayed = (text_status or "").startswith("4") or bool(_SOFT_WORDS.search(f"{subject}\n{report}"))
    reason, kind = bounce_reason(
        text_status,
        text_diagnostic or _reason_text(report),
        "delayed" if delayed else "failed",
        bounce_reasons.smtp_command(report),
        recipient=failed[0] if failed else "",
        hosts=_answering_hosts(msg, report),
    )
    return InboundVerdict(
        kind,
        message_id=message_id,
        recipients=tuple(failed),
        status=text_status,
        diagnostic=text_diagnostic,
        reason=reason,
    )


# --- bounce reasons --------------------------------------------------------------------------
#
# A reason in sisimai's vocabulary, from the remote server's words first and the enhanced status
# code (RFC 3463) second: servers put 5.7.1 on a blocklist hit and on "no such user" alike, and
# 5.0.0 on everything, so the words are the better witness where they say something.
# The reason decides what happens to the prospect:
#   hard (the address is gone): stop and suppress;
#   soft (the mailbox can't take it now): retry later, a bounded number of times;
#   sender-side (refused for who *we* are: spam, policy, auth, reputation, PTR, relay, blocklist):
#     the prospect stays pending, the block counts against the sending inbox.
_SENDER_SIDE_REASONS = {
    "blocked": r"access denied|block ?list|black ?list|blocked|rbl\b|dnsbl|spamhaus|spamcop|barracuda|sorbs"
    r"|\bsurbl|uribl"
    r"|listed (?:at|in|on|by)|client host .{0,60}rejected|connection refused by|banned|denylist|deny ?list"
    r"|your (?:ip|server|host)|sending (?:ip|host|server|mta)|ip address .{0,40}(?:not allowed|rejected|refused)",
    "badreputation": r"reputation|bulk mail|poor quality|low quality|sender score|ipreputation",
    "authfailure": r"\bspf\b|\bdkim\b|\bdmarc\b|sender policy framework|not authorized to send|unauthenticated"
    r"|authentication (?:required|failed|check)|5\.7\.2[3-7]|not pass (?:spf|dkim)",
    "requireptr": r"\bptr\b|reverse (?:dns|lookup|mapping)|\brdns\b|no dns (?:ptr|entry)|cannot find your hostname"
    r"|hostname .{0,30}(?:does not|doesn't) resolve|reverse hostname|rfc ?1912",
    "norelaying": r"relay(?:ing)? (?:access )?(?:denied|not permitted|disallowed|not allowed|prohibited)"
    r"|not (?:permitted|allowed) to relay|unable to relay|no relaying|relay not permitted|open relay",
    "spamdetected": r"\bspam\b|junk mail|unsolicited|content (?:was )?rejected|message content|bulk e?mail|spammy",
    "virusdetected": r"virus|malware|infected|phishing",
    "policyviolation": r"policy|prohibited|not accepted due to|violat|dmarc policy|security reasons"
    r"|rejected by (?:the )?(?:recipient|destination) domain",
    "rejected": r"sender (?:address )?(?:rejected|denied|refused|blocked|not allowed)|envelope sender|domain of sender"
    r"|sender domain|from address|return-?path|mail from|sender .{0,20}(?:not|isn't) (?:allowed|permitted|accepted)"
    r"|address (?:rejected|not accepted) by (?:policy|sender)"
    r"|permission to post|google groups|groups\.google\.com",  # a group that takes no posts from us
    "securityerror": r"insecure|tls required|starttls|encryption (?:required|needed)|security",
    "filtered": r"filter|refused by (?:recipient|user)|recipient (?:has )?(?:refused|rejected) (?:your"
    r"|this) (?:mail|message)",
    "toomanyconn": r"too many (?:connections|concurrent|sessions)|connection limit|rate limit|rate-limit|throttl"
    r"|too many messages|try again later.{0,40}(?:rate|limit)|exceeded .{0,30}rate",
}
_HARD_REASONS = {
    "userunknown": r"user ?unknown|unknown (?:user|recipient|mailbox|local[- ]part|address)|no such (?:user"
    r"|recipient|mailbox|address|account)"
    r"|(?:mailbox|user|recipient|address|account|addressee)(?: name)? (?:is )?(?:does not|doesn't|did not) exist"
    r"|(?:mailbox|user|recipient|address|account) (?:not found|unavailable|invalid|is invalid"
    r"|is unknown|unknown|not listed)"
    r"|invalid (?:recipient|mailbox|address|user)|not a valid (?:mailbox|recipient|user)"
    r"|no mailbox|does not exist|doesn't exist|not our customer|unrouteable address|recipient not found"
    r"|address (?:not found|unknown|invalid)|no longer (?:valid|in use|available|exists)|disabled recipient"
    r"|undeliverable address|bad destination mailbox|nonexistent|non-existent"
    # InterScan MSS, Verizon's gateway, IMail: their own ways of saying it.
    r"|check if (?:the )?address is correct|no valid recipients|invalid final delivery userid"
    r"|benutzer unbekannt|unbekannter (?:benutzer|empf[äa]nger)|empf[äa]nger unbekannt|nicht gefunden"  # de
    r"|utilisateur inconnu|destinataire inconnu|n'existe pas|adresse (?:invalide|inconnue)"  # fr
    r"|usuario desconocido|destinatario desconocido|no existe|inexistente"  # es, pt
    r"|usu[áa]rio desconhecido|destinat[áa]rio desconhecido|n[ãa]o existe"  # pt
    r"|utente sconosciuto|destinatario sconosciuto|non esiste"  # it
    r"|gebruiker onbekend|onbekende (?:gebruiker|ontvanger)|bestaat niet"  # nl
    r"|пользовател\w* не (?:найден|существует)|нет такого (?:пользователя|адресата|ящика)|адрес не существует"  # ru
    r"|ユーザ(?:ー)?が(?:存在しません|見つかりません)|宛先不明|存在しないアドレス"  # ja
    r"|用户不存在|收件人不存在|地址不存在|用戶不存在|帳號不存在",  # zh
    "hostunknown": r"host (?:or domain )?(?:name )?(?:not found|unknown)|unknown host|domain (?:not found"
    r"|does not exist|unknown)"
    r"|no (?:mx|a) record|unrouteable (?:mail )?domain|name or service not known|nxdomain|host unknown|unknown domain"
    r"|domain (?:name )?(?:is )?(?:invalid|not (?:exist|registered))|no such domain|bad destination (?:system|host)",
    "hasmoved": r"has moved|moved to|no longer (?:with|at) |changed (?:his|her|their) address|new address",
    "notaccept": r"does not accept (?:any )?mail|accepts no mail|null mx|not accepting (?:any )?mail"
    r"|no mail (?:is )?accepted",
}
_SOFT_REASONS = {
    "mailboxfull": r"mailbox (?:is )?full|over ?quota|quota (?:exceeded|full|limit)|exceeded (?:the )?(?:storage|quota)"
    r"|insufficient (?:storage|disk|space)|out of (?:storage|space)|mailbox (?:size|storage) limit|full mailbox"
    r"|user is over|disk full|too much mail|mailfolder is full"
    r"|postfach (?:ist )?voll|speicherplatz|boîte .{0,20}pleine|buz[óo]n (?:est[áa] )?lleno"  # de, fr, es
    r"|caixa (?:de correio )?(?:est[áa] )?cheia|casella (?:di posta )?(?:è )?piena|(?:postvak|mailbox) (?:is )?vol"
    r"|ящик переполнен|превышен\w* (?:квот|размер)|容量(?:超過|オーバー)|メールボックスがいっぱい"  # ru, ja
    r"|邮箱已满|信箱已滿|空间不足",  # zh
    "mesgtoobig": r"(?:message|mail) (?:is )?too (?:large|big)|message size|size (?:limit|exceeds)"
    r"|exceeds (?:the )?(?:maximum|size)"
    r"|too large|message length exceeds",
    "exceedlimit": r"exceeds? (?:the )?(?:recipient|message|local) limit|recipient limit",
    "suspend": r"\b(?:suspended|inactive|disabled|deactivated|not active|frozen|on hold|locked|temporarily disabled"
    r"|expired account|account (?:has been )?closed)\b",
    "expired": r"expired|timed? ?out|time-?out|delivery time|could not be delivered (?:for|within)|retry time|too long"
    r"|has been delayed|giving up|deferred|undelivered for|gave up",
    "networkerror": r"network|connection (?:refused|reset|timed out|lost|dropped)|could not connect|unable to connect"
    r"|dns (?:error|failure|lookup)"
    r"|loop|routing|hop count|too many hops|no route",
    "mailererror": r"mailer error|program failed|command (?:died|failed)|unknown mailer",
    "systemerror": r"system (?:error|failure|problem)|internal (?:error|server error)|server error|temporarily"
    r"|temporary|try again"
    r"|service (?:not available|unavailable)|local error|resources",
}
# Most specific first: "Recipient address rejected: Mailbox full" is a full mailbox, and a report's
# boilerplate ("will retry", "temporary") must not outweigh what the server said about the mailbox.
_ORDER = (
    (InboundKind.BOUNCE, _HARD_REASONS, None),
    (InboundKind.SOFT_BOUNCE, _SOFT_REASONS, ("mailboxfull", "mesgtoobig", "exceedlimit", "suspend")),
    (InboundKind.SENDER_BLOCKED, _SENDER_SIDE_REASONS, None),
    (InboundKind.SOFT_BOUNCE, _SOFT_REASONS, ("expired", "networkerror", "mailererror", "systemerror")),
)
_COMPILED = [
    (reason, kind, _Pattern(table[reason], re.IGNORECASE))
    for kind, table, only in _ORDER
    for reason in (only or tuple(table))
]
_HARD = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept", "suppressed"})
_SOFT = frozenset(
    {"mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "expired", "networkerror", "mailererror"}
    | {"systemerror", "systemfull", "filtered", "onhold", "undefined"}
)  # everything else sisimai names is refused for who *we* are: sender-side


def bounce_reason(
    status: str | None,
    diagnostic: str | None,
    action: str = "failed",
    command: str | None = None,
    diagnostic_type: str = "smtp",
    *,
    recipient: str = "",
    hosts: tuple[str, ...] = (),
) -> tuple[str, InboundKind]:
    """The reason a delivery failed and what it means for the prospect.

    sisimai's reading of the reply (``bounce_reasons``) first; where its words find nothing, ours,
    which also know the localised phrases. "filtered" (a recipient-side filter turned the message
    away, often worded "user unknown" after DATA) is soft, as sisimai has it: retried, then given up.
    """
    domain = recipient.rpartition("@")[2]
    failure = bounce_reasons.Failure(status, diagnostic or "", action, command, diagnostic_type, domain, hosts)
    reason = bounce_reasons.find(failure)
    if reason in ("onhold", "undefined"):
        reason = _own_reason(diagnostic or "") or reason
    kind = (
        InboundKind.BOUNCE
        if reason in _HARD
        else InboundKind.SOFT_BOUNCE
        if reason in _SOFT
        else InboundKind.SENDER_BLOCKED
    )
    # A 4.x.x says "not now" whatever the words: the address can't be gone yet.
    if kind is InboundKind.BOUNCE and (action in ("delayed", "expired") or (status or "").startswith("4")):
        kind = InboundKind.SOFT_BOUNCE
    return reason, kind


def _own_reason(diagnostic: str) -> str | None:
    for reason, _kind, pattern in _COMPILED:
        if pattern.search(diagnostic):
            return reason
    return None


_COMMAND_NOTE = _Pattern(r"\(in reply to [^()]{1,40} command\)", re.IGNORECASE)


def _with_command_note(diagnostic: str | None, report: str) -> str | None:
    """The reply as Postfix quotes it in the report, with its "(in reply to RCPT TO command)": some
    replies mean what they mean only with the command ("Recipient address rejected.")."""
    if not diagnostic:
        return diagnostic
    flat = _collapse(report)
    at = flat.find(diagnostic[:40])
    note = _COMMAND_NOTE.search(flat, at, at + len(diagnostic) + 120) if at >= 0 else None
    return flat[at : note.end()] if note else diagnostic


def _reason_text(report: str) -> str:
    return report[:4000]


_SES_KINDS = {"Bounce": InboundKind.BOUNCE, "Complaint": InboundKind.COMPLAINT, "Delivery": InboundKind.RECEIPT}


def _ses_notification(msg: Message, text: str) -> tuple[InboundKind, list[_RecipientStatus], list[str]] | None:
    """An Amazon SES event mailed through SNS: a JSON document instead of a report. Its bounced
    recipients become delivery-status entries, so the same reading applies to them."""
    start = text.find("{")
    if start < 0 or ('"notificationType"' not in text and '"eventType"' not in text) or not _is_automated(msg):
        return None
    try:
        event = _object(json.JSONDecoder(strict=False).raw_decode(text[start:])[0])  # SNS folds long lines
    except ValueError:
        return None
    kind = _SES_KINDS.get(str(event.get("notificationType") or event.get("eventType")))
    if kind is None:
        return None
    original_ids = parse_message_ids(str(_object(_object(event.get("mail")).get("commonHeaders")).get("messageId")))
    bounce = _object(event.get("bounce"))
    permanent = bounce.get("bounceType") == "Permanent"
    recipients = []
    for entry in map(_object, bounce.get("bouncedRecipients") or ()):
        if not entry.get("emailAddress"):
            continue
        diagnostic_type, _, code = str(entry.get("diagnosticCode") or "").partition(";")
        if not code:
            diagnostic_type, code = "smtp", diagnostic_type
        status = _ENHANCED_STATUS.search(f"{entry.get('status') or ''} {code}")
        recipients.append(
            _RecipientStatus(
                str(entry["emailAddress"]).lower(),
                str(entry.get("action") or ("failed" if permanent else "delayed")).lower(),
                status.group(1) if status else ("5.0.0" if permanent else "4.0.0"),
                _collapse(code) or None,
                diagnostic_type.strip().lower() or "smtp",
            )
        )
    if kind is InboundKind.RECEIPT:
        delivered = _object(event.get("delivery")).get("recipients") or ()
        recipients = [_RecipientStatus(str(address).lower(), "delivered", "2.0.0", None) for address in delivered]
    if kind is not InboundKind.COMPLAINT and not recipients:
        return None
    return kind, recipients, original_ids


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _looks_like_delivery_report(msg: Message, text: str) -> bool:
    if _header(msg, "X-Failed-Recipients") or _QMAIL_REPORT.search(text):
        return True
    subject = _header(msg, "Subject") or ""
    forwarded = _FORWARD_PREFIX.match(subject)
    if forwarded and _BOUNCE_SUBJECT.search(subject[forwarded.end() :]) and _QUOTED_REPORT_FIELD.search(text):
        return True
    # The subject or the words alone could be a person's; reports come from a daemon, or with a null
    # envelope sender.
    if not (_from_daemon(msg) or _null_return_path(msg)):
        return False
    report = _QUOTED_ORIGINAL.split(text, maxsplit=1)[0][:20_000]
    if _BOUNCE_SUBJECT.search(subject) or _BOUNCE_TEXT.search(report):
        return True
    # A daemon quoting a server's SMTP error reply is reporting a failure, whatever its wording.
    return _from_daemon(msg) and bool(_SMTP_REPLY_ENHANCED.search(report) or _SMTP_REPLY_BARE.search(report))


def _from_daemon(msg: Message) -> bool:
    name, address = parseaddr(_header(msg, "From") or "")
    # "MAILER-DAEMON <>" (DragonFly, some gateways) leaves the address empty: the name says it.
    local = (address.partition("@")[0] or name.strip().strip('"')).lower()
    return local in _DAEMON_LOCAL_PARTS or bool(_DAEMON_NAMES.search(name))


def _null_return_path(msg: Message) -> bool:
    return any(value.strip() == "<>" for value in _headers(msg, "Return-Path"))


def _delivery_status_recipients(msg: Message) -> list[_RecipientStatus]:
    """Per-recipient fields of every RFC 3464 delivery-status part of the message itself, or, where a
    gateway flattened the report into text, of the same fields written inline."""
    return _recipient_statuses(_report_blocks(msg, _DELIVERY_STATUS)) or _recipient_statuses(_inline_blocks(msg))


def _inline_blocks(msg: Message) -> Iterator[Message]:
    text = _QUOTED_ORIGINAL.split(_own_text(msg), maxsplit=1)[0]
    for paragraph in re.split(r"\n[ \t]*\n", text):
        start = _INLINE_STATUS.search(paragraph)
        if start:
            yield HeaderParser(policy=policy.default).parsestr(paragraph[start.start() :])


# A delivery-status block written into the text: it starts at its Final-Recipient field.
_INLINE_STATUS = _Pattern(r"^Final-Recipient:[^\n]*\n(?:[A-Za-z-]+:[^\n]*\n|[ \t][^\n]*\n)*?Action:", re.I | re.M)


# Where a block gives no Status. "expired" is no RFC 3464 action, but some MTAs (SendGrid) write it.
_STATUS_OF_ACTION = {
    "failed": "5.0.0", "delayed": "4.0.0", "expired": "4.0.0", "delivered": "2.0.0", "relayed": "2.0.0",
    "expanded": "2.0.0",
}  # fmt: skip


def _recipient_statuses(blocks: Iterable[Message]) -> list[_RecipientStatus]:
    found: list[_RecipientStatus] = []
    for fields in blocks:
        recipient = _header(fields, "Final-Recipient") or _header(fields, "Original-Recipient")
        action = (_header(fields, "Action") or "").strip().lower()
        if not recipient or not action:
            continue  # the per-message block, or a malformed one
        address = str(recipient).rpartition(";")[2].strip().strip("<>").lower()
        diagnostic_type, _, code = (_header(fields, "Diagnostic-Code") or "").partition(";")
        diagnostic = _collapse(code) or None
        field = _ENHANCED_STATUS.search(_header(fields, "Status") or "")
        in_message = _ENHANCED_STATUS.search(diagnostic or "")
        status = bounce_reasons.preferred_status(
            field.group(1) if field else "",
            in_message.group(1) if in_message else "",
            bounce_reasons.reply_code(diagnostic or ""),
        ) or _STATUS_OF_ACTION.get(action, "5.0.0")  # an action we don't know, without a status: a failure
        remote = (_header(fields, "Remote-MTA") or "").rpartition(";")[2].strip().rstrip(".")
        found.append(_RecipientStatus(address, action, status, diagnostic, diagnostic_type.strip().lower(), remote))
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


# Where a report names the server that answered: Postfix "host mx.example.com[192.0.2.1] said",
# Exim "host mx.example.com [192.0.2.1]", Sendmail "while talking to mx.example.com.".
_ANSWERING_HOST = _Pattern(r"(?:\bhost|talking to)\s+([a-z0-9-]+(?:\.[a-z0-9-]+)+)\.?\s*[\[:(]", re.IGNORECASE)


def _answering_hosts(msg: Message, report: str) -> tuple[str, ...]:
    """Host names of the servers that answered, then of the one that reports (for provider tables)."""
    named = [match.group(1).lower() for match in _ANSWERING_HOST.finditer(report)]
    for fields in _report_blocks(msg, _DELIVERY_STATUS):
        named += [value.rpartition(";")[2].strip().rstrip(".").lower() for value in _headers(fields, "Reporting-MTA")]
    return tuple(dict.fromkeys(filter(None, named)))


def _flufl_recipients(msg: Message) -> list[str]:
    """flufl.bounce's detectors (Mailman's) know shapes our patterns don't: measured side by side
    on the sisimai corpus, each finds recipients the other misses, so it is asked when ours find none.

    Loaded here, at the first bounce it is asked about: every function imports this module (for
    ``InboundKind``), and only the pollers read bounces."""
    import flufl.bounce as flufl_bounce

    try:
        temporary, permanent = flufl_bounce.all_failures(msg)
    # A third-party parser on hostile input: no recipients, never a failed poll.
    except (ValueError, LookupError, TypeError, AttributeError, UnicodeError):
        return []
    ours = {address.lower() for address in _header_addresses(_headers(msg, "To"))}  # the inbox it came to
    found = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw) for raw in (*permanent, *temporary))
    return [address for address in _header_addresses(found) if address not in ours]


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

_AUTO_REPLY_SUBJECT = _Pattern(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply|out of (?:the )?office"
    r"|automatische antwort|abwesenheitsnotiz|abwesend|r[ée]ponse automatique|absence"  # de, fr
    r"|respuesta autom[áa]tica|fuera de la oficina|resposta autom[áa]tica|aus[êe]ncia"  # es, pt
    r"|risposta automatica|fuori sede|automatisch antwoord|afwezig|niet aanwezig"  # it, nl
    r"|автоответ|автоматический ответ|自動応答|自動返信|不在通知|自动回复|自動回覆|自动答复)\s*[:\uff1a]",  # ru, ja, zh
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
        if part.is_multipart() is False and part.get_content_maintype() == "multipart":
            # A boundary that matches nothing (mangled by a gateway): the parts are one blob of text.
            chunks.append(str(part.get_payload()))
            continue
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
