"""Dispatch function: every minute, enqueue the steps that are due and allowed to go now."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services.dispatch import dispatch_due_steps
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.dispatch(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = utcnow()
    report = dispatch_due_steps(PARTS.models, PARTS.send_queue, now=now)
    lag = report.lag_seconds(now)
    metrics.add_metric(name=Metric.STEPS_ENQUEUED, unit=MetricUnit.Count, value=report.enqueued)
    metrics.add_metric(name=Metric.STEPS_RETIMED, unit=MetricUnit.Count, value=report.retimed)
    # Reported every minute, zero included: the lag alarm treats a missing minute as dispatch down.
    metrics.add_metric(name=Metric.DISPATCH_LAG, unit=MetricUnit.Seconds, value=lag)
    metrics.add_metric(name=Metric.DISCONNECTED_BACKLOG, unit=MetricUnit.Count, value=report.disconnected_backlog)
    metrics.add_metric(name=Metric.FOLLOW_UPS_HELD, unit=MetricUnit.Count, value=report.held_for_replies)
    logger.info(
        "dispatched",
        extra={
            "due": report.due,
            "enqueued": report.enqueued,
            "retimed": report.retimed,
            "skipped_inboxes": len(report.skipped_inboxes),
            "lag_seconds": lag,
            "disconnected_backlog": report.disconnected_backlog,
            "held_for_replies": report.held_for_replies,
        },
    )
    return {"due": report.due, "enqueued": report.enqueued, "retimed": report.retimed, "waiting": report.waiting}
