"""The admin API's request bodies and responses, and the status each domain error answers with.

Kept beside the handler so its routes stay a few lines each: parse here, call one service
function, shape the response here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from sendwell.failures import Provider
from sendwell.models import BacklogMode
from sendwell.prospects import ProspectImportError
from sendwell.services import activity, campaigns, inboxes, links, suppression


class BadRequest(Exception):
    pass


# Each domain error's status; the handler maps every one of them in one place.
ERROR_STATUS: Mapping[type[Exception], int] = {
    BadRequest: 400,
    links.InvalidLinkRequest: 400,
    inboxes.InvalidInbox: 422,
    inboxes.InboxNotFound: 404,
    inboxes.InboxConflict: 409,
    campaigns.CampaignNotFound: 404,
    campaigns.CampaignError: 422,
    ProspectImportError: 422,
    suppression.SuppressionError: 400,
}


def actor(event: APIGatewayProxyEventV2) -> str:
    """Who is calling: the IAM principal API Gateway authenticated."""
    iam = event.request_context.authorizer.iam
    return iam.user_arn or iam.caller_id or "unknown"


def status_for(error: Exception) -> int:
    return next(ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS)


def error_body(error: Exception) -> dict[str, Any]:
    if isinstance(error, ProspectImportError):
        rows = [{"line": e.line, "field": e.field, "message": e.message} for e in error.errors]
        return {"error": str(error), "rows": rows}
    return {"error": str(error)}


def json_body(raw: str | None) -> dict[str, Any]:
    try:
        body = json.loads(raw or "{}")
    except json.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON ({error.msg} at position {error.pos})") from error
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def new_inbox(body: dict[str, Any]) -> inboxes.NewInbox:
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


@dataclass(frozen=True, slots=True)
class LinkOptions:
    lifetime: timedelta
    backlog_mode: BacklogMode
    revoke_older: bool


def link_options(body: dict[str, Any]) -> LinkOptions:
    try:
        lifetime = timedelta(days=float(body.get("expires_in_days", 7)))
        mode = BacklogMode(body.get("backlog_mode", BacklogMode.PACED.value))
    except (TypeError, ValueError) as error:
        raise BadRequest("expires_in_days must be a number; backlog_mode paced, hold or immediate") from error
    return LinkOptions(lifetime=lifetime, backlog_mode=mode, revoke_older=bool(body.get("revoke_older", False)))


def entry(found: activity.Entry) -> dict[str, Any]:
    return {"at": found.at, "kind": found.kind, "message": found.message, "details": found.details}


def as_json(status: int, body: Mapping[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))
