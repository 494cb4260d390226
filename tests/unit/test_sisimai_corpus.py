"""The classifier on the public sisimai corpus (tests/corpus/sisimai): real machine-made mail.

Every message there is a bounce, a delivery report, a feedback report or an automatic reply, so
none may ever be read as a person's reply: not as the poll reads it from IMAP (no thread), and not
when it sits in one of our threads (Gmail and Graph give the thread; a reply there stops the
prospect's sequence). Feedback reports are complaints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sendwell.ids import parse_step_message_id
from sendwell.inbound import InboundKind, classify_inbound
from sendwell.ports.mailbox import InboundMessage

SISIMAI = Path(__file__).resolve().parents[1] / "corpus" / "sisimai" / "bsd"
SAMPLES = sorted(SISIMAI.glob("*.eml"))


def test_the_corpus_and_its_licence_are_there() -> None:
    assert len(SAMPLES) == 629
    assert "BSD 2-CLAUSE" in (SISIMAI.parent / "LICENSE").read_text()


@pytest.mark.parametrize("in_our_thread", [False, True], ids=["imap", "thread"])
def test_no_machine_made_message_is_read_as_a_reply(in_our_thread: bool) -> None:
    read_as_replies = []
    for path in SAMPLES:
        message = InboundMessage.parse("1", path.read_bytes()).message
        verdict = classify_inbound(
            message,
            is_ours=lambda message_id: parse_step_message_id(message_id) is not None,
            thread_is_ours=lambda _thread: in_our_thread,
            provider_thread_id="thread-1" if in_our_thread else None,
        )
        if verdict.kind is InboundKind.REPLY:
            read_as_replies.append(path.name)
    assert read_as_replies == []


def test_feedback_reports_are_complaints() -> None:
    """The RFC 5965 reports (multipart/report; report-type=feedback-report) and Outlook.com's JMRP
    copies (arf-22..24): each is a complaint, whatever else it looks like."""
    complaints = {}
    for path in SAMPLES:
        if not path.name.startswith("arf-"):
            continue
        raw = path.read_bytes()
        if b"feedback-report" not in raw.lower() and b"x-hmxmroriginalrecipient" not in raw.lower():
            continue
        message = InboundMessage.parse("1", raw).message
        complaints[path.name] = classify_inbound(message, is_ours=lambda _id: False).kind
    assert len(complaints) >= 15
    assert {name for name, kind in complaints.items() if kind is not InboundKind.COMPLAINT} == set()
