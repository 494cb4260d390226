"""Poll scheduler: every minute, fan the inboxes whose poll slot has come out to the poll workers."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.services.polling import fan_out
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.poll_schedule(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    inboxes = fan_out(PARTS.models, PARTS.work_queue, now=utcnow())
    # No metric of its own: InboxesPolled (the workers) says the same, and PollLagSeconds how late.
    logger.info("inboxes fanned out for polling", extra={"inboxes": inboxes})
    return {"inboxes": inboxes}
