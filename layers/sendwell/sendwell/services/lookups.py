"""Reads several services need, written once."""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist

from sendwell.models import Campaign, Models


def find_campaign(models: Models, campaign_id: str) -> Campaign | None:
    try:
        return models.campaign.get(campaign_id)
    except DoesNotExist:
        return None


def campaigns_on(models: Models, inbox_id: str) -> list[Campaign]:
    """The campaigns that send from ``inbox_id``."""
    # Campaigns are few per workspace; a filtered scan beats an index paid on every campaign write.
    return list(models.campaign.scan(models.campaign.inbox_ids.contains(inbox_id)))
