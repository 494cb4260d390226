"""The skeleton holds together: models match the template and handlers run on their sample events,
on moto. (The tables' own settings: ``tests/unit/test_template_tables.py``; the local stack:
``tests/e2e/test_local_stack.py``.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.cfn import resources_of_type, table_definition
from local.stack import http_routes
from sendwell.models import ALL_MODELS, InboxStatus, StepAttribute, TableNames
from sendwell.services import schedule
from tests.deployment import Deployment
from tests.template import TEMPLATE
from tests.unit.test_template_tables import _normalise_schema, _template_tables


def _table_env_to_logical_id() -> dict[str, str]:
    env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    return {name: value["Ref"] for name, value in env.items() if name.endswith("_TABLE")}


def _model_schema(model: Any) -> dict[str, Any]:
    schema = model._get_schema()
    indexes = {}
    for index in schema.get("global_secondary_indexes", []):
        projection = index["projection"]
        indexes[index["index_name"]] = (
            tuple(sorted((k["AttributeName"], k["KeyType"]) for k in index["key_schema"])),
            projection["ProjectionType"],
            tuple(sorted(projection.get("NonKeyAttributes", []))),
        )
    return {
        "attributes": tuple(sorted((a["AttributeName"], a["AttributeType"]) for a in schema["attribute_definitions"])),
        "keys": tuple(sorted((k["AttributeName"], k["KeyType"]) for k in schema["key_schema"])),
        "indexes": indexes,
    }


def test_every_model_matches_its_table_in_the_template(aws: Deployment) -> None:
    tables = _template_tables()
    by_env = _table_env_to_logical_id()
    models = aws.models
    bound = {
        "SENDWELL_INBOXES_TABLE": models.inbox,
        "SENDWELL_CAMPAIGNS_TABLE": models.campaign,
        "SENDWELL_ENROLLMENTS_TABLE": models.enrollment,
        "SENDWELL_LINKS_TABLE": models.link,
        "SENDWELL_SESSIONS_TABLE": models.session,
        "SENDWELL_ACTIVITY_TABLE": models.activity,
        "SENDWELL_SUPPRESSIONS_TABLE": models.suppression,
        "SENDWELL_CREDENTIALS_TABLE": models.credentials,
    }
    assert len(bound) == len(ALL_MODELS) == len(TableNames.__dataclass_fields__)
    for env_name, model in bound.items():
        logical_id = by_env[env_name]
        template_schema = _normalise_schema(table_definition(tables[logical_id]["Properties"], "x"))
        assert _model_schema(model) == template_schema, f"{model.__name__} differs from {logical_id}"
    # Every table in the template is used by a model, or is Powertools' idempotency store.
    used = {by_env[name] for name in bound} | {by_env["SENDWELL_IDEMPOTENCY_TABLE"]}
    assert used == set(tables)


def test_every_function_has_a_sample_event_and_a_log_group() -> None:
    functions = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
    log_groups = [
        group["Properties"]["LogGroupName"]["Fn::Sub"]
        for group in resources_of_type(TEMPLATE, "AWS::Logs::LogGroup").values()
    ]
    for logical_id in functions:
        assert f"/aws/lambda/${{{logical_id}}}" in log_groups, f"{logical_id} has no log group"
    assert len(http_routes(TEMPLATE)) >= 10
    # No catch-all proxy routes: every route is named.
    assert not [r for r in http_routes(TEMPLATE) if "proxy+" in r.path]


# ----------------------------------------------------------------------------------- handlers


def _seed_connected_inbox(aws: Deployment, inbox_id: str, **extra: Any) -> None:
    now = datetime.now(UTC)
    inbox = aws.models.inbox(
        inbox_id=inbox_id,
        provider=extra.pop("provider", "gmail"),
        address=extra.pop("address", "sales@example.com"),
        owner_email=extra.pop("owner_email", "owner@example.com"),
        created_at=now,
        status=InboxStatus.CONNECTED.value,
        **extra,
    )
    inbox.window.tz = "UTC"
    inbox.save()


def _seed_campaign_with_due_step(aws: Deployment, inbox_id: str) -> str:
    now = datetime.now(UTC)
    campaign = aws.models.campaign(
        campaign_id="cmp_sample", name="Q4 outreach", created_at=now, inbox_ids=[inbox_id], steps=[]
    )
    campaign.steps = [
        StepAttribute(subject="Hello {{ first_name }}", text="Hi {{ first_name }}", delay_seconds=0),
        StepAttribute(subject="Following up", text="Any thoughts?", delay_seconds=3 * 86400),
    ]
    # Open every day, all day, so the test doesn't depend on when it runs.
    campaign.window.days, campaign.window.start, campaign.window.end = "0,1,2,3,4,5,6", "00:00", "23:59"
    campaign.save()
    enrollment = aws.models.enrollment(
        enrollment_id="enr_sample",
        campaign_id="cmp_sample",
        inbox_id=inbox_id,
        email="prospect@client.example",
        fields={"first_name": "Dana"},
        created_at=now,
        due_inbox=inbox_id,
        due_at=int((now - timedelta(minutes=1)).timestamp()),
    )
    enrollment.save()
    schedule.wake(aws.models, inbox_id, at=now)
    return enrollment.enrollment_id


def test_dispatch_handler_enqueues_a_due_step(aws: Deployment, sample_event: Callable[[str], dict[str, Any]]) -> None:
    _seed_connected_inbox(aws, "ibx_sample")
    _seed_campaign_with_due_step(aws, "ibx_sample")
    result = aws.invoke("DispatchFunction", sample_event("dispatch.json"))
    assert result["inboxes"] == 1  # its turn has come: fanned out to a worker
    assert aws.deliver("DispatchQueue", "DispatchWorkerFunction") == []
    messages = aws.queue_messages("SendQueue")
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert body["enrollment_id"] == "enr_sample" and body["step_index"] == 0
    assert messages[0]["Attributes"]["MessageGroupId"] == "ibx_sample"


def test_dispatch_skips_a_disconnected_inbox(aws: Deployment, sample_event: Callable[[str], dict[str, Any]]) -> None:
    _seed_connected_inbox(aws, "ibx_sample")
    _seed_campaign_with_due_step(aws, "ibx_sample")
    inbox = aws.models.inbox.get("ibx_sample")
    inbox.update(actions=[aws.models.inbox.status.set(InboxStatus.DISCONNECTED.value)])
    due_at = aws.models.enrollment.get("enr_sample").due_at
    assert aws.invoke("DispatchFunction", sample_event("dispatch.json"))["inboxes"] == 1
    assert aws.deliver("DispatchQueue", "DispatchWorkerFunction") == []
    assert aws.queue_messages("SendQueue") == []
    # The step is still due, untouched; the inbox left the send index, so later ticks skip it for free.
    assert aws.models.enrollment.get("enr_sample").due_at == due_at
    assert aws.models.inbox.get("ibx_sample").send_shard is None
    assert aws.invoke("DispatchFunction", sample_event("dispatch.json"))["inboxes"] == 0


def test_auth_failure_handler_disconnects_the_inbox_from_the_sample(
    aws: Deployment, sample_event: Callable[[str], dict[str, Any]]
) -> None:
    _seed_connected_inbox(aws, "ibx_sample")
    result = aws.invoke("AuthFailureFunction", sample_event("auth_failure.json"))
    assert result == {"batchItemFailures": []}
    inbox = aws.models.inbox.get("ibx_sample")
    assert inbox.status == InboxStatus.DISCONNECTED
    assert inbox.status_code == "google:invalid_grant"


def test_health_and_admin_handlers_answer_their_samples(
    aws: Deployment, sample_event: Callable[[str], dict[str, Any]]
) -> None:
    health = aws.invoke("ReconnectApiFunction", sample_event("reconnect_health.json"))
    assert health["statusCode"] == 200
    assert json.loads(health["body"])["status"] == "ok"
    created = aws.invoke("AdminApiFunction", sample_event("admin_create_inbox.json"))
    assert created["statusCode"] == 201, created["body"]
    inbox = json.loads(created["body"])
    assert inbox["status"] == "pending" and inbox["timezone"] == "Europe/Berlin"
    stored = aws.models.inbox.get(inbox["inbox_id"])
    assert stored.address == "sales@example.com"


def test_admin_api_rejects_bad_input_and_stores_nothing(
    aws: Deployment, sample_event: Callable[[str], dict[str, Any]]
) -> None:
    event = sample_event("admin_create_inbox.json")
    cases = {
        "{not json": 400,
        "[1, 2]": 400,
        json.dumps({"provider": "fax", "address": "a@b.example", "owner_email": "o@b.example"}): 400,
        json.dumps({"provider": "gmail", "address": "not-an-address", "owner_email": "o@b.example"}): 422,
        json.dumps(
            {
                "provider": "gmail",
                "address": "a@b.example",
                "owner_email": "o@b.example",
                "display_name": "Evil\r\nBcc: x@y.example",
            }
        ): 422,
        json.dumps(
            {"provider": "gmail", "address": "a@b.example", "owner_email": "o@b.example", "timezone": "Mars/Olympus"}
        ): 422,
        json.dumps({"provider": "custom", "address": "a@b.example", "owner_email": "o@b.example"}): 422,
        json.dumps({"provider": "gmail", "address": "a@b.example", "owner_email": "o@b.example", "admin": True}): 400,
    }
    for body, status in cases.items():
        response = aws.invoke("AdminApiFunction", {**event, "body": body})
        assert response["statusCode"] == status, (body, response["body"])
        assert "error" in json.loads(response["body"])
    assert list(aws.models.inbox.scan()) == []


def test_admin_api_unknown_inbox_is_404(aws: Deployment, sample_event: Callable[[str], dict[str, Any]]) -> None:
    event = sample_event("admin_create_inbox.json")
    event.update(routeKey="GET /admin/inboxes/{inbox_id}", rawPath="/admin/inboxes/ibx_missing", body=None)
    event["requestContext"]["http"].update(method="GET", path="/admin/inboxes/ibx_missing")
    event["pathParameters"] = {"inbox_id": "ibx_missing"}
    response = aws.invoke("AdminApiFunction", event)
    assert response["statusCode"] == 404


# ----------------------------------------------------------------------------------- configuration


def test_deployed_functions_read_the_api_url_from_the_ssm_parameter_the_template_writes(aws: Deployment) -> None:
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    from sendwell.config import ConfigError, Settings

    deployed = {k: v for k, v in aws.env.items() if k != "SENDWELL_PUBLIC_BASE_URL"}
    parameter = deployed["SENDWELL_PUBLIC_BASE_URL_PARAMETER"]
    assert parameter == "/test/public-base-url"  # /<stack name>/public-base-url
    aws.client("ssm").put_parameter(Name=parameter, Type="String", Value="https://abc123.execute-api.example/")
    # Powertools' SSM provider, as handlers use it (its own client: the default one is process-wide).
    read = SSMProvider(boto3_client=aws.client("ssm")).get
    settings = Settings.from_env({**deployed, "AWS_DEFAULT_REGION": "us-east-1"}, read_parameter=read)
    assert settings.public_base_url == "https://abc123.execute-api.example"
    with pytest.raises(ConfigError, match="SENDWELL_PUBLIC_BASE_URL"):
        Settings.from_env({**deployed, "AWS_DEFAULT_REGION": "us-east-1"})
