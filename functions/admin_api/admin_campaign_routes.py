"""Admin routes for campaigns: create, import prospects, the sequence log."""

from __future__ import annotations

from admin_requests import actor, as_json, entry, json_body
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from sendwell import wiring
from sendwell.clock import utcnow
from sendwell.services import activity, campaigns

router = APIGatewayHttpRouter()


def _parts() -> wiring.Admin:
    """The function's wired parts, handed to every route through the resolver's context."""
    parts: wiring.Admin = router.context["parts"]
    return parts


@router.post("/admin/campaigns")
def create_campaign() -> Response[str]:
    spec = campaigns.CampaignSpec.from_json(json_body(router.current_event.body))
    campaign = campaigns.create_campaign(_parts().models, spec, now=utcnow(), actor=actor(router.current_event))
    return as_json(201, {"campaign_id": campaign.campaign_id, "name": campaign.name, "steps": len(campaign.steps)})


@router.post("/admin/campaigns/<campaign_id>/prospects")
def import_prospects(campaign_id: str) -> Response[str]:
    data = router.current_event.decoded_body or ""
    result = campaigns.import_prospects(
        _parts().models, campaign_id, data, now=utcnow(), actor=actor(router.current_event)
    )
    return as_json(
        201, {"campaign_id": result.campaign_id, "imported": result.imported, "suppressed": result.suppressed}
    )


@router.get("/admin/campaigns/<campaign_id>/activity")
def campaign_activity(campaign_id: str) -> Response[str]:
    return as_json(
        200, {"entries": [entry(e) for e in activity.recent(_parts().models, activity.campaign_key(campaign_id))]}
    )
