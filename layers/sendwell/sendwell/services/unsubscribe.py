"""Unsubscribe (RFC 8058 one-click): the token is the enrollment id our messages carry."""

from __future__ import annotations

import re
from datetime import datetime

from pynamodb.exceptions import DoesNotExist

from sendwell.models import EnrollmentState, Models, SuppressionReason
from sendwell.services import activity, enrollment_states, suppression
from sendwell.services.campaigns import stop_address

_ENROLLMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def unsubscribe(models: Models, enrollment_id: str, *, now: datetime) -> bool:
    """Stop the enrollment for good; False when there is none (the page says the same either way)."""
    if not _ENROLLMENT_ID.fullmatch(enrollment_id):
        return False
    try:
        enrollment = models.enrollment.get(enrollment_id, consistent_read=True)
    except DoesNotExist:
        return False
    reason = "unsubscribed from the link in an email"
    # Everywhere, not only this campaign: the list first, so a fault after it still keeps the
    # address out of every import and send; the replayed request finishes the rest.
    suppression.suppress(
        models,
        enrollment.email,
        reason=SuppressionReason.UNSUBSCRIBED,
        now=now,
        source="unsubscribe",
        campaign_id=enrollment.campaign_id,
        enrollment_id=enrollment_id,
        inbox_id=enrollment.inbox_id,
    )
    stopped = enrollment_states.stop(models, enrollment, EnrollmentState.UNSUBSCRIBED, reason)
    stop_address(models, enrollment.email, now=now, reason="suppressed: unsubscribed from another campaign")
    if not stopped:
        return True  # already stopped (replied, finished): nothing more to send
    activity.record(
        models,
        now=now,
        kind="enrollment.unsubscribed",
        message=f"{enrollment.email} unsubscribed",
        campaign_ids=[enrollment.campaign_id],
        details={"enrollment_id": enrollment_id},
        dedup=f"{enrollment_id}.unsubscribed",
    )
    return True
