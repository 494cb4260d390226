"""Who made each AWS call, and what it cost: ``bench.aws_meter`` figures split by phase and by caller.

``bench.aws_meter.metered`` prices every call; the ``Ledger`` sits on top of it (installed after
it, so it sees each call once, meter included) and books the units each call added to the phase
the bench says is running (a function's invocation, an import, the event source mapping's own
receives and deletes) and to the sendwell function that made it (the innermost frame under
``layers/sendwell/sendwell``), with the time the call took.

One gap of the meter is closed here: for ``BatchWriteItem`` it counts the items' own units but
not their global secondary index entries. Each item put by a batch write is new here (imports,
activity entries, and setup), so each index whose keys the item carries costs one more unit.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from botocore.client import BaseClient
from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
from moto.dynamodb.models import dynamodb_backends

from bench.aws_meter import REGION, Meter, item_size

_SENDWELL = str(Path(__file__).resolve().parent.parent / "layers" / "sendwell" / "sendwell") + "/"
_FUNCTIONS = str(Path(__file__).resolve().parent.parent / "functions") + "/"
# Frames that only pass a call on: the caller worth naming is the one above them.
_PASS_THROUGH = ("writes.py", "batches.py")


@dataclass
class Ledger:
    meter: Meter
    table_prefix: str = ""
    phase: str = "setup"
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, "service.Operation")
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # inside AWS calls
    # (phase, table, "service.Operation", caller) -> units
    write_units: defaultdict[tuple[str, str, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    read_units: defaultdict[tuple[str, str, str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    write_requests: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    sqs_by_queue_type: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, "fifo" | "standard")

    def rebook(self, phase: str, to: str, name: str, queue_url: str) -> None:
        """Move one call already booked to ``phase`` over to phase ``to``."""
        kind = _queue_type(queue_url)
        self.calls[(phase, name)] -= 1
        self.calls[(to, name)] += 1
        self.sqs_by_queue_type[(phase, kind)] -= 1
        self.sqs_by_queue_type[(to, kind)] += 1

    def sqs(self, kind: str, phases: set[str] | None = None) -> int:
        return sum(n for (phase, k), n in self.sqs_by_queue_type.items() if k == kind and _in(phase, phases))

    def count(self, prefix: str, phases: set[str] | None = None) -> int:
        return sum(n for (phase, name), n in self.calls.items() if name.startswith(prefix) and _in(phase, phases))

    def writes(self, phases: set[str] | None = None) -> Decimal:
        return Decimal(sum(u for (phase, *_), u in self.write_units.items() if _in(phase, phases)))

    def reads(self, phases: set[str] | None = None) -> Decimal:
        return Decimal(sum(u for (phase, *_), u in self.read_units.items() if _in(phase, phases)))

    def by(
        self, units: Mapping[tuple[str, str, str, str], Decimal], part: int, phases: set[str] | None = None
    ) -> list[tuple[str, float]]:
        """Units summed by one part of the key (0 phase, 1 table, 2 operation, 3 caller), largest first."""
        out: defaultdict[str, Decimal] = defaultdict(Decimal)
        for key, n in units.items():
            if _in(key[0], phases):
                out[key[part]] += n
        return sorted(((name, float(n)) for name, n in out.items()), key=lambda pair: -pair[1])

    def table(self, name: str) -> str:
        return name.removeprefix(self.table_prefix)


def _in(phase: str, phases: set[str] | None) -> bool:
    """Setup is never counted; a phase "(empty)" (an event source mapping's empty receives, which
    the cost model prices as fixed polling) only when asked for by name."""
    if phases is not None:
        return phase in phases
    return phase != "setup" and not phase.endswith("(empty)")


def caller() -> str:
    """The innermost sendwell (or handler) frame on the stack, as ``path:function``."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        for root in (_SENDWELL, _FUNCTIONS):
            if name.startswith(root) and not name.endswith(_PASS_THROUGH):
                return f"{name.removeprefix(root).removesuffix('.py')}:{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "bench"


def _queue_type(url: str) -> str:
    return "fifo" if url.endswith(".fifo") else "standard"


def _batch_index_units(params: Mapping[str, Any]) -> Counter[str]:
    """GSI entries of the items a BatchWriteItem puts (aws_meter counts only the items)."""
    units: Counter[str] = Counter()
    for table_name, requests in params.get("RequestItems", {}).items():
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(table_name)
        for request in requests:
            item = request.get("PutRequest", {}).get("Item")
            if not item:
                continue
            for index in table.global_indexes:
                if all(key["AttributeName"] in item for key in index.schema):
                    units[table_name] += 1
    return units


def _tables_of(operation: str, params: Mapping[str, Any]) -> list[str]:
    if "TableName" in params:
        return [str(params["TableName"])]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return list(params.get("RequestItems", {}))
    if operation == "TransactWriteItems":
        return sorted({next(iter(entry.values()))["TableName"] for entry in params.get("TransactItems", [])})
    return []


@contextmanager
def ledger(meter: Meter, *, table_prefix: str = "") -> Iterator[Ledger]:
    """Book every call made inside ``bench.aws_meter.metered()`` (enter that first)."""
    book = Ledger(meter=meter, table_prefix=table_prefix)
    metered_call = BaseClient._make_api_call

    def call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        name = f"{service}.{operation}"
        phase = book.phase
        book.calls[(phase, name)] += 1
        if service == "sqs":
            book.sqs_by_queue_type[(phase, _queue_type(str(params.get("QueueUrl", ""))))] += 1
        writes_before, reads_before = meter.write_units, meter.read_units
        started = time.perf_counter()
        try:
            return metered_call(self, operation, params)
        finally:
            book.seconds[phase] += time.perf_counter() - started
            if service == "dynamodb":
                tables = _tables_of(operation, params) or ["?"]
                who = caller()
                # A call on several tables (rare: a transaction) is booked on the first one.
                key = (phase, book.table(tables[0]), name, who)
                written = meter.write_units - writes_before
                if operation == "BatchWriteItem":
                    for table_name, extra in _batch_index_units(params).items():
                        book.write_units[(phase, book.table(table_name), name, who)] += extra
                if written:
                    book.write_units[key] += written
                if operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"):
                    book.write_requests[key] += 1
                read = meter.read_units - reads_before
                if read:
                    book.read_units[key] += read

    BaseClient._make_api_call = call
    try:
        yield book
    finally:
        BaseClient._make_api_call = metered_call


def stored_sizes(table_name: str) -> list[int]:
    """The DynamoDB item size (bytes, DynamoDB's sizing rules) of every item of a moto table."""
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(table_name)
    return [item_size(item.to_json()["Attributes"]) for item in table.all_items()]


def write_units_of(size: int) -> int:
    return math.ceil(max(size, 1) / 1024)


def largest_attributes(table_name: str, top: int = 6) -> list[tuple[str, int]]:
    """The attributes of the table's largest item, by their size (name + value), largest first."""
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(table_name)
    items = [item.to_json()["Attributes"] for item in table.all_items()]
    if not items:
        return []
    largest = max(items, key=item_size)
    sizes = [(name, item_size({name: value})) for name, value in largest.items()]
    return sorted(sizes, key=lambda pair: -pair[1])[:top]
