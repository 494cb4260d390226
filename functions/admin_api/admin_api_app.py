"""Admin API (IAM-authorised): inboxes, pause and resume, links, campaigns, activity logs.

The routes live in ``admin_inbox_routes`` and ``admin_campaign_routes``; each is a few lines: parse
the request (``admin_requests``), call one service function, shape the response. Domain errors
become HTTP responses here, in the one exception handler, and nowhere else.
"""

from __future__ import annotations

import os
from typing import Any

import admin_campaign_routes
import admin_inbox_routes
import admin_suppression_routes
from admin_requests import ERROR_STATUS, as_json, error_body, status_for
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell import wiring
from sendwell.wiring import logger, metrics, tracer

PARTS = wiring.admin(os.environ)
app = APIGatewayHttpResolver()
app.include_router(admin_inbox_routes.router)
app.include_router(admin_campaign_routes.router)
app.include_router(admin_suppression_routes.router)


@app.exception_handler(list(ERROR_STATUS))
def domain_error(error: Exception) -> Response[str]:
    return as_json(status_for(error), error_body(error))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    app.append_context(parts=PARTS)
    return app.resolve(event, context)
