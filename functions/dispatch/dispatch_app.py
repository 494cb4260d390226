"""Dispatch scheduler: every minute, fan the inboxes whose turn to send has come out to the workers."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services.dispatch import fan_out
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.dispatch(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    inboxes = fan_out(PARTS.models, PARTS.work_queue, now=utcnow())
    # Reported every minute, zero included: the DispatchSilent alarm treats a missing minute as
    # dispatch down. How late the inboxes are decided, the workers report (DispatchLagSeconds).
    metrics.add_metric(name=Metric.INBOXES_READY, unit=MetricUnit.Count, value=inboxes)
    logger.info("inboxes fanned out", extra={"inboxes": inboxes})
    return {"inboxes": inboxes}
