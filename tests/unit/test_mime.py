from __future__ import annotations

import base64
import email
import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from sendwell.mime import (
    HeaderInjection,
    InvalidAddress,
    MessageBuildError,
    build_message,
    new_message_id,
    normalize_address,
    to_bytes,
    to_gmail_raw,
)

SENT_AT = datetime(2025, 3, 4, 9, 30, tzinfo=timezone(timedelta(hours=1)))
FIRST_ID = "<4f1c2a9e0b7d4c55a1e3@mail.acme-outreach.com>"
# Outlook's ids are longer than a header line; they must not be re-encoded as RFC 2047 words.
OUTLOOK_ID = "<DB9PR10MB5426A1B2C3D4E5F60718293A4B5C6D7E8F9@DB9PR10MB5426.EURPRD10.PROD.OUTLOOK.COM>"
UNSUBSCRIBE_URL = "https://links.acme-outreach.com/u/01JNQ7Z4W8X2Y6V3T5R9P1M0KA?sig=7f3a9c2e41b8d6f0a5c3e9b1d7f2a4c6"


def step_message(**overrides: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "from_addr": "ana@acme-outreach.com",
        "from_name": "Ana Ruiz",
        "to_addr": "jorg.muller@Beispiel.DE",
        "to_name": "Jörg Müller",
        "subject": "Acme + Beispiel?",
        "text": "Hi Jörg,\n\nWorth a 15-minute call next week?\n\n-- Ana\n",
        "html": "<p>Hi Jörg,</p><p>Worth a 15-minute call next week?</p>",
        "message_id": FIRST_ID,
        "in_reply_to": None,
        "references": (),
        "unsubscribe_url": UNSUBSCRIBE_URL,
        "unsubscribe_mailto": "unsubscribe@acme-outreach.com",
        "date": SENT_AT,
    }
    return build_message(**(values | overrides))


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_first_step_has_our_headers_and_both_parts() -> None:
    parsed = parse(to_bytes(step_message()))

    assert parsed["Message-ID"] == FIRST_ID
    assert parsed["From"] == "Ana Ruiz <ana@acme-outreach.com>"
    assert parsed["To"].addresses[0].addr_spec == "jorg.muller@beispiel.de"
    assert parsed["Subject"] == "Acme + Beispiel?"
    assert parsed["Date"].datetime == SENT_AT
    assert parsed["In-Reply-To"] is None and parsed["References"] is None
    assert parsed.get_content_type() == "multipart/alternative"
    # Parsed wire text keeps its CRLF line endings, so compare lines.
    plain, html = (part.get_content().splitlines() for part in parsed.iter_parts())
    assert plain == ["Hi Jörg,", "", "Worth a 15-minute call next week?", "", "-- Ana"]
    assert html == ["<p>Hi Jörg,</p><p>Worth a 15-minute call next week?</p>"]


def test_text_only_message_is_not_multipart() -> None:
    parsed = parse(to_bytes(step_message(html=None)))

    assert parsed.get_content_type() == "text/plain"
    lines = parsed.get_content().splitlines()
    assert lines == ["Hi Jörg,", "", "Worth a 15-minute call next week?", "", "-- Ana"]


def test_follow_up_threads_under_the_previous_message() -> None:
    second_id = "<second@mail.acme-outreach.com>"
    msg = step_message(message_id=second_id, in_reply_to=OUTLOOK_ID, references=[FIRST_ID])

    raw = to_bytes(msg)
    parsed = parse(raw)

    assert parsed["Subject"] == "Re: Acme + Beispiel?"
    assert parsed["In-Reply-To"] == OUTLOOK_ID
    assert parsed["References"].split() == [FIRST_ID, OUTLOOK_ID]
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n", 1)[0].split(b"In-Reply-To")[1]


@pytest.mark.parametrize("subject", ["Re: Acme + Beispiel?", "RE: Acme + Beispiel?", "re:Acme + Beispiel?"])
def test_reply_prefix_is_added_once(subject: str) -> None:
    parsed = parse(to_bytes(step_message(subject=subject, in_reply_to=FIRST_ID)))

    assert parsed["Subject"] == subject
    assert not re.match(r"re:\s*re:", parsed["Subject"], re.IGNORECASE)


def test_references_end_with_the_message_replied_to() -> None:
    parsed = parse(to_bytes(step_message(in_reply_to=OUTLOOK_ID, references=[])))

    assert parsed["References"] == OUTLOOK_ID


