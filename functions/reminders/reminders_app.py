"""Reminders function: every 15 minutes, remind about inboxes still disconnected and report
inboxes that have failed with transient errors for a long time ("degraded").

Each inbox is handled on its own: a notice that can't be sent now (SES refusing, another run busy
with the same notice) is logged and counted, and the next run sends only what is still missing.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBConnectionError

from sendwell.adapters.aws import SesMailer, SnsPublisher
from sendwell.adapters.once import IdempotentRunner
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.models import bind_models
from sendwell.observability import CountingMailer, Metric, install_redaction
from sendwell.services.auth_failures import Attention, IncidentContext, attend, due_for_attention
from sendwell.services.reconnect import notify_expired_links

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
ONCE = IdempotentRunner(SETTINGS.idempotency_table)
CONTEXT = IncidentContext(
    models=MODELS,
    mailer=CountingMailer(
        SesMailer(
            boto3.client("ses", region_name=SETTINGS.region), SETTINGS.sender_address, copy_to=SETTINGS.outbox_dir
        )
    ),
    events=SnsPublisher(boto3.client("sns", region_name=SETTINGS.region), SETTINGS.inbox_events_topic_arn),
    once=ONCE,
    workspace_name=SETTINGS.workspace_name,
    admin_emails=SETTINGS.admin_emails,
    public_base_url=SETTINGS.public_base_url,
)
# Failures of the services a notice depends on; anything else is a bug and fails the invocation.
RETRY_NEXT_RUN = (
    BotoCoreError,
    ClientError,
    PynamoDBConnectionError,
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
)

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    ONCE.register_lambda_context(context)
    now = utcnow()
    outcomes: Counter[str] = Counter()
    for inbox_id in due_for_attention(MODELS, now=now):
        try:
            outcome = attend(CONTEXT, inbox_id, now=now)
        except RETRY_NEXT_RUN as error:
            # The error's type only: provider and AWS messages can quote addresses.
            logger.warning("notice not sent", extra={"inbox_id": inbox_id, "error": type(error).__name__})
            outcomes["failed"] += 1
            continue
        outcomes[outcome.value] += 1
    try:
        if expired := notify_expired_links(CONTEXT, now=now):
            outcomes["expired_links"] = expired
    except RETRY_NEXT_RUN as error:
        logger.warning("expired-link notices not sent", extra={"error": type(error).__name__})
        outcomes["failed"] += 1
    metrics.add_metric(name="RemindersSent", unit=MetricUnit.Count, value=outcomes[Attention.REMINDED.value])
    metrics.add_metric(name="DegradedNotices", unit=MetricUnit.Count, value=outcomes[Attention.DEGRADED.value])
    metrics.add_metric(name=Metric.LINKS_EXPIRED, unit=MetricUnit.Count, value=outcomes["expired_links"])
    logger.info("attention handled", extra={"outcomes": dict(outcomes)})
    return dict(outcomes)
