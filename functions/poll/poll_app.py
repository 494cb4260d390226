"""Poll function: every few minutes, poll the inboxes that are due, incrementally."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import INBOUND_METRICS, Metric
from sendwell.services.polling import poll_due_inboxes, poll_lag_seconds
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.poll(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A crash mid-poll then leaves an in-progress record that expires with this invocation.
    PARTS.once.register_lambda_context(context)
    now = utcnow()
    # Measured before polling: what this run found waiting, zero included (a missing report alarms).
    lag = poll_lag_seconds(PARTS.context.models, now=now)
    metrics.add_metric(name=Metric.POLL_LAG, unit=MetricUnit.Seconds, value=lag)
    results = poll_due_inboxes(PARTS.context, now=now)
    outcomes: Counter[str] = Counter()
    for result in results:
        outcomes.update(result.outcomes)
        if result.failure:
            logger.warning("poll failed", extra={"inbox_id": result.inbox_id, "code": result.failure})
        # Per inbox and per campaign: a log line each, which the dashboard's Logs Insights widgets
        # sum (a CloudWatch dimension per inbox would cost a custom metric per inbox and class).
        for (campaign_id, outcome), count in result.by_campaign.items():
            logger.info(
                "inbound",
                extra={"inbox_id": result.inbox_id, "campaign_id": campaign_id, "kind": outcome, "count": count},
            )
    failed = sum(1 for result in results if result.failure)
    metrics.add_metric(name=Metric.INBOXES_POLLED, unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name=Metric.POLL_FAILURES, unit=MetricUnit.Count, value=failed)
    for kind in INBOUND_METRICS:  # zero included: a rate alarm needs its numerator
        metrics.add_metric(name=INBOUND_METRICS[kind], unit=MetricUnit.Count, value=outcomes[kind.value])
    paused = sum(1 for result in results if result.paused_for_blocks)
    metrics.add_metric(name=Metric.INBOXES_PAUSED_FOR_BLOCKS, unit=MetricUnit.Count, value=paused)
    logger.info("polled", extra={"inboxes": len(results), "failed": failed, "outcomes": dict(outcomes)})
    return {"inboxes": len(results), "failed": failed, "outcomes": dict(outcomes)}
