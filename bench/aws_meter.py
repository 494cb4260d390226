"""Count AWS requests and DynamoDB capacity units of code running against in-process moto.

Every botocore call (boto3 clients and PynamoDB alike) goes through ``BaseClient._make_api_call``;
the meter wraps it. For DynamoDB writes it reads the item before and after the call from moto's
backend and applies DynamoDB's published sizing rules, so the units are what AWS would bill:

- a write costs ceil(max(old, new item size) / 1 KB) units, plus per global secondary index:
  2 when the item's index key changed (delete the old entry, put the new), 1 when it entered,
  left, or changed a projected attribute, 0 otherwise; in a transaction, each item costs twice that;
- a strongly consistent read costs ceil(size / 4 KB) units, an eventually consistent one half;
  a query sums the sizes of the items it read, then rounds up.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.client import BaseClient
from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
from moto.dynamodb.models import dynamodb_backends

REGION = "us-east-1"


def attribute_size(value: Mapping[str, Any]) -> int:
    """Size of one DynamoDB attribute value (wire format), per the DynamoDB developer guide."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        digits = str(inner).lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: item}) for item in inner)
    if kind == "L":
        return 3 + sum(attribute_size(item) + 1 for item in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


@dataclass
class Meter:
    requests: Counter[str] = field(default_factory=Counter)  # "service.Operation" -> count
    write_units: Decimal = Decimal(0)
    read_units: Decimal = Decimal(0)
    write_units_by_table: Counter[str] = field(default_factory=Counter)
    writes_by_table: Counter[str] = field(default_factory=Counter)  # write requests (items, in a transaction)
    index_units_by_table: Counter[str] = field(default_factory=Counter)  # the part of the units GSIs cost

    def count(self, prefix: str) -> int:
        return sum(n for name, n in self.requests.items() if name.startswith(prefix))


def _table(name: str) -> Any:
    return dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(name)


def _stored(table_name: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
    table = _table(table_name)
    hash_name = table.hash_key_attr
    range_name = table.range_key_attr
    hash_value = _dynamo_value(key[hash_name])
    range_value = _dynamo_value(key[range_name]) if range_name else None
    item = table.get_item(hash_value, range_value)
    return None if item is None else item.to_json()["Attributes"]


def _dynamo_value(value: Mapping[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType

    return DynamoType(dict(value))


def _index_writes(table_name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> int:
    writes = 0
    table = _table(table_name)
    for index in table.global_indexes:
        keys = [k["AttributeName"] for k in index.schema]
        was_in = bool(old) and all(k in old for k in keys)  # type: ignore[operator]
        is_in = bool(new) and all(k in new for k in keys)  # type: ignore[operator]
        if not was_in and not is_in:
            continue
        if was_in and is_in:
            if any(old[k] != new[k] for k in keys):  # type: ignore[index]
                writes += 2
            elif _projected_changed(index.projection, old, new):  # type: ignore[arg-type]
                writes += 1
        else:
            writes += 1
    return writes


def _projected_changed(projection: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    kind = projection.get("ProjectionType")
    if kind == "KEYS_ONLY":
        return False
    if kind == "INCLUDE":
        names = projection.get("NonKeyAttributes", [])
        return any(old.get(n) != new.get(n) for n in names)
    return dict(old) != dict(new)


_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}


@contextmanager
def metered() -> Iterator[Meter]:
    meter = Meter()
    original = BaseClient._make_api_call

    def call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        service = self.meta.service_model.service_name
        meter.requests[f"{service}.{operation}"] += 1
        if service != "dynamodb":
            return original(self, operation, params)
        table_name = params.get("TableName", "")
        if operation == "TransactWriteItems":
            return _transaction(original, self, params, meter)
        if operation in _WRITES:
            key = params.get("Key") or _key_of(table_name, params["Item"])
            old = _stored(table_name, key)
            try:
                return original(self, operation, params)
            finally:
                new = _stored(table_name, key)
                if old != new or operation == "PutItem":  # a failed condition still costs a write
                    indexes = _index_writes(table_name, old, new)
                    units = math.ceil(max(item_size(old), item_size(new), 1) / 1024) + indexes
                    meter.index_units_by_table[table_name] += indexes
                else:
                    units = math.ceil(max(item_size(old), 1) / 1024)
                meter.write_units += units
                meter.write_units_by_table[table_name] += units
                meter.writes_by_table[table_name] += 1
        response = original(self, operation, params)
        if operation == "GetItem":
            read = Decimal(math.ceil(max(item_size(response.get("Item")), 1) / 4096))
            meter.read_units += read if params.get("ConsistentRead") else read / 2
        elif operation in ("Query", "Scan"):
            size = sum(item_size(item) for item in response.get("Items", []))
            read = Decimal(math.ceil(max(size, 1) / 4096))
            meter.read_units += read if params.get("ConsistentRead") else read / 2
        elif operation == "BatchGetItem":
            for items in response.get("Responses", {}).values():
                meter.read_units += sum(Decimal(math.ceil(max(item_size(i), 1) / 4096)) / 2 for i in items)
        elif operation == "BatchWriteItem":
            for requests in params.get("RequestItems", {}).values():
                for request in requests:
                    item = request.get("PutRequest", {}).get("Item")
                    meter.write_units += math.ceil(max(item_size(item), 1) / 1024)
        return response

    BaseClient._make_api_call = call
    try:
        yield meter
    finally:
        BaseClient._make_api_call = original


def _transaction(original: Any, client: BaseClient, params: dict[str, Any], meter: Meter) -> Any:
    """TransactWriteItems: every item is written twice (prepare, commit), so costs double units."""
    parts = []
    for entry in params["TransactItems"]:
        ((kind, request),) = entry.items()
        table_name = request["TableName"]
        key = request.get("Key") or _key_of(table_name, request["Item"])
        parts.append((kind, table_name, key, _stored(table_name, key)))
    try:
        return original(client, "TransactWriteItems", params)
    finally:
        for kind, table_name, key, old in parts:
            new = _stored(table_name, key)
            indexes = 0 if kind == "ConditionCheck" else _index_writes(table_name, old, new)
            units = math.ceil(max(item_size(old), item_size(new), 1) / 1024) + indexes
            meter.index_units_by_table[table_name] += 2 * indexes
            meter.write_units += 2 * units
            meter.write_units_by_table[table_name] += 2 * units
            meter.writes_by_table[table_name] += 1


def _key_of(table_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    table = _table(table_name)
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {name: item[name] for name in names}
