"""Public reconnect API: health, reconnect link pages, OAuth start and callback, unsubscribe.

The link's routes are in ``reconnect_routes``; each parses the request, calls one service function
and renders a page (``reconnect_pages``). What can go wrong becomes its page in the one exception
handler here. A link token is never logged and never appears in a later URL (``/r/<token>``
answers with a cookie and a redirect to ``/connect``).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import reconnect_routes
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from reconnect_pages import (
    PASSWORD_FORM_AGAIN,
    REFUSALS,
    Pages,
    count_refusal,
    password_form_again,
    refusal_values,
    refused_as,
)

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services import health, reconnect
from sendwell.services.unsubscribe import unsubscribe as unsubscribe_enrollment
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.reconnect(os.environ)
CONTEXT = PARTS.context
pages = Pages(PARTS.settings)
app = APIGatewayHttpResolver()
app.include_router(reconnect_routes.router)


@app.get("/health")
def get_health() -> Response[str]:
    result = health.check(CONTEXT.models)
    return pages.json(200 if result["status"] == "ok" else 503, result)


@app.get("/u/<token>")
def unsubscribe_page(token: str) -> Response[str]:
    # A GET never unsubscribes: mail scanners open links; the button posts (RFC 8058 one-click).
    return pages.page(200, "unsubscribe", action=f"{pages.base_path}/u/{quote(token, safe='')}")


@app.post("/u/<token>")
def unsubscribe(token: str) -> Response[str]:
    if unsubscribe_enrollment(CONTEXT.models, token, now=utcnow()):
        metrics.add_metric(name=Metric.UNSUBSCRIBED, unit=MetricUnit.Count, value=1)
    return pages.page(200, "unsubscribed")


@app.exception_handler(list(REFUSALS))
def refused(error: Exception) -> Response[str]:
    refusal = refused_as(error)
    values = refusal_values(error)
    if isinstance(error, PASSWORD_FORM_AGAIN):
        visit = reconnect.load_visit(CONTEXT, reconnect_routes.session_cookie(), now=utcnow())
        values = password_form_again(visit, error)
    outcome = count_refusal(metrics, refusal)
    logger.info("reconnect page refused", extra={"outcome": outcome, "status": REFUSALS[refusal].status})
    return pages.page(REFUSALS[refusal].status, REFUSALS[refusal].template, **values)


@app.exception_handler(reconnect.AlreadyReconnected)
def already_reconnected(done: reconnect.AlreadyReconnected) -> Response[str]:
    # A double submit or a reload after success: the same answer again, not an error.
    inbox = reconnect.finished_reconnect(CONTEXT, done)
    return pages.reconnected_again(inbox.address) if inbox else pages.page(404, "invalid")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    app.append_context(parts=PARTS, pages=pages)
    return app.resolve(event, context)
