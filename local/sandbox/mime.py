"""Reading and stamping raw MIME the way both mail services do: parse, find what a message replies
to, stamp a Message-ID and Date on mail that lacks them, and pick out the body a reader would see."""

import datetime as dt
import email.policy
import re
import secrets
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses
from typing import cast


def parse_mime(raw: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def _message_ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def thread_ids(raw: bytes) -> tuple[str, set[str]]:
    """A message's own Message-ID and those it answers (In-Reply-To, References): how both services
    thread a message with the one it replies to."""
    message = parse_mime(raw)
    referenced = set(_message_ids(str(message["In-Reply-To"] or "")))
    referenced |= set(_message_ids(str(message["References"] or "")))
    return str(message["Message-ID"] or "").strip(), referenced


def has_recipients(message: EmailMessage) -> bool:
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    return any("@" in address for _, address in getaddresses(values))


def _with_header(raw: bytes, name: str, value: str) -> bytes:
    newline = b"\r\n" if b"\r\n" in raw else b"\n"
    return f"{name}: {value}".encode() + newline + raw


def ensure_message_id(raw: bytes, domain: str) -> tuple[bytes, str]:
    """Providers stamp a Message-ID (and Date) on mail that has none; they keep the sender's own."""
    message = parse_mime(raw)
    if message["Date"] is None:
        raw = _with_header(raw, "Date", format_datetime(dt.datetime.now(dt.UTC)))
    message_id = str(message["Message-ID"] or "").strip()
    if not message_id:
        message_id = f"<{secrets.token_hex(12)}@{domain}>"
        raw = _with_header(raw, "Message-ID", message_id)
    return raw, message_id


def text_body(message: EmailMessage) -> tuple[str, str]:
    """(Graph contentType, content) of the body a reader would see."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "text", ""
    try:
        content = cast(str, part.get_content())
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return ("html" if part.get_content_subtype() == "html" else "text"), content


def preview(message: EmailMessage, length: int) -> str:
    return " ".join(text_body(message)[1].split())[:length]


def part_bytes(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822 and message/delivery-status hold header blocks
        return b"\n".join(cast(Message, sub).as_bytes() for sub in payload)
    return str(payload).encode()
