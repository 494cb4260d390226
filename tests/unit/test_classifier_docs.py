"""docs/classifier.md is what the classifier's tables say, row for row."""

from __future__ import annotations

from pathlib import Path

from tests.classifier_docs import render, rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "classifier.md"


def test_the_classifier_document_matches_the_tables() -> None:
    assert DOC.read_text(encoding="utf-8") == render(rows()), (
        "regenerate: PYTHONPATH=layers/sendwell:. python -m tests.classifier_docs > docs/classifier.md"
    )


def test_every_row_says_its_class_and_every_disconnect_says_its_fix() -> None:
    for section in rows().values():
        for row in section:
            assert row.rule.reason
            if row.rule.kind.disconnects or row.rule.kind.value == "app_config":
                assert row.rule.fix, row.code
