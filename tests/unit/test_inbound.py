"""The classifier of incoming mail against a corpus of real-shaped messages (tests/corpus)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from sendwell.inbound import InboundKind, InboundVerdict, classify_inbound, parse_message_ids
from sendwell.ports.mailbox import InboundMessage

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXPECTED: dict[str, dict[str, Any]] = {
    name: row
    for name, row in json.loads((CORPUS / "expected.json").read_text()).items()
    if not name.startswith("_")
}
OUR_DOMAIN = "@send.sendwell.test"


def is_ours(message_id: str) -> bool:
    return message_id.endswith(OUR_DOMAIN)


def load(name: str) -> EmailMessage:
    return InboundMessage.parse("1", (CORPUS / name).read_bytes()).message


def classify(
    name: str, message: EmailMessage, *, is_ours_: Callable[[str], bool] = is_ours
) -> InboundVerdict:
    """Classify a corpus message as the poll would: with the thread id its provider reported."""
    our_threads = {row["thread_id"] for row in EXPECTED.values() if "thread_id" in row}
    return classify_inbound(
        message,
        is_ours=is_ours_,
        thread_is_ours=our_threads.__contains__,
        provider_thread_id=EXPECTED[name].get("thread_id"),
    )


def assert_matches_expected(name: str, verdict: InboundVerdict) -> None:
    expected = EXPECTED[name]
    assert verdict.kind == InboundKind(expected["kind"]), expected.get("why", name)
    assert verdict.message_id == expected["message_id"]
    if "recipients" in expected:
        assert list(verdict.recipients) == expected["recipients"]
    if "status" in expected:
        assert verdict.status == expected["status"]
    if "pause_seconds" in expected:
        pause = expected["pause_seconds"]
        assert verdict.pause == (None if pause is None else timedelta(seconds=pause))
    if verdict.kind in (InboundKind.BOUNCE, InboundKind.SOFT_BOUNCE):
        assert verdict.diagnostic, "a bounce keeps the remote server's words for the activity log"


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(path.name for path in CORPUS.glob("*.eml")) == sorted(EXPECTED)
    assert len(EXPECTED) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_is_classified_as_expected(name: str) -> None:
    assert_matches_expected(name, classify(name, load(name)))


def test_a_bounce_of_mail_we_did_not_send_names_no_message_of_ours() -> None:
    name = "bounce_postfix_user_unknown.eml"
    verdict = classify(name, load(name), is_ours_=lambda _mid: False)
    assert verdict.kind is InboundKind.BOUNCE
    assert verdict.message_id is None
    assert verdict.recipients == ("tom.becker@northwind-traders.example",)


def test_a_reply_in_our_thread_is_not_ours_without_the_thread_lookup() -> None:
    message = load("reply_via_thread_id_only.eml")
    assert classify_inbound(message, is_ours=is_ours).kind is InboundKind.OTHER
    unknown_thread = classify_inbound(
        message, is_ours=is_ours, thread_is_ours=lambda _tid: False, provider_thread_id="193b1f0c8e2d4a77"
    )
    assert unknown_thread.kind is InboundKind.OTHER


def test_headers_the_email_package_cannot_parse_do_not_stop_classification() -> None:
    # Text after a group's ';' makes the standard library's address parser raise AttributeError.
    raw = (
        b"From: undisclosed-recipients:; via webmail\r\n"
        b"To: dana.whitfield@brightpath.test\r\n"
        b"Subject: =?utf-8?q?Re:_Pr=C3=BCfung?= =?bogus-charset?q?x?=\r\n"
        b"In-Reply-To: <42ae6dd315e553ac54d1c1298a547421@send.sendwell.test>\r\n"
        b"Content-Type: text/plain; charset=\"no-such-charset\"\r\n"
        b"\r\n"
        b"Yes, send the deck.\r\n"
    )
    verdict = classify("reply_auto_submitted_no.eml", InboundMessage.parse("1", raw).message)
    assert verdict.kind is InboundKind.REPLY
    assert verdict.message_id == "42ae6dd315e553ac54d1c1298a547421@send.sendwell.test"


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("<a1@send.sendwell.test>", ["a1@send.sendwell.test"]),
        ("<a1@x.test>\r\n <b2@x.test>\t<c3@x.test>", ["a1@x.test", "b2@x.test", "c3@x.test"]),
        ("<a1@x.test>, <b2@x.test>", ["a1@x.test", "b2@x.test"]),
        ("<a1@x.test> (Jane Doe's message of Tue, 3 Dec 2024)", ["a1@x.test"]),
        ("<CAK=very-long-id\r\n @mail.gmail.com>", ["CAK=very-long-id@mail.gmail.com"]),
        ("a1@send.sendwell.test", ["a1@send.sendwell.test"]),
        ("<not-an-id> <also not>", []),
        ("", []),
        (None, []),
    ],
)
def test_message_ids_are_parsed_robustly(value: str | None, ids: list[str]) -> None:
    assert parse_message_ids(value) == ids
