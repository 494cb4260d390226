"""Enrollment state changes written once: stopping a sequence (reply, bounce, unsubscribe, failure).

Sending, polling and unsubscribe all stop enrollments through :func:`stop`; each logs the change
in its own words (the log entry's time and dedup key differ: a poll logs at the message's arrival).
"""

from __future__ import annotations

from sendwell import writes
from sendwell.models import Enrollment, EnrollmentState, Models

# States a sequence can still be stopped from: running, or held by an admin or a late follow-up.
STOPPABLE = (EnrollmentState.ACTIVE, EnrollmentState.PAUSED)


def stop(models: Models, enrollment: Enrollment, state: EnrollmentState, reason: str) -> bool:
    """Stop ``enrollment`` in ``state`` (its due step leaves the index); a conditional write.

    True when the enrollment is now in ``state``: this write did it, or an earlier attempt of the
    same change did (a replayed poll, a redelivered send). False when it had already stopped for
    another reason, which wins. A write that could not be made raises ``WriteNotDone``.
    """
    table = models.enrollment
    actions = [
        table.state.set(state.value),
        table.state_reason.set(reason[:500]),
        table.due_inbox.remove(),
        table.due_at.remove(),
    ]
    if writes.update(enrollment, actions=actions, condition=table.state.is_in(*(s.value for s in STOPPABLE))):
        return True
    # The stored state decides, not the copy we hold: our own earlier write may be what failed
    # the condition (a retry after a lost response, a replayed poll).
    return models.enrollment.get(enrollment.enrollment_id, consistent_read=True).state == state.value
