"""Reconnect worker: finish each reconnect outside the owner's HTTP request.

Each task names an inbox and the link its owner used. The worker polls the mail that arrived
while the inbox was disconnected, releases its backlog as the link says, marks it connected and
tells the link's creator and the owner (``sendwell.services.catch_up``). A task that fails (a
provider or AWS fault, a notice that can't go out yet) is delivered again by SQS; every step is
safe to repeat, so a retry does only what is still missing.
"""

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
from sendwell.ports.messages import ReconnectTask
from sendwell.services.catch_up import finish_reconnect
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.reconnect_worker(os.environ)
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def handle_record(record: SQSRecord) -> None:
    task = ReconnectTask.from_json(record.body)
    logger.append_keys(inbox_id=task.inbox_id)
    result = finish_reconnect(PARTS.context, task, now=utcnow())
    if result is None:
        logger.info("reconnect task: nothing left to do")
        return
    metrics.add_metric(name=Metric.INBOXES_RECONNECTED, unit=MetricUnit.Count, value=1)
    logger.info("inbox reconnected", extra=result.log_fields())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    PARTS.once.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
