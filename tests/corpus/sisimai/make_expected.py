"""Write expected.json: sisimai's own verdict on the samples in bsd/, from sisimai's test suites.

The sisimai repositories (github.com/sisimai/go-sisimai and rb-sisimai, BSD 2-Clause, by the
corpus's authors) state in their tests what sisimai decodes from each public sample: per
recipient, the delivery status, the SMTP reply code, the reason (userunknown, mailboxfull,
blocked, vacation, feedback, ...) and whether it is a hard bounce. This script reads those tables,
so the regression suite checks each sample against the corpus authors' expectation, not ours.
go-sisimai (fact/*_test.go) is the newer; rb-sisimai (test/public/*.rb) fills in the samples
whose engine go-sisimai tests under another name. Samples newer than both suites have no entry.

    python tests/corpus/sisimai/make_expected.py GO_SISIMAI_DIR RB_SISIMAI_DIR > expected.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

Expected = dict[str, list[dict[str, object]]]

# {"01",   1, "5.1.1",   "550", "userunknown",      true, ""}
_GO_ROW = re.compile(
    r'\{"(\w+)"\s*,\s*(\d+)\s*,\s*"([^"]*)"\s*,\s*"([^"]*)"\s*,\s*"(\w+)"\s*,\s*(true|false)\s*,\s*"([^"]*)"\s*\}'
)
_GO_ENGINE = re.compile(r'\}\s*;?\s*EngineTest\(t, "([^"]+)", publiclist, true\)')
_GO_TEST = re.compile(r"func Test(Lhost|Rhost|RFC3464|RFC3834|ARF)\w*\(")
# '01' => [['5.1.1',   '550', 'userunknown',     true], [...]],
_RB_ENTRY = re.compile(r"^\s*'(\w+)'\s*=>\s*\[(.*)\],?\s*$", re.MULTILINE)
_RB_ROW = re.compile(r"\['([^']*)',\s*'([^']*)',\s*'(\w+)',\s*(true|false)(?:,\s*'([^']*)'\s*)?\]")
# Engines the corpus has renamed since the suites were written: the samples are the same.
_RENAMED = {"interscanmss": "trendmicro", "mailmarshalsmtp": "mailmarshal"}


def _entry(status: str, reply_code: str, reason: str, hard: str, another: str) -> dict[str, object]:
    entry: dict[str, object] = {"status": status, "reply_code": reply_code, "reason": reason, "hard": hard == "true"}
    if another.strip():
        entry["feedback_type"] = another.strip()
    return entry


def _sample(prefix: str, engine: str, label: str) -> str:
    engine = engine.lower()
    return f"{prefix}{_RENAMED.get(engine, engine)}-{label}.eml"


def from_go(go_sisimai: Path) -> Expected:
    found: Expected = {}
    for test in sorted((go_sisimai / "fact").glob("*_test.go")):
        source = test.read_text()
        kind, engine = _GO_TEST.search(source), _GO_ENGINE.search(source)
        if not kind or not engine:
            continue
        prefix = {"Lhost": "lhost-", "Rhost": "rhost-"}.get(kind.group(1), "")
        public = source[: engine.start()].rpartition("publiclist := ")[2]
        for label, _index, status, reply_code, reason, hard, another in _GO_ROW.findall(public):
            found.setdefault(_sample(prefix, engine.group(1), label), []).append(
                _entry(status, reply_code, reason, hard, another)
            )
    return found


def from_rb(rb_sisimai: Path) -> Expected:
    found: Expected = {}
    for test in sorted((rb_sisimai / "test" / "public").glob("*.rb")):
        if test.stem.endswith("-test"):
            continue
        head, _, engine = test.stem.rpartition("-")
        for label, rows in _RB_ENTRY.findall(test.read_text()):
            entries = [_entry(*row) for row in _RB_ROW.findall(rows)]
            if entries:
                found[_sample(f"{head}-" if head else "", engine, label)] = entries
    return found


def expectations(go_sisimai: Path, rb_sisimai: Path, samples: Path) -> Expected:
    present = {path.name for path in samples.glob("*.eml")}
    merged = {name: rows for name, rows in from_rb(rb_sisimai).items() if name in present}
    merged.update({name: rows for name, rows in from_go(go_sisimai).items() if name in present})
    return dict(sorted(merged.items()))


if __name__ == "__main__":
    here = Path(__file__).resolve().parent / "bsd"
    json.dump(expectations(Path(sys.argv[1]), Path(sys.argv[2]), here), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
