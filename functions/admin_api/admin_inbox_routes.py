"""Admin routes for inboxes: create, status, pause and resume, activity, reconnect links."""

from __future__ import annotations

from admin_requests import actor, as_json, entry, json_body, link_options, new_inbox
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.metrics import MetricUnit

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.observability import Metric
from sendwell.services import activity, inboxes, links, owner_links
from sendwell.wiring import logger, metrics, tracer

router = APIGatewayHttpRouter()


def _parts() -> wiring.Admin:
    """The function's wired parts, handed to every route through the resolver's context."""
    parts: wiring.Admin = router.context["parts"]
    return parts


@router.post("/admin/inboxes")
@tracer.capture_method
def create_inbox() -> Response[str]:
    body = new_inbox(json_body(router.current_event.body))
    inbox = inboxes.create_inbox(_parts().models, body, now=utcnow(), created_by=actor(router.current_event))
    logger.info("inbox created", extra={"inbox_id": inbox.inbox_id, "provider": inbox.provider})
    return as_json(201, inboxes.describe(inbox))


@router.get("/admin/inboxes/<inbox_id>")
def get_inbox(inbox_id: str) -> Response[str]:
    return as_json(200, inboxes.describe(inboxes.get_inbox(_parts().models, inbox_id)))


@router.post("/admin/inboxes/<inbox_id>/pause")
def pause_inbox(inbox_id: str) -> Response[str]:
    return _set_paused(inbox_id, paused=True)


@router.post("/admin/inboxes/<inbox_id>/resume")
def resume_inbox(inbox_id: str) -> Response[str]:
    return _set_paused(inbox_id, paused=False)


def _set_paused(inbox_id: str, *, paused: bool) -> Response[str]:
    inbox = inboxes.set_paused(
        _parts().models, inbox_id, paused=paused, now=utcnow(), actor=actor(router.current_event)
    )
    return as_json(200, inboxes.describe(inbox))


@router.get("/admin/inboxes/<inbox_id>/activity")
def inbox_activity(inbox_id: str) -> Response[str]:
    inboxes.get_inbox(_parts().models, inbox_id)
    return as_json(200, {"entries": [entry(e) for e in activity.recent(_parts().models, activity.inbox_key(inbox_id))]})


@router.post("/admin/inboxes/<inbox_id>/links")
def create_link(inbox_id: str) -> Response[str]:
    options = link_options(json_body(router.current_event.body))
    inboxes.get_inbox(_parts().models, inbox_id)
    issued = links.create_link(
        _parts().models,
        inbox_id=inbox_id,
        created_by=actor(router.current_event),
        now=utcnow(),
        lifetime=options.lifetime,
        backlog_mode=options.backlog_mode,
        revoke_older=options.revoke_older,
    )
    metrics.add_metric(name=Metric.LINKS_CREATED, unit=MetricUnit.Count, value=1)
    # The link's id, never its token: the token is in the response body only.
    logger.info("reconnect link created", extra={"inbox_id": inbox_id, "link_id": issued.link.link_id})
    url = f"{_parts().settings.public_base_url}/r/{issued.token}"
    return as_json(201, {**links.describe(issued.link), "url": url})


@router.post("/admin/owner-links")
def create_owner_link() -> Response[str]:
    """One link for every disconnected inbox of one owner: ``{"owner_email": ...}`` plus the link options."""
    body = json_body(router.current_event.body)
    options = link_options(body)
    owner = body.get("owner_email")
    if not isinstance(owner, str) or "@" not in owner:
        return as_json(400, {"error": "owner_email is required"})
    waiting = owner_links.disconnected_of(_parts().models, owner)
    issued = links.create_owner_link(
        _parts().models,
        owner_email=owner,
        created_by=actor(router.current_event),
        now=utcnow(),
        lifetime=options.lifetime,
        backlog_mode=options.backlog_mode,
    )
    metrics.add_metric(name=Metric.LINKS_CREATED, unit=MetricUnit.Count, value=1)
    logger.info("owner reconnect link created", extra={"link_id": issued.link.link_id, "inboxes": len(waiting)})
    url = f"{_parts().settings.public_base_url}/r/{issued.token}"
    body = {**links.describe(issued.link), "url": url, "inbox_ids": [inbox.inbox_id for inbox in waiting]}
    return as_json(201, body)


@router.get("/admin/inboxes/<inbox_id>/links")
def list_links(inbox_id: str) -> Response[str]:
    inboxes.get_inbox(_parts().models, inbox_id)
    return as_json(200, {"links": [links.describe(link) for link in links.list_links(_parts().models, inbox_id)]})


@router.delete("/admin/inboxes/<inbox_id>/links/<link_id>")
def revoke_link(inbox_id: str, link_id: str) -> Response[str]:
    if not links.revoke(_parts().models, link_id, inbox_id=inbox_id):
        return as_json(404, {"error": f"no active link {link_id} on inbox {inbox_id}"})
    return as_json(200, {"link_id": link_id, "state": "revoked"})
