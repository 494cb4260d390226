"""Where each bench leaves its figures: ``bench/results.json``, one JSON object keyed by bench name.

Each figure is ``{"value": ..., "unit": "..."}``; each bench's entry also carries the run's date
(UTC). A bench replaces its own entry and leaves the others', so ``make bench`` builds the file up
bench by bench, and ``bench/cost_model.py``, run last, reads what the same run measured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"

Figure = dict[str, Any]  # {"value": number | str, "unit": str}


def figure(value: float | int | str, unit: str) -> Figure:
    """One figure with its unit; floats are rounded to 6 significant digits to keep the file readable."""
    if isinstance(value, float):
        value = float(f"{value:.6g}")
    return {"value": value, "unit": unit}


def load(path: Path = RESULTS) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a run cut short mid-write: start again rather than fail every bench after it
    return loaded


def record(bench: str, figures: Mapping[str, Any], *, path: Path = RESULTS) -> None:
    """Merge ``figures`` (name -> figure, or nested mappings of them) into the file under ``bench``."""
    results = load(path)
    results[bench] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def value(results: Mapping[str, Any], bench: str, *names: str) -> Any:
    """The value of ``results[bench][names...]``, or None when a bench did not write it."""
    node: Any = results.get(bench)
    for name in names:
        if not isinstance(node, Mapping) or name not in node:
            return None
        node = node[name]
    if isinstance(node, Mapping) and "value" in node:
        return node["value"]
    return None
