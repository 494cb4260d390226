"""Releasing the backlog after a reconnect: late follow-ups are skipped, held or sent, as the campaign says."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sendwell.models import BacklogMode, EnrollmentState, InboxStatus, new_step, new_window
from sendwell.services import backlog
from sendwell.services.backlog import release_backlog
from tests.deployment import Deployment
from tests.faults import Crash

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DAY = 86400


def _world(aws: Deployment, late_policy: str) -> None:
    models = aws.models
    inbox = models.inbox(
        inbox_id="ibx_back",
        provider="gmail",
        address="sales@agency.example",
        owner_email="o@agency.example",
        created_at=NOW - timedelta(days=60),
        status=InboxStatus.CONNECTED.value,
        daily_cap=50,
        min_gap_seconds=120,
        jitter_seconds=0,
    )
    inbox.save()
    models.campaign(
        campaign_id="cmp_back",
        name="Q4",
        created_at=NOW - timedelta(days=60),
        inbox_ids=["ibx_back"],
        steps=[new_step(subject="Hi", text="Hi", html=None, delay_seconds=0, new_thread=False)]
        + [new_step(subject="-", text="Bump", html=None, delay_seconds=3 * DAY, new_thread=False)] * 3,
        window=new_window(days="0,1,2,3,4,5,6", start="00:00", end="23:59", tz="UTC"),
        late_after_seconds=14 * DAY,
        late_policy=late_policy,
    ).save()
    for enrollment_id, step, due in (
        ("enr_late", 1, NOW - timedelta(days=20)),  # follow-up 20 days late
        ("enr_fresh", 1, NOW - timedelta(days=2)),  # follow-up 2 days late: on time
        ("enr_first", 0, NOW - timedelta(days=30)),  # a first email is never late
    ):
        models.enrollment(
            enrollment_id=enrollment_id,
            campaign_id="cmp_back",
            inbox_id="ibx_back",
            email=f"{enrollment_id}@client.example",
            fields={},
            created_at=NOW - timedelta(days=40),
            step_index=step,
            due_inbox="ibx_back",
            due_at=int(due.timestamp()),
        ).save()


@pytest.mark.parametrize(
    ("policy", "late_state", "late_step", "released", "skipped", "held"),
    [
        ("skip", EnrollmentState.ACTIVE, 3, 3, 1, 0),  # skips follow-ups 2 and 3; follow-up 4 is on time
        ("hold", EnrollmentState.PAUSED, 1, 2, 0, 1),
        ("send", EnrollmentState.ACTIVE, 1, 3, 0, 0),
    ],
)
def test_late_follow_ups_follow_the_campaign_policy(
    aws: Deployment, policy: str, late_state: EnrollmentState, late_step: int, released: int, skipped: int, held: int
) -> None:
    _world(aws, policy)
    result = release_backlog(aws.models, aws.models.inbox.get("ibx_back"), BacklogMode.PACED, now=NOW)
    assert (result.released, result.late_skipped, result.late_held) == (released, skipped, held)
    late = aws.models.enrollment.get("enr_late")
    assert (late.state, late.step_index) == (late_state, late_step)
    # Everything released is paced from now on, at least the inbox's gap apart.
    due = sorted(e.due_at for e in aws.models.enrollment.scan() if e.due_at is not None)
    assert len(due) == released and due[0] >= int(NOW.timestamp())
    assert all(later - earlier >= 120 for earlier, later in itertools.pairwise(due))


def test_a_release_run_again_after_a_crash_paces_the_rest_after_the_slots_it_gave(
    aws: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the second run paced the steps left from now again, over the first run's slots
    (two steps in the same slot for an inbox whose gap is two minutes)."""
    _world(aws, "send")
    models = aws.models
    inbox = models.inbox.get("ibx_back")
    # It sent a minute before it disconnected: the first slot is a minute from now.
    inbox.update(
        actions=[models.inbox.reconnected_at.set(NOW), models.inbox.last_sent_at.set(NOW - timedelta(seconds=60))]
    )
    original = backlog.writes.update
    calls = 0

    def dies_after_the_first_slot(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Crash("the worker died mid-release")
        return original(*args, **kwargs)

    monkeypatch.setattr(backlog.writes, "update", dies_after_the_first_slot)
    with pytest.raises(Crash):
        release_backlog(models, inbox, BacklogMode.PACED, now=NOW)
    monkeypatch.setattr(backlog.writes, "update", original)
    result = release_backlog(models, models.inbox.get("ibx_back"), BacklogMode.PACED, now=NOW + timedelta(seconds=30))
    assert result.released == 3
    due = sorted(e.due_at for e in models.enrollment.scan() if e.due_at is not None)
    assert len(due) == 3 and all(later - earlier >= 120 for earlier, later in itertools.pairwise(due))
    assert (result.first_slot, result.last_slot) == tuple(datetime.fromtimestamp(d, UTC) for d in (due[0], due[-1]))
