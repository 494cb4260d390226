"""Poll function: every few minutes, poll the inboxes that are due, incrementally."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.adapters.aws import KmsCipher, SnsPublisher, SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.mailboxes import ParameterStoreSecrets, ProviderMailboxes
from sendwell.adapters.once import IdempotentRunner
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.models import bind_models
from sendwell.services.polling import PollContext, poll_due_inboxes

SETTINGS = Settings.from_env(os.environ)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
CONTEXT = PollContext(
    models=MODELS,
    mailboxes=ProviderMailboxes.from_settings(
        SETTINGS,
        MODELS,
        KmsCipher(boto3.client("kms", region_name=SETTINGS.region), SETTINGS.credentials_key_id),
        ParameterStoreSecrets(),
    ),
    auth_failures=SqsAuthFailureReporter(
        SqsQueue(boto3.client("sqs", region_name=SETTINGS.region), SETTINGS.auth_failure_queue_url)
    ),
    events=SnsPublisher(boto3.client("sns", region_name=SETTINGS.region), SETTINGS.inbox_events_topic_arn),
    once=IdempotentRunner(SETTINGS.idempotency_table),
)

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    results = poll_due_inboxes(CONTEXT, now=utcnow())
    outcomes: Counter[str] = Counter()
    for result in results:
        outcomes.update(result.outcomes)
    failed = sum(1 for result in results if result.failure)
    metrics.add_metric(name="InboxesPolled", unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name="PollFailures", unit=MetricUnit.Count, value=failed)
    logger.info("polled", extra={"inboxes": len(results), "failed": failed, "outcomes": dict(outcomes)})
    return {"inboxes": len(results), "failed": failed, "outcomes": dict(outcomes)}
