"""Dispatch worker: for each inbox of a batch, enqueue the step it may send now, or move it on to
when it can (``sendwell.services.dispatch``)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services.dispatch import DispatchReport, dispatch_inboxes, inbox_ids_of
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.dispatch(os.environ)
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def handle_record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    # Inboxes a worker short of time leaves stay ready on the send index: the next tick offers them.
    report = dispatch_inboxes(
        PARTS.models,
        PARTS.send_queue,
        inbox_ids_of(record.body),
        now=utcnow(),
        time_left=lambda: lambda_context.get_remaining_time_in_millis() / 1000,
    )
    _count(report)


def _count(report: DispatchReport) -> None:
    metrics.add_metric(name=Metric.STEPS_ENQUEUED, unit=MetricUnit.Count, value=report.enqueued)
    metrics.add_metric(name=Metric.INBOXES_RESCHEDULED, unit=MetricUnit.Count, value=report.rescheduled)
    metrics.add_metric(name=Metric.DISPATCH_LAG, unit=MetricUnit.Seconds, value=report.lag_seconds)
    metrics.add_metric(name=Metric.FOLLOW_UPS_HELD, unit=MetricUnit.Count, value=report.held_for_replies)
    logger.info(
        "dispatched",
        extra={
            "inboxes": report.inboxes,
            "enqueued": report.enqueued,
            "rescheduled": report.rescheduled,
            "in_gap": report.in_gap,
            "lag_seconds": report.lag_seconds,
            "skipped_inboxes": len(report.skipped_inboxes),
            "held_for_replies": report.held_for_replies,
            "unfinished": report.unfinished,  # left for the next tick, which offers them again
        },
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
