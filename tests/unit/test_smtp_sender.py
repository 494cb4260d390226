"""SmtpSender before it connects: what it refuses to send or to be built with, and what it shows.
Against a real SMTP server (aiosmtpd): ``tests/e2e/test_smtp.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from sendwell.adapters.smtp import SmtpSender
from sendwell.mime import build_message, new_message_id
from tests.smtp_server import TEST_PASSWORD, TEST_TOKEN, TEST_USER

PROSPECT = "jorg.muller@beispiel.de"


def step_message() -> EmailMessage:
    return build_message(
        from_addr=TEST_USER,
        from_name="Ana Ruiz",
        to_addr=PROSPECT,
        to_name="Jörg Müller",
        subject="Beispiel + Sendwell?",
        text="Hi Jörg,\n\nWorth a 15-minute call next week?\n.\n-- Ana\n",
        html="<p>Hi Jörg,</p><p>Worth a 15-minute call next week?</p>",
        message_id=new_message_id("sendwell-test.example.com"),
        in_reply_to=None,
        references=(),
        unsubscribe_url="https://links.sendwell-test.example.com/u/01JNQ7Z4W8X2Y6V3T5R9P1M0KA",
        unsubscribe_mailto=None,
        date=datetime(2025, 3, 4, 9, 30, tzinfo=UTC),
    )


def test_message_without_message_id_is_refused_before_connecting() -> None:
    msg = step_message()
    del msg["Message-ID"]
    sender = SmtpSender("127.0.0.1", 9, security="none", username=TEST_USER, password=TEST_PASSWORD)

    with pytest.raises(ValueError, match="Message-ID"):
        sender.send(msg)


def test_credentials_are_exactly_one_of_password_or_token() -> None:
    with pytest.raises(ValueError):
        SmtpSender("smtp.example.com", 587, security="starttls", username=TEST_USER)
    with pytest.raises(ValueError):
        SmtpSender(
            "smtp.example.com", 587, security="starttls", username=TEST_USER,
            password=TEST_PASSWORD, oauth_token=TEST_TOKEN,
        )


def test_repr_hides_secrets() -> None:
    sender = SmtpSender("smtp.example.com", 465, security="tls", username=TEST_USER, oauth_token=TEST_TOKEN)

    assert TEST_TOKEN not in repr(sender)
    assert TEST_USER in repr(sender)
