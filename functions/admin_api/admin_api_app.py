"""Admin API (IAM-authorised): inboxes, pause and resume, activity logs.

Every route is a few lines: parse the request, call one service function, shape the response.
Domain errors become HTTP responses in the exception handlers at the bottom, and nowhere else.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import get_parameter
from aws_lambda_powertools.utilities.typing import LambdaContext

from sendwell.clock import utcnow
from sendwell.config import Settings
from sendwell.failures import Provider
from sendwell.models import BacklogMode, ReconnectLink, bind_models
from sendwell.observability import Metric, install_redaction
from sendwell.prospects import ProspectImportError
from sendwell.services import activity, campaigns, inboxes, links

SETTINGS = Settings.from_env(os.environ, read_parameter=get_parameter)
MODELS = bind_models(SETTINGS.tables, region=SETTINGS.region)

logger = Logger()
install_redaction(logger)
tracer = Tracer()
metrics = Metrics()
app = APIGatewayHttpResolver()


class BadRequest(Exception):
    pass


def _actor() -> str:
    """Who is calling: the IAM principal API Gateway authenticated."""
    iam = app.current_event.request_context.authorizer.iam
    return iam.user_arn or iam.caller_id or "unknown"


def _json_body() -> dict[str, Any]:
    try:
        body = json.loads(app.current_event.body or "{}")
    except json.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON ({error.msg} at position {error.pos})") from error
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _new_inbox(body: dict[str, Any]) -> inboxes.NewInbox:
    allowed = set(inboxes.NewInbox.__dataclass_fields__)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    try:
        provider = Provider(body.get("provider", ""))
    except ValueError as error:
        raise BadRequest("provider must be one of: " + ", ".join(p.value for p in Provider)) from error
    try:
        return inboxes.NewInbox(**{**body, "provider": provider})
    except TypeError as error:
        raise BadRequest("provider, address and owner_email are required") from error


@app.post("/admin/inboxes")
@tracer.capture_method
def create_inbox() -> Response[str]:
    inbox = inboxes.create_inbox(MODELS, _new_inbox(_json_body()), now=utcnow(), created_by=_actor())
    logger.info("inbox created", extra={"inbox_id": inbox.inbox_id, "provider": inbox.provider})
    return _json(201, inboxes.describe(inbox))


@app.get("/admin/inboxes/<inbox_id>")
def get_inbox(inbox_id: str) -> Response[str]:
    return _json(200, inboxes.describe(inboxes.get_inbox(MODELS, inbox_id)))


@app.post("/admin/inboxes/<inbox_id>/pause")
def pause_inbox(inbox_id: str) -> Response[str]:
    inbox = inboxes.set_paused(MODELS, inbox_id, paused=True, now=utcnow(), actor=_actor())
    return _json(200, inboxes.describe(inbox))


@app.post("/admin/inboxes/<inbox_id>/resume")
def resume_inbox(inbox_id: str) -> Response[str]:
    inbox = inboxes.set_paused(MODELS, inbox_id, paused=False, now=utcnow(), actor=_actor())
    return _json(200, inboxes.describe(inbox))


@app.get("/admin/inboxes/<inbox_id>/activity")
def inbox_activity(inbox_id: str) -> Response[str]:
    inboxes.get_inbox(MODELS, inbox_id)
    entries = activity.recent(MODELS, activity.inbox_key(inbox_id))
    return _json(200, {"entries": [_entry(e) for e in entries]})


@app.get("/admin/campaigns/<campaign_id>/activity")
def campaign_activity(campaign_id: str) -> Response[str]:
    entries = activity.recent(MODELS, activity.campaign_key(campaign_id))
    return _json(200, {"entries": [_entry(e) for e in entries]})


@app.post("/admin/inboxes/<inbox_id>/links")
def create_link(inbox_id: str) -> Response[str]:
    body = _json_body()
    inboxes.get_inbox(MODELS, inbox_id)
    try:
        lifetime = timedelta(days=float(body.get("expires_in_days", 7)))
        mode = BacklogMode(body.get("backlog_mode", BacklogMode.PACED.value))
    except (TypeError, ValueError) as error:
        raise BadRequest("expires_in_days must be a number; backlog_mode paced, hold or immediate") from error
    try:
        issued = links.create_link(
            MODELS,
            inbox_id=inbox_id,
            created_by=_actor(),
            now=utcnow(),
            lifetime=lifetime,
            backlog_mode=mode,
            revoke_older=bool(body.get("revoke_older", False)),
        )
    except ValueError as error:
        raise BadRequest(str(error)) from error
    metrics.add_metric(name=Metric.LINKS_CREATED, unit=MetricUnit.Count, value=1)
    # The link's id, never its token: the token is in the response body only.
    logger.info("reconnect link created", extra={"inbox_id": inbox_id, "link_id": issued.link.link_id})
    return _json(201, {**_link(issued.link), "url": f"{SETTINGS.public_base_url}/r/{issued.token}"})


@app.get("/admin/inboxes/<inbox_id>/links")
def list_links(inbox_id: str) -> Response[str]:
    inboxes.get_inbox(MODELS, inbox_id)
    return _json(200, {"links": [_link(link) for link in links.list_links(MODELS, inbox_id)]})


@app.delete("/admin/inboxes/<inbox_id>/links/<link_id>")
def revoke_link(inbox_id: str, link_id: str) -> Response[str]:
    if not links.revoke(MODELS, link_id, inbox_id=inbox_id):
        return _error(404, f"no active link {link_id} on inbox {inbox_id}")
    return _json(200, {"link_id": link_id, "state": "revoked"})


@app.post("/admin/campaigns")
def create_campaign() -> Response[str]:
    spec = campaigns.CampaignSpec.from_json(_json_body())
    campaign = campaigns.create_campaign(MODELS, spec, now=utcnow(), actor=_actor())
    return _json(201, {"campaign_id": campaign.campaign_id, "name": campaign.name, "steps": len(campaign.steps)})


@app.post("/admin/campaigns/<campaign_id>/prospects")
def import_prospects(campaign_id: str) -> Response[str]:
    event = app.current_event
    data = event.decoded_body or ""
    result = campaigns.import_prospects(MODELS, campaign_id, data, now=utcnow(), actor=_actor())
    return _json(201, {"campaign_id": result.campaign_id, "imported": result.imported})


def _link(link: ReconnectLink) -> dict[str, Any]:
    return {
        "link_id": link.link_id,
        "inbox_id": link.inbox_id,
        "state": link.state,
        "created_by": link.created_by,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "backlog_mode": link.backlog_mode,
    }


def _entry(entry: activity.Entry) -> dict[str, Any]:
    return {"at": entry.at, "kind": entry.kind, "message": entry.message, "details": entry.details}


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def _error(status: int, message: str) -> Response[str]:
    return _json(status, {"error": message})


@app.exception_handler(BadRequest)
def bad_request(error: BadRequest) -> Response[str]:
    return _error(400, str(error))


@app.exception_handler(inboxes.InvalidInbox)
def invalid_inbox(error: inboxes.InvalidInbox) -> Response[str]:
    return _error(422, str(error))


@app.exception_handler(inboxes.InboxNotFound)
def inbox_not_found(error: inboxes.InboxNotFound) -> Response[str]:
    return _error(404, str(error))


@app.exception_handler(campaigns.CampaignNotFound)
def campaign_not_found(error: campaigns.CampaignNotFound) -> Response[str]:
    return _error(404, str(error))


@app.exception_handler(campaigns.CampaignError)
def campaign_invalid(error: campaigns.CampaignError) -> Response[str]:
    return _error(422, str(error))


@app.exception_handler(ProspectImportError)
def prospects_invalid(error: ProspectImportError) -> Response[str]:
    rows = [{"line": e.line, "field": e.field, "message": e.message} for e in error.errors]
    return _json(422, {"error": str(error), "rows": rows})


@app.exception_handler(inboxes.InboxConflict)
def inbox_conflict(error: inboxes.InboxConflict) -> Response[str]:
    return _error(409, str(error))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
