"""template.yaml deployed on moto, with every resource created from the template itself.

``deployed`` creates the stack on moto and points the environment at it, as each function sees it
once deployed; the ``aws`` fixture is one such deployment per test. A module that wants one
deployment for all its tests (pointed at the provider sandbox, say) enters ``deployed`` in a
module-scoped fixture of its own. The service and e2e tiers get ``aws`` and ``sample_event`` from
their conftest; the unit tier never imports this module (it imports moto).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend
from moto.ses.models import Message, ses_backends

from local.cfn import Stack, create_resources, function_environment, resources_of_type
from local.stack import Handler, LambdaContext, load_handler
from sendwell.config import Settings
from sendwell.models import Inbox, InboxStatus, Models, bind_models, new_step
from tests.template import PARAMETERS, PUBLIC_BASE_URL, REGION, TEMPLATE

EVENTS = Path(__file__).resolve().parent.parent / "events"

# What boto3 and Powertools read in a test: fake credentials, one region, no tracing.
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
}


@dataclass
class Deployment:
    """One deployment of template.yaml on moto, as the handlers see it."""

    stack: Stack
    session: boto3.Session
    settings: Settings
    models: Models
    env: dict[str, str]
    _handlers: dict[str, Handler]

    def handler(self, function_logical_id: str) -> Handler:
        """The function's real handler module, imported fresh against this deployment."""
        if function_logical_id not in self._handlers:
            self._handlers[function_logical_id] = load_handler(function_logical_id, TEMPLATE)
        return self._handlers[function_logical_id]

    def invoke(self, function_logical_id: str, event: dict[str, Any]) -> Any:
        return self.handler(function_logical_id)(event, LambdaContext(function_name=function_logical_id))

    def client(self, service: str) -> Any:
        return self.session.client(service)

    def queue_messages(self, logical_id: str) -> list[dict[str, Any]]:
        """Drain one of the template's queues: every message on it now (received and deleted)."""
        return self.drain(self.stack.refs[logical_id])

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message on the queue now (received and deleted)."""
        sqs = self.client("sqs")
        out: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
                "Messages", []
            )
            if not batch:
                return out
            for message in batch:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            out.extend(batch)

    def deliver(self, queue: str, function: str) -> list[str]:
        """Hand what the template's ``queue`` holds to ``function`` as one SQS batch, as the event
        source mapping would; delete what it handled, and return the ids of the failed records
        (they stay on the queue, visible again at once)."""
        sqs = self.client("sqs")
        url = self.stack.refs[queue]
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not received:
            return []
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.stack.attributes[(queue, "Arn")],
                "awsRegion": REGION,
            }
            for m in received
        ]
        try:
            result = self.invoke(function, {"Records": records})
            failed = [item["itemIdentifier"] for item in result["batchItemFailures"]]
        except BatchProcessingError:  # every record failed: Powertools fails the invocation
            failed = [m["MessageId"] for m in received]
        for message in received:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return failed

    def subscribe_queue(self, topic_arn: str, queue_name: str, *, raw: bool = False) -> str:
        """A new queue subscribed to the topic, as an integration would subscribe; its URL."""
        sqs = self.client("sqs")
        url: str = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true"} if raw else {}
        self.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        return url


# Waits that production makes in real time: a refused call's second look, and a permission loss's
# settling before the breaker weighs it. Tests about those waits set them back (tests/service/
# test_breaker.py, tests/e2e/test_confirming.py); every other test would only sleep through them.
NO_WAITING = {"SENDWELL_CONFIRM_WAIT_SECONDS": "0", "SENDWELL_BREAKER_SETTLE_SECONDS": "0"}


@contextmanager
def deployed(
    env: pytest.MonkeyPatch,
    *,
    prefix: str = "test",
    functions: Iterable[str] = (),
    variables: Mapping[str, str] | None = None,
    metrics: bool = False,
) -> Iterator[Deployment]:
    """template.yaml on moto, and the environment (set through ``env``) its functions would see.

    The environment is that of ``functions`` (all the template's functions when none are named),
    the public URL, then ``variables``. Powertools' metrics stay off unless ``metrics``.
    """
    for name, value in AWS_ENVIRONMENT.items():
        env.setenv(name, value)
    env.setenv("POWERTOOLS_METRICS_DISABLED", "false" if metrics else "true")
    env.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        stack = create_resources(TEMPLATE, session, prefix=prefix, parameters=PARAMETERS)
        session.client("ses").verify_domain_identity(Domain=PARAMETERS["SesIdentity"])
        environment: dict[str, str] = {}
        for logical_id in functions or resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
            environment.update(function_environment(TEMPLATE, logical_id, stack))
        environment["SENDWELL_PUBLIC_BASE_URL"] = PUBLIC_BASE_URL
        environment.update(NO_WAITING)
        environment.update(variables or {})
        for name, value in environment.items():
            env.setenv(name, value)
        settings = Settings.from_env(os.environ)
        yield Deployment(
            stack=stack,
            session=session,
            settings=settings,
            models=bind_models(settings.tables, region=REGION),
            env=environment,
            _handlers={},
        )


def add_disconnected_inbox(
    models: Models,
    inbox_id: str,
    provider: str,
    address: str,
    *,
    owner: str,
    attention_shard: str,
    follow_ups: Sequence[str],
    **extra: Any,
) -> Inbox:
    """An inbox connected for weeks that lost its grant two days ago, with its campaign held for it:
    a first step, then ``follow_ups`` from the third day on, a day apart."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "inbox_id": inbox_id,
        "provider": provider,
        "address": address,
        "display_name": "Sales desk",
        "owner_email": owner,
        "created_at": now - timedelta(days=40),
        "status": InboxStatus.DISCONNECTED.value,
        "status_code": "invalid_grant",
        "status_reason": "the password was changed or access was revoked",
        "status_fix": "Sign in again to give sendwell access.",
        "failed_at": now - timedelta(days=2),
        "incident_id": "inc_" + inbox_id,
        "attention_shard": attention_shard,
        "attention_at": int(now.timestamp()) + 3600,
    }
    inbox = models.inbox(**(values | extra))
    inbox.save()
    first = new_step(subject="Quick question", text="Hi {{ first_name }}", html=None, delay_seconds=0, new_thread=False)
    later = [
        new_step(subject="re", text=text, html=None, delay_seconds=(3 + n) * 86400, new_thread=False)
        for n, text in enumerate(follow_ups)
    ]
    models.campaign(
        campaign_id=f"cmp_{inbox_id}",
        name="Q4 outreach",
        created_at=now - timedelta(days=30),
        inbox_ids=[inbox_id],
        steps=[first, *later],
        disconnected_inbox_ids={inbox_id},
    ).save()
    return inbox


def sent_emails() -> list[Message]:
    """Every email SES (moto, in this process) has accepted."""
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def emails_to(address: str) -> list[Message]:
    return [m for m in sent_emails() if address in m.destinations["ToAddresses"]]


def forget_sent_emails() -> None:
    """SES's record of sent emails outlives a deployment: a test that counts them starts from none."""
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages.clear()


def emitted(documents: list[dict[str, Any]]) -> dict[str, float]:
    """Each metric's total over CloudWatch EMF documents."""
    totals: dict[str, float] = {}
    for document in documents:
        for definition in document["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                values = document[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                    values if isinstance(values, list) else [values]
                )
    return totals


@pytest.fixture
def atomic_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each conditional write atomically; moto, called from several threads, may
    interleave a condition check with another thread's write. One lock restores that guarantee."""
    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        def locked(self: DynamoDBBackend, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    with deployed(monkeypatch) as deployment:
        yield deployment


@pytest.fixture
def sample_event() -> Callable[[str], dict[str, Any]]:
    def load(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
        return loaded

    return load
