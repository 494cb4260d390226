"""Send function: one SQS FIFO batch of due steps; each record is one step sent at most once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.failures import FailureKind
from sendwell.ids import step_message_id
from sendwell.observability import Metric
from sendwell.ports.messages import MalformedMessage, QueuedMessage, SendRequest
from sendwell.services.sending import Outcome, RetryLater, send_step
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.send(os.environ)

# One fixed metric per outcome: failures by class, and the outcomes that sent nothing.
OUTCOME_METRICS: Mapping[Outcome, Metric] = {
    Outcome.SENT: Metric.EMAILS_SENT,
    Outcome.RECONCILED: Metric.SENDS_RECONCILED,
    Outcome.STALE: Metric.SENDS_SKIPPED,
    Outcome.INBOX_UNAVAILABLE: Metric.SENDS_SKIPPED,
    Outcome.RECIPIENT_REJECTED: Metric.SEND_RECIPIENT_REJECTED_FAILURES,
    Outcome.FAILED: Metric.SEND_BAD_MESSAGE_FAILURES,
    Outcome.AUTH_FAILURE: Metric.SEND_AUTH_FAILURES,
    Outcome.HELD_FOR_REPLIES: Metric.SENDS_SKIPPED,
    Outcome.UNCONFIRMED: Metric.SENDS_UNCONFIRMED,
    Outcome.SUPPRESSED: Metric.SENDS_SKIPPED,
}

# A deferred step only holds back its own inbox's group: FIFO order matters within an inbox, and
# other inboxes in the same batch go on.
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# A batch whose every step was deferred is normal (gaps, caps), not an error: report the items.
processor.raise_on_entire_batch_failure = False


@tracer.capture_method
def send_record(record: SQSRecord) -> None:
    try:
        request = SendRequest.from_json(record.body)
    except MalformedMessage as error:
        # Straight to the dead-letter queue, alone: failing it here would hold back every later
        # message of its inbox's FIFO group until it had failed five times.
        group = record.attributes.message_group_id
        PARTS.dead_letters.send_batch([QueuedMessage(record.body, group, deduplication_id=record.message_id)])
        logger.error("malformed send message moved to the dead-letter queue", extra={"error": str(error)})
        return
    address = request.inbox_address
    logger.append_keys(
        inbox_id=request.inbox_id,
        campaign_id=request.campaign_id or None,
        enrollment_id=request.enrollment_id,
        step=request.step_index,
        message_id=step_message_id(request.enrollment_id, request.step_index, address) if address else None,
    )
    redelivered = int(record.attributes.approximate_receive_count) > 1
    try:
        outcome = send_step(PARTS.context, request, now=utcnow(), redelivered=redelivered)
    except RetryLater as later:
        # Come back when the inbox can send again instead of after the queue's visibility timeout.
        PARTS.send_queue.retry_in(record.receipt_handle, later.delay_seconds)
        metrics.add_metric(name=Metric.SENDS_DEFERRED, unit=MetricUnit.Count, value=1)
        if later.failure is FailureKind.TRANSIENT:
            metrics.add_metric(name=Metric.SEND_TRANSIENT_FAILURES, unit=MetricUnit.Count, value=1)
        logger.info("send deferred", extra={"reason": str(later), "delay_seconds": later.delay_seconds})
        raise
    metrics.add_metric(name=OUTCOME_METRICS[outcome], unit=MetricUnit.Count, value=1)
    logger.info("send finished", extra={"outcome": outcome.value})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=send_record, processor=processor, context=context)
