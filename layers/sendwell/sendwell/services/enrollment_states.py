"""Enrollment state changes written once: stopping a sequence (reply, bounce, unsubscribe, failure).

Sending, polling and unsubscribe all stop enrollments through :func:`stop`; each logs the change
in its own words (the log entry's time and dedup key differ: a poll logs at the message's arrival).
"""

from __future__ import annotations

from pynamodb.exceptions import UpdateError

from sendwell.models import Enrollment, EnrollmentState, Models

# States a sequence can still be stopped from: running, or held by an admin or a late follow-up.
STOPPABLE = (EnrollmentState.ACTIVE, EnrollmentState.PAUSED)


def stop(models: Models, enrollment: Enrollment, state: EnrollmentState, reason: str) -> bool:
    """Stop ``enrollment`` in ``state`` (its due step leaves the index); a conditional write.

    True when the enrollment is now in ``state``: this write did it, or an earlier attempt of the
    same change did (a replayed poll, a redelivered send). False when it had already stopped for
    another reason, which wins.
    """
    table = models.enrollment
    try:
        enrollment.update(
            actions=[
                table.state.set(state.value),
                table.state_reason.set(reason[:500]),
                table.due_shard.remove(),
                table.due_at.remove(),
            ],
            condition=table.state.is_in(*(s.value for s in STOPPABLE)),
        )
    except UpdateError:
        return enrollment.state == state.value
    return True
