"""Unsubscribe (RFC 8058 one-click): the token is the enrollment id our messages carry."""

from __future__ import annotations

import re
from datetime import datetime

from pynamodb.exceptions import DoesNotExist

from sendwell.models import EnrollmentState, Models
from sendwell.services import activity, enrollment_states

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
    if not enrollment_states.stop(models, enrollment, EnrollmentState.UNSUBSCRIBED, reason):
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