def test_list_unsubscribe_headers_follow_rfc_8058() -> None:
    raw = to_bytes(step_message())
    parsed = parse(raw)

    assert parsed["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>, <mailto:unsubscribe@acme-outreach.com>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert UNSUBSCRIBE_URL.encode() in raw  # written as is, never as an encoded-word


def test_mailto_only_unsubscribe_has_no_one_click_header() -> None:
    msg = step_message(unsubscribe_url=None, unsubscribe_mailto="mailto:u@acme-outreach.com")

    parsed = parse(to_bytes(msg))

    assert parsed["List-Unsubscribe"] == "<mailto:u@acme-outreach.com>"
    assert parsed["List-Unsubscribe-Post"] is None


def test_unsubscribe_url_must_be_https() -> None:
    with pytest.raises(MessageBuildError, match="https"):
        step_message(unsubscribe_url="http://links.acme-outreach.com/u/1")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Quick question\r\nBcc: everyone@victim.example"),
        ("subject", "Quick question\nX-Injected: 1"),
        ("to_name", "Jörg\rBcc: x@victim.example"),
        ("from_name", "Ana\x00Ruiz"),
        ("to_addr", "jorg@beispiel.de\r\nBcc: x@victim.example"),
        ("from_addr", "ana@acme-outreach.com\n"),
        ("in_reply_to", FIRST_ID + "\r\nBcc: x@victim.example"),
        ("unsubscribe_url", UNSUBSCRIBE_URL + "\r\nBcc: x@victim.example"),
    ],
)
def test_control_characters_in_headers_are_rejected(field: str, value: str) -> None:
    with pytest.raises(HeaderInjection):
        step_message(**{field: value})


@pytest.mark.parametrize(
    "address",
    ["jorg", "jorg@", "@beispiel.de", "jorg@beispiel", "jorg müller@beispiel.de", "a@b.de, c@d.de",
     "(comment)jorg@beispiel.de", "jorg@beispiel..de", "jorg@-beispiel.de", "<jorg@beispiel.de>"],
)
def test_invalid_recipient_address_is_rejected(address: str) -> None:
    with pytest.raises(InvalidAddress):
        step_message(to_addr=address)


def test_normalize_address_lowercases_and_punycodes_the_domain_only() -> None:
    assert normalize_address("Jorg.Muller@Beispiel.DE") == "Jorg.Muller@beispiel.de"
    assert normalize_address("info@bücher.de") == "info@xn--bcher-kva.de"


def test_non_ascii_names_and_subject_round_trip_as_rfc_2047() -> None:
    subject = "Grüße aus München — kurze Frage"
    msg = step_message(subject=subject, from_name="Ana Núñez", to_name="Jörg Müller")

    raw = to_bytes(msg)
    parsed = parse(raw)

    assert raw.isascii()
    assert b"=?utf-8?" in raw
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "Ana Núñez"
    assert parsed["To"].addresses[0].display_name == "Jörg Müller"


def test_wire_bytes_use_crlf_only() -> None:
    raw = to_bytes(step_message(in_reply_to=OUTLOOK_ID, references=[FIRST_ID]))

    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


def test_serialising_twice_gives_the_same_bytes() -> None:
    msg = step_message()

    assert to_bytes(msg) == to_bytes(msg)  # the MIME boundary is fixed when the message is built


def test_gmail_raw_decodes_to_the_same_bytes() -> None:
    msg = step_message(in_reply_to=FIRST_ID)

    raw = to_gmail_raw(msg)

    assert re.fullmatch(r"[A-Za-z0-9_-]+=*", raw)
    assert base64.urlsafe_b64decode(raw) == to_bytes(msg)


def test_new_message_ids_are_unique_and_on_our_domain() -> None:
    ids = {new_message_id("Mail.Acme-Outreach.com") for _ in range(100)}

    assert len(ids) == 100
    assert all(re.fullmatch(r"<[0-9a-f]{32}@mail\.acme-outreach\.com>", message_id) for message_id in ids)
    parsed = parse(to_bytes(step_message(message_id=ids.pop())))
    assert parsed["Message-ID"].endswith("@mail.acme-outreach.com>")


def test_malformed_message_id_is_rejected() -> None:
    with pytest.raises(MessageBuildError, match="Message-ID"):
        step_message(message_id="not-a-message-id")


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        step_message(date=datetime(2025, 3, 4, 9, 30))


def test_date_header_keeps_the_instant() -> None:
    parsed = parse(to_bytes(step_message(date=datetime(2025, 3, 4, 8, 30, tzinfo=UTC))))

    assert parsed["Date"].datetime == SENT_AT
