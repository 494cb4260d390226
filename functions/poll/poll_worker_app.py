"""Poll worker: poll each inbox of a batch incrementally, and act on replies, bounces and
auto-replies (``sendwell.services.polling``)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import INBOUND_METRICS, Metric
from sendwell.ports.messages import MalformedMessage, QueuedMessage
from sendwell.services.polling import PollBatch, PollRun, poll_batch
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.poll(os.environ)
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def handle_record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    try:
        batch = PollBatch.from_body(record.body)
    except MalformedMessage as error:
        # Not ours to retry: the inboxes it might have named are polled at their next slot anyway.
        logger.error("malformed poll batch dropped", extra={"error": str(error)})
        return
    run = poll_batch(
        PARTS.context,
        batch,
        now=utcnow(),
        time_left=lambda: lambda_context.get_remaining_time_in_millis() / 1000,
    )
    if run.leftover is not None:
        # Short of time: another worker takes the rest now (if this fails, the whole batch comes back).
        PARTS.work_queue.send_batch([QueuedMessage(body=run.leftover.to_body())])
    _count(run)


def _count(run: PollRun) -> None:
    results = run.results
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
    metrics.add_metric(name=Metric.POLL_LAG, unit=MetricUnit.Seconds, value=run.lag_seconds)
    metrics.add_metric(name=Metric.INBOXES_POLLED, unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name=Metric.POLL_FAILURES, unit=MetricUnit.Count, value=failed)
    for kind in INBOUND_METRICS:  # zero included: a rate alarm needs its numerator
        metrics.add_metric(name=INBOUND_METRICS[kind], unit=MetricUnit.Count, value=outcomes[kind.value])
    paused = sum(1 for result in results if result.paused_for_blocks)
    metrics.add_metric(name=Metric.INBOXES_PAUSED_FOR_BLOCKS, unit=MetricUnit.Count, value=paused)
    logger.info(
        "polled",
        extra={
            "inboxes": len(results),
            "failed": failed,
            "lag_seconds": run.lag_seconds,
            "handed_on": len(run.leftover.inbox_ids) if run.leftover else 0,
            "outcomes": dict(outcomes),
        },
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # A crash mid-poll then leaves an in-progress record that expires with this invocation.
    PARTS.once.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
