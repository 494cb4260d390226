"""The classifier on the public sisimai corpus (tests/corpus/sisimai): real machine-made mail.

Every message there is a bounce, a delivery report, a feedback report or an automatic reply, so
none may ever be read as a person's reply: not as the poll reads it from IMAP (no thread), and not
when it sits in one of our threads (Gmail and Graph give the thread; a reply there stops the
prospect's sequence). Feedback reports are complaints.
"""

from __future__ import annotations

import json
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


# sisimai's reasons (expected.json, from sisimai's own test suites: see make_expected.py), by
# what they mean for the prospect. Hard is sisimai's own hard-bounce flag (a 4xx "notaccept" is
# not). "filtered" (a recipient-side filter, often "user unknown" after DATA) is soft, as sisimai
# has it. Rate limits count as sender-side: both are our inbox's problem.
EXPECTED = json.loads((SISIMAI.parent / "expected.json").read_text())
SOFT = frozenset(
    {"mailboxfull", "exceedlimit", "mesgtoobig", "expired", "suspend", "systemerror", "systemfull"}
    | {"networkerror", "mailererror", "onhold", "undefined", "filtered", "notaccept"}
)
SENDER_SIDE = frozenset(
    {"blocked", "spamdetected", "policyviolation", "authfailure", "badreputation", "requireptr", "norelaying"}
    | {"rejected", "securityerror", "virusdetected", "failedstarttls", "notcompliantrfc", "syntaxerror"}
    | {"contenterror", "toomanyconn", "speeding", "ratelimited"}
)
CLASS_OF_KIND = {
    InboundKind.BOUNCE: "hard",
    InboundKind.SOFT_BOUNCE: "soft",
    InboundKind.SENDER_BLOCKED: "sender-side",
    InboundKind.SENDER_LIMIT: "sender-side",
}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _expected_class(row: dict[str, object]) -> str | None:
    if row["hard"]:
        return "hard"
    for name, reasons in (("soft", SOFT), ("sender-side", SENDER_SIDE)):
        if row["reason"] in reasons:
            return name
    return None


def _figures(in_our_thread: bool) -> dict[str, object]:
    bounces = detected = right = vacations = vacations_seen = with_recipient = 0
    for name, rows in EXPECTED.items():
        message = InboundMessage.parse("1", (SISIMAI / name).read_bytes()).message
        verdict = classify_inbound(
            message,
            is_ours=lambda message_id: parse_step_message_id(message_id) is not None,
            thread_is_ours=lambda _thread: in_our_thread,
            provider_thread_id="thread-1" if in_our_thread else None,
        )
        reason = str(rows[0]["reason"])  # the first recipient's, as the poll acts on the first
        if reason == "vacation":
            vacations += 1
            vacations_seen += verdict.kind is InboundKind.AUTO_REPLY
        expected = _expected_class(rows[0])
        if expected is None:
            continue
        bounces += 1
        found = CLASS_OF_KIND.get(verdict.kind)
        detected += found is not None
        right += found == expected
        with_recipient += found is not None and bool(verdict.recipients)
    return {
        "samples_with_sisimai_expectation": len(EXPECTED),
        "bounces": bounces,
        "bounce_recall": round(detected / bounces, 4),
        "class_accuracy": round(right / bounces, 4),
        "class_accuracy_of_detected": round(right / detected, 4),
        # The failed recipient is the fallback link when a report quotes no Message-ID of ours.
        "failed_recipient_found": round(with_recipient / bounces, 4),
        "auto_replies": vacations,
        "auto_reply_recall": round(vacations_seen / vacations, 4),
    }


def test_every_sample_but_the_newest_has_sisimai_s_expectation() -> None:
    assert set(EXPECTED) <= {path.name for path in SAMPLES}
    assert len(EXPECTED) >= 600


@pytest.mark.parametrize("in_our_thread", [False, True], ids=["imap", "thread"])
def test_bounce_recall_and_class_against_sisimai_s_reasons(in_our_thread: bool) -> None:
    """The figures go to test-artifacts/sisimai-figures-<shape>.json. The floors are where the
    classifier stands today, so a change that loses ground fails here; the targets are above."""
    figures = _figures(in_our_thread)
    ARTIFACTS.mkdir(exist_ok=True)
    shape = "thread" if in_our_thread else "imap"
    (ARTIFACTS / f"sisimai-figures-{shape}.json").write_text(json.dumps(figures, indent=1) + "\n")
    assert figures["bounce_recall"] >= 0.99
    assert figures["class_accuracy_of_detected"] >= 0.90
    assert figures["class_accuracy"] >= 0.90
    assert figures["failed_recipient_found"] >= 0.85
    assert figures["auto_reply_recall"] == 1.0
