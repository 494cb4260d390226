"""Auth-failure handler: each report is classified already; disconnect once, notify once.

A permission loss that is not conclusive is held while it settles (services.breaker): the report is
queued again with a delay, and decided when it comes back, once the provider's other inboxes have
had time to report theirs.

A record whose notices could not all be sent (SES or SNS failing, another invocation busy with the
same notice) fails; SQS delivers it again and the retry sends only what is missing. A record that
keeps failing ends in the queue's dead-letter queue; the inbox's state never depends on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.failures import FailureKind
from sendwell.observability import AUTH_FAILURE_METRICS, Metric
from sendwell.ports.messages import AuthFailureReport
from sendwell.services import schedule
from sendwell.services.auth_failures import Verdict, handle_report
from sendwell.services.breaker import Settling
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.incidents(os.environ)
VERDICT_METRICS: Mapping[Verdict, Metric] = {
    Verdict.DISCONNECTED: Metric.INBOXES_DISCONNECTED,
    Verdict.APP_CONFIG: Metric.APP_CONFIG_ERRORS,
    Verdict.TRIPPED: Metric.APP_CONFIG_ERRORS,  # once per trip of the mass-disconnect breaker
}
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def handle_record(record: SQSRecord) -> None:
    report = AuthFailureReport.from_json(record.body)
    logger.append_keys(inbox_id=report.inbox_id, code=report.code)
    now = utcnow()
    try:
        verdict = handle_report(PARTS.context, report, now=now)
    except Settling as settling:
        # Queued again, to be decided once the provider's other inboxes have had time to report.
        PARTS.later.report(report, delay_seconds=math.ceil(settling.delay.total_seconds()))
        logger.info("permission loss settling", extra={"delay_seconds": int(settling.delay.total_seconds())})
        return
    # Counted once handled, so a redelivered report is not counted twice.
    metrics.add_metric(name=Metric.AUTH_FAILURES, unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=AUTH_FAILURE_METRICS[FailureKind(report.kind)], unit=MetricUnit.Count, value=1)
    if verdict in VERDICT_METRICS:
        metrics.add_metric(name=VERDICT_METRICS[verdict], unit=MetricUnit.Count, value=1)
    if verdict is Verdict.DISCONNECTED:  # what it holds back until the reconnect, counted once
        backlog = schedule.due_steps(PARTS.context.models, report.inbox_id, now=now)
        metrics.add_metric(name=Metric.DISCONNECTED_BACKLOG, unit=MetricUnit.Count, value=backlog)
    logger.info("auth failure handled", extra={"verdict": verdict.value, "kind": report.kind})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    PARTS.once.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
