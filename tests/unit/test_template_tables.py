"""Every table in template.yaml is built the way the models (and ops) need it; guard the guard.
The models are checked against these tables in ``tests/service/test_foundation.py``."""

from __future__ import annotations

import json
from typing import Any

from local.cfn import resources_of_type, table_definition
from tests.template import TEMPLATE


def _template_tables() -> dict[str, dict[str, Any]]:
    return resources_of_type(TEMPLATE, "AWS::DynamoDB::Table")


def _normalise_schema(definition: dict[str, Any]) -> dict[str, Any]:
    """Keys, attribute types and indexes of a table, in a form both sides can be compared in."""

    def keys(schema: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k["AttributeName"], k["KeyType"]) for k in schema))

    indexes = {}
    for index in definition.get("GlobalSecondaryIndexes", []):
        projection = index["Projection"]
        indexes[index["IndexName"]] = (
            keys(index["KeySchema"]),
            projection["ProjectionType"],
            tuple(sorted(projection.get("NonKeyAttributes", []))),
        )
    return {
        "attributes": tuple(
            sorted((a["AttributeName"], a["AttributeType"]) for a in definition["AttributeDefinitions"])
        ),
        "keys": keys(definition["KeySchema"]),
        "indexes": indexes,
    }


def test_the_schema_comparison_notices_a_difference() -> None:
    """Guard the guard: a model whose index differs from the template must not compare equal."""
    tables = _template_tables()
    template_schema = _normalise_schema(table_definition(tables["EnrollmentsTable"]["Properties"], "x"))
    tampered = json.loads(json.dumps(template_schema))
    tampered["indexes"]["steps-due"] = [[["due_at", "HASH"]], "ALL", []]
    assert tampered != template_schema


def test_every_table_has_pitr_encryption_and_on_demand_billing() -> None:
    for logical_id, table in _template_tables().items():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical_id
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id
