"""Shared fixtures: AWS on moto, with every resource created from template.yaml itself."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.cfn import Stack, create_resources, function_environment, load_template, resources_of_type
from local.stack import Handler, LambdaContext, load_handler
from sendwell.config import Settings
from sendwell.models import Models, bind_models

pytest_plugins = ["tests.smtp_server", "tests.dovecot", "tests.provider_sandbox", "tests.browser"]

TEMPLATE = load_template()
REGION = "us-east-1"
PUBLIC_BASE_URL = "https://sendwell.example.test"
PARAMETERS = {
    "AdminEmails": "admin@agency.example",
    "SenderAddress": "notices@agency.example",
    "SesIdentity": "agency.example",
    "WorkspaceName": "Acme Outreach",
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
        """Drain a queue: every message on it now (received and deleted)."""
        sqs = self.client("sqs")
        url = self.stack.refs[logical_id]
        out: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
                "Messages", []
            )
            if not batch:
                return out
            for message in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            out.extend(batch)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        stack = create_resources(TEMPLATE, session, prefix="test", parameters=PARAMETERS)
        session.client("ses").verify_domain_identity(Domain=PARAMETERS["SesIdentity"])
        env: dict[str, str] = {}
        for logical_id in resources_of_type(TEMPLATE, "AWS::Serverless::Function"):
            env.update(function_environment(TEMPLATE, logical_id, stack))
        env["SENDWELL_PUBLIC_BASE_URL"] = PUBLIC_BASE_URL
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings.from_env(os.environ)
        yield Deployment(
            stack=stack,
            session=session,
            settings=settings,
            models=bind_models(settings.tables, region=REGION),
            env=env,
            _handlers={},
        )


@pytest.fixture
def sample_event() -> Callable[[str], dict[str, Any]]:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "events"

    def load(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((root / name).read_text())
        return loaded

    return load
