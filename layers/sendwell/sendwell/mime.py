"""Build the RFC 5322 message for one sequence step, refusing anything that could forge a header.

Every header value is checked for control characters *before* the email package sees it: the
package folds or encodes some of them silently, and a prospect's name is attacker-controlled input.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from email import errors as email_errors
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

# `refold_source="none"` leaves headers stored with `set_raw` exactly as written. We need that for
# message ids and URIs: the email package re-encodes an unstructured header whose token is longer
# than a line (an Outlook Message-ID often is) as an RFC 2047 encoded-word, which breaks threading
# and one-click unsubscribe.
_POLICY = policy.SMTP.clone(refold_source="none")
_FOLD_AT = 78  # RFC 5322's recommended line length; longer raw headers are folded between items

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MESSAGE_ID = re.compile(r"<[!-;=?A-~]+@[!-;=?A-~]+>")  # printable ASCII, one '@', no '<' '>' inside
_URI = re.compile(r"[!-;=?-~]+")  # printable ASCII without '<' or '>' (they delimit the URI)
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_REPLY_PREFIX = re.compile(r"\s*re\s*:", re.IGNORECASE)
_ONE_CLICK = "List-Unsubscribe=One-Click"


class MessageBuildError(Exception):
    """The message cannot be built from the given values."""


class HeaderInjection(MessageBuildError):
    """A header value holds a line break or other control character."""

    def __init__(self, field: str) -> None:
        super().__init__(f"the {field} contains a line break or control character")
        self.field = field


class InvalidAddress(MessageBuildError):
    """Not an email address we can send to."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address!r} is not a valid email address: {reason}")
        self.address = address
        self.reason = reason


def has_control_chars(value: str) -> bool:
    return _CONTROL_CHARS.search(value) is not None


def normalize_address(address: str) -> str:
    """Return ``address`` as a plain ASCII addr-spec with a lowercase domain, or raise InvalidAddress.

    Deliberately stricter than RFC 5322: no comments, no spaces, no domain literals, a domain with
    a dot; internationalised domains become their IDNA (punycode) form so any server accepts them.
    """
    if has_control_chars(address):
        raise InvalidAddress(address, "it contains a control character")
    if not address or len(address) > 254 or any(ch.isspace() for ch in address):
        raise InvalidAddress(address, "it is empty, too long or contains a space")
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, email_errors.HeaderParseError) as exc:
        # The parser reports problems with several exception types (a defect is a ValueError).
        raise InvalidAddress(address, "it does not have the form name@example.com") from exc
    # The parser skips comments such as "(x)a@b.com"; accept only what reads back unchanged.
    if parsed.addr_spec.lower() != address.lower() or len(parsed.username) > 64:
        raise InvalidAddress(address, "it does not have the form name@example.com")
    return Address(username=parsed.username, domain=_ascii_domain(parsed.domain, address)).addr_spec


def new_message_id(domain: str) -> str:
    """A fresh, unguessable Message-ID on our sending domain."""
    return f"<{secrets.token_hex(16)}@{_ascii_domain(domain, domain)}>"


