"""Dispatch scheduler: every minute, fan the inboxes whose turn to send has come out to the workers."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services.dispatch import dispatch_lag_seconds, fan_out
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.dispatch(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = utcnow()
    # Measured before the fan-out, from the send index's head: what waited for this tick.
    lag = dispatch_lag_seconds(PARTS.models, now=now)
    inboxes = fan_out(PARTS.models, PARTS.work_queue, now=now)
    # Reported every minute, zero included: the lag alarm treats a missing minute as dispatch down.
    metrics.add_metric(name=Metric.DISPATCH_LAG, unit=MetricUnit.Seconds, value=lag)
    metrics.add_metric(name=Metric.INBOXES_READY, unit=MetricUnit.Count, value=inboxes)
    logger.info("inboxes fanned out", extra={"inboxes": inboxes, "lag_seconds": lag})
    return {"inboxes": inboxes, "lag_seconds": lag}
