"""Dispatch function: every minute, enqueue the steps that are due and allowed to go now."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.adapters.aws import SqsQueue
from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.models import bind_models
from sendwell.observability import Metric, install_redaction
from sendwell.services.dispatch import dispatch_due_steps

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)
SEND_QUEUE = SqsQueue(boto3.client("sqs", region_name=SETTINGS.region), SETTINGS.send_queue_url)

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = utcnow()
    report = dispatch_due_steps(MODELS, SEND_QUEUE, now=now)
    metrics.add_metric(name=Metric.STEPS_ENQUEUED, unit=MetricUnit.Count, value=report.enqueued)
    metrics.add_metric(name=Metric.STEPS_RETIMED, unit=MetricUnit.Count, value=report.retimed)
    # Reported every minute, zero included: the lag alarm treats a missing minute as dispatch down.
    metrics.add_metric(name=Metric.DISPATCH_LAG, unit=MetricUnit.Seconds, value=report.lag_seconds(now))
    metrics.add_metric(name=Metric.DISCONNECTED_BACKLOG, unit=MetricUnit.Count, value=report.disconnected_backlog)
    logger.info(
        "dispatched",
        extra={
            "due": report.due,
            "enqueued": report.enqueued,
            "retimed": report.retimed,
            "skipped_inboxes": len(report.skipped_inboxes),
            "lag_seconds": report.lag_seconds(now),
            "disconnected_backlog": report.disconnected_backlog,
        },
    )
    return {"due": report.due, "enqueued": report.enqueued, "retimed": report.retimed, "waiting": report.waiting}
