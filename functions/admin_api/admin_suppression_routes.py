"""Admin routes for the suppression list: list, add, look up and remove addresses."""

from __future__ import annotations

from urllib.parse import unquote

from admin_requests import BadRequest, actor, as_json, json_body
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.models import SuppressionReason
from sendwell.services import campaigns, suppression
from sendwell.wiring import logger

router = APIGatewayHttpRouter()
MAX_PAGE = 500


def _parts() -> wiring.Admin:
    parts: wiring.Admin = router.context["parts"]
    return parts


@router.get("/admin/suppressions")
def list_suppressions() -> Response[str]:
    query = router.current_event.query_string_parameters or {}
    try:
        reason = SuppressionReason(query["reason"]) if query.get("reason") else None
        limit = int(query.get("limit", 100))
    except ValueError as error:
        reasons = ", ".join(r.value for r in SuppressionReason)
        raise BadRequest(f"reason must be one of: {reasons}; limit a whole number") from error
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    page = suppression.list_entries(_parts().models, reason=reason, limit=limit, cursor=query.get("cursor") or None)
    return as_json(200, {"entries": [suppression.describe(e) for e in page.entries], "cursor": page.cursor})


@router.post("/admin/suppressions")
def add_suppression() -> Response[str]:
    body = json_body(router.current_event.body)
    unknown = sorted(set(body) - {"email", "note"})
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    if not isinstance(body.get("email"), str) or not isinstance(body.get("note", ""), str):
        raise BadRequest("email is required, and it and note are strings")
    models, now = _parts().models, utcnow()
    email = suppression.normalise(body["email"])
    added = suppression.suppress(
        models,
        email,
        reason=SuppressionReason.MANUAL,
        now=now,
        source=f"admin {actor(router.current_event)}",
        note=body.get("note") or None,
    )
    stopped = campaigns.stop_address(models, email, now=now, reason="suppressed by an admin")
    logger.info("address suppressed", extra={"added": added, "enrollments_stopped": stopped})
    entry = suppression.get(models, email)
    assert entry is not None  # just written, or there before
    return as_json(201 if added else 200, {**suppression.describe(entry), "enrollments_stopped": stopped})


@router.get("/admin/suppressions/<email>")
def get_suppression(email: str) -> Response[str]:
    entry = suppression.get(_parts().models, unquote(email))
    if entry is None:
        return as_json(404, {"error": f"{unquote(email)} is not suppressed"})
    return as_json(200, suppression.describe(entry))


@router.delete("/admin/suppressions/<email>")
def remove_suppression(email: str) -> Response[str]:
    address = unquote(email)
    if not suppression.remove(_parts().models, address):
        return as_json(404, {"error": f"{address} is not suppressed"})
    logger.info("address unsuppressed", extra={"by": actor(router.current_event)})
    return as_json(200, {"email": suppression.normalise(address), "removed": True})
