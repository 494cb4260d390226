"""Reminders function: every 15 minutes, queue again each reconnect left unfinished, remind about
inboxes still disconnected and report inboxes that have failed with transient errors for a long
time ("degraded"); then warn before what runs out on a known date does (``services.clocks``).

Each inbox is handled on its own: a notice that can't be sent now (SES refusing, another run busy
with the same notice) is logged and counted, and the next run sends only what is still missing.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services import clocks
from sendwell.services.attention import Attention, attend_all
from sendwell.wiring import NOTICE_FAILURES, logger, metrics, tracer

PARTS = wiring.reminders(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    PARTS.once.register_lambda_context(context)
    outcomes = attend_all(
        PARTS.context, PARTS.reconnect_tasks, now=utcnow(), retry_next_run=NOTICE_FAILURES, on_failure=_log_failure
    )
    # A reconnect the worker did not finish in time: its task was lost or keeps failing.
    metrics.add_metric(name=Metric.RECONNECTS_REQUEUED, unit=MetricUnit.Count, value=outcomes[Attention.REQUEUED.value])
    metrics.add_metric(name=Metric.REMINDERS_SENT, unit=MetricUnit.Count, value=outcomes[Attention.REMINDED.value])
    metrics.add_metric(name=Metric.DEGRADED_NOTICES, unit=MetricUnit.Count, value=outcomes[Attention.DEGRADED.value])
    metrics.add_metric(name=Metric.LINKS_EXPIRED, unit=MetricUnit.Count, value=outcomes["expired_links"])
    logger.info("attention handled", extra={"outcomes": dict(outcomes)})
    try:
        warned = clocks.watch(PARTS.context, PARTS.clocks, now=utcnow())
    except NOTICE_FAILURES as error:  # the next run sends what is missing
        _log_failure("a clock warning was not sent", None, error)
        warned = {}
    logger.info("clocks watched", extra={"warnings": warned})
    return {**outcomes, **{f"warned_{kind}": n for kind, n in warned.items() if n}}  # only what happened


def _log_failure(what: str, inbox_id: str | None, error: Exception) -> None:
    # The error's type only: provider and AWS messages can quote addresses.
    logger.warning(what, extra={"inbox_id": inbox_id, "error": type(error).__name__})
