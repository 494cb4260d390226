"""Public reconnect API: health, reconnect link pages, OAuth start and callback, unsubscribe."""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.config import Settings
from sendwell.models import bind_models
from sendwell.services import health

SETTINGS = Settings.from_env(os.environ)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayHttpResolver()


@app.get("/health")
def get_health() -> Response[str]:
    result = health.check(MODELS)
    return Response(
        status_code=200 if result["status"] == "ok" else 503,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(result),
        headers={"Cache-Control": "no-store"},
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
