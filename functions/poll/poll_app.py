"""Poll function: every few minutes, poll the inboxes that are due, incrementally."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.adapters.aws import CachingCipher, KmsCipher, SnsPublisher, SqsAuthFailureReporter, SqsQueue
from sendwell.adapters.mailboxes import ParameterStoreSecrets, ProviderMailboxes
from sendwell.adapters.once import IdempotentRunner
from sendwell.clock import epoch, utcnow
from sendwell.config import Settings
from sendwell.models import POLL_SHARDS, bind_models
from sendwell.observability import Metric, install_redaction
from sendwell.services.polling import PollContext, poll_due_inboxes

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
CONTEXT = PollContext(
    models=MODELS,
    mailboxes=ProviderMailboxes.from_settings(
        SETTINGS,
        MODELS,
        CachingCipher(KmsCipher(boto3.client("kms", region_name=SETTINGS.region), SETTINGS.credentials_key_id)),
        ParameterStoreSecrets(),
    ),
    auth_failures=SqsAuthFailureReporter(
        SqsQueue(boto3.client("sqs", region_name=SETTINGS.region), SETTINGS.auth_failure_queue_url)
    ),
    events=SnsPublisher(boto3.client("sns", region_name=SETTINGS.region), SETTINGS.inbox_events_topic_arn),
    once=IdempotentRunner(SETTINGS.idempotency_table),
)

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()


def poll_lag_seconds(now: datetime) -> int:
    """How long the most overdue inbox has waited for its poll: the head of each poll-index shard."""
    table = MODELS.inbox
    overdue = [
        int(key.next_poll_at)
        for shard in range(POLL_SHARDS)
        for key in table.poll_index.query(str(shard), table.next_poll_at <= epoch(now), limit=1)
        if key.next_poll_at is not None
    ]
    return max(0, epoch(now) - min(overdue)) if overdue else 0


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = utcnow()
    # Measured before polling: what this run found waiting, zero included (a missing report alarms).
    metrics.add_metric(name=Metric.POLL_LAG, unit=MetricUnit.Seconds, value=poll_lag_seconds(now))
    results = poll_due_inboxes(CONTEXT, now=now)
    outcomes: Counter[str] = Counter()
    for result in results:
        outcomes.update(result.outcomes)
        if result.failure:
            logger.warning("poll failed", extra={"inbox_id": result.inbox_id, "code": result.failure})
    failed = sum(1 for result in results if result.failure)
    metrics.add_metric(name=Metric.INBOXES_POLLED, unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name=Metric.POLL_FAILURES, unit=MetricUnit.Count, value=failed)
    logger.info("polled", extra={"inboxes": len(results), "failed": failed, "outcomes": dict(outcomes)})
    return {"inboxes": len(results), "failed": failed, "outcomes": dict(outcomes)}