def build_message(
    *,
    from_addr: str,
    from_name: str,
    to_addr: str,
    to_name: str,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    unsubscribe_url: str | None,
    unsubscribe_mailto: str | None,
    date: datetime,
) -> EmailMessage:
    """Build the message for one step; a follow-up (``in_reply_to`` given) threads under it."""
    for field, value in (("subject", subject), ("sender name", from_name), ("recipient name", to_name)):
        if has_control_chars(value):
            raise HeaderInjection(field)
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")
    thread = [_checked_message_id(ref, "References") for ref in references]
    if in_reply_to is not None:
        in_reply_to = _checked_message_id(in_reply_to, "In-Reply-To")
        if _REPLY_PREFIX.match(subject) is None:
            subject = f"Re: {subject}"
        # A reply's References end with the message it answers (RFC 5322 section 3.6.4).
        if in_reply_to not in thread:
            thread.append(in_reply_to)

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = Address(display_name=from_name, addr_spec=_checked_address(from_addr, "sender address"))
    msg["To"] = Address(display_name=to_name, addr_spec=_checked_address(to_addr, "recipient address"))
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = _checked_message_id(message_id, "Message-ID")
    if in_reply_to is not None:
        msg.set_raw("In-Reply-To", in_reply_to)
    if thread:
        _set_raw_folded(msg, "References", thread, separator=" ")
    unsubscribe = _unsubscribe_uris(unsubscribe_url, unsubscribe_mailto)
    if unsubscribe:
        _set_raw_folded(msg, "List-Unsubscribe", unsubscribe, separator=", ")
        if unsubscribe_url is not None and unsubscribe_url.startswith("https://"):  # RFC 8058: HTTPS only
            msg["List-Unsubscribe-Post"] = _ONE_CLICK

    # Quoted-printable keeps non-ASCII text readable in source and needs no 8BITMIME from the server.
    msg.set_content(text, cte=None if text.isascii() else "quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte=None if html.isascii() else "quoted-printable")
        # Otherwise each serialisation picks a new boundary, and the bytes sent would differ from
        # the bytes we hash, store or hand to Gmail. Random, so it cannot collide with the text.
        msg.set_boundary(f"=_{secrets.token_hex(16)}")
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """The message as sent on the wire: CRLF line endings throughout."""
    return msg.as_bytes(policy=_POLICY)


def to_gmail_raw(msg: EmailMessage) -> str:
    """The ``raw`` field of Gmail's messages.send: the wire bytes, base64url-encoded."""
    return base64.urlsafe_b64encode(to_bytes(msg)).decode("ascii")


def _checked_address(address: str, field: str) -> str:
    if has_control_chars(address):
        raise HeaderInjection(field)
    return normalize_address(address)


def _checked_message_id(message_id: str, field: str) -> str:
    if has_control_chars(message_id):
        raise HeaderInjection(field)
    message_id = message_id.strip()
    if _MESSAGE_ID.fullmatch(message_id) is None:
        raise MessageBuildError(f"the {field} value is not a message id of the form <id@domain>")
    return message_id


def _unsubscribe_uris(url: str | None, mailto: str | None) -> list[str]:
    uris = []
    if url is not None:
        if has_control_chars(url):
            raise HeaderInjection("unsubscribe URL")
        # RFC 8058 one-click needs HTTPS; plain http is only accepted on this machine (a local run).
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")) or _URI.fullmatch(url) is None:
            raise MessageBuildError("the unsubscribe URL must be an https:// URL without spaces or '<>'")
        uris.append(url)
    if mailto is not None:
        if has_control_chars(mailto):
            raise HeaderInjection("unsubscribe mailto")
        if not mailto.lower().startswith("mailto:"):
            mailto = f"mailto:{normalize_address(mailto)}"
        if _URI.fullmatch(mailto) is None:
            raise MessageBuildError("the unsubscribe mailto must be a mailto: URI without spaces or '<>'")
        uris.append(mailto)
    return [f"<{uri}>" for uri in uris]


def _set_raw_folded(msg: EmailMessage, name: str, items: Sequence[str], *, separator: str) -> None:
    """Set a header to items joined by separator, one item a line when they don't fit on one."""
    value = separator.join(items)
    if len(name) + 2 + len(value) > _FOLD_AT:
        value = f"{separator.rstrip()}\n ".join(items)  # a line break in a raw value is a fold
    msg.set_raw(name, value)


def _ascii_domain(domain: str, address: str) -> str:
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidAddress(address, "the domain is not a valid host name") from exc
    labels = ascii_domain.split(".")
    if len(labels) < 2 or len(ascii_domain) > 253 or not all(map(_DOMAIN_LABEL.fullmatch, labels)):
        raise InvalidAddress(address, "the domain is not a valid host name such as example.com")
    return ascii_domain
