"""Releasing the backlog after a reconnect: late follow-ups are skipped, held or sent, as the campaign says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sendwell.models import BacklogMode, EnrollmentState, InboxStatus, new_step, new_window
from sendwell.services import backlog
from sendwell.services.backlog import release_backlog
from tests.deployment import Deployment

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
    before = {e.enrollment_id: e.due_at for e in aws.models.enrollment.scan()}
    result = release_backlog(aws.models, aws.models.inbox.get("ibx_back"), BacklogMode.PACED, now=NOW)
    assert (result.released, result.late_skipped, result.late_held) == (released, skipped, held)
    late = aws.models.enrollment.get("enr_late")
    assert (late.state, late.step_index) == (late_state, late_step)
    # The steps on time are not re-timed: dispatch paces them. The notice's slots are a gap apart.
    assert {e: aws.models.enrollment.get(e).due_at for e in ("enr_fresh", "enr_first")} == {
        e: before[e] for e in ("enr_fresh", "enr_first")
    }
    assert result.first_slot is not None and result.last_slot is not None and result.first_slot >= NOW
    assert (result.last_slot - result.first_slot).total_seconds() >= 120 * (released - 1)


def test_a_release_of_any_size_writes_nothing_for_the_steps_that_go(
    aws: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each step was re-timed by a write of its own, one after another in the worker, so a
    large backlog ran the reconnect worker out of time."""
    _world(aws, "send")
    models = aws.models
    with models.enrollment.batch_write() as batch:
        for number in range(300):
            batch.save(
                models.enrollment(
                    enrollment_id=f"enr_{number:04d}",
                    campaign_id="cmp_back",
                    inbox_id="ibx_back",
                    email=f"p{number}@client.example",
                    fields={},
                    created_at=NOW - timedelta(days=10),
                    step_index=0,
                    due_inbox="ibx_back",
                    due_at=int((NOW - timedelta(days=5, minutes=number)).timestamp()),
                )
            )
    updates = 0
    original = backlog.writes.update

    def counted(*args: Any, **kwargs: Any) -> bool:
        nonlocal updates
        updates += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(backlog.writes, "update", counted)
    result = release_backlog(models, models.inbox.get("ibx_back"), BacklogMode.PACED, now=NOW)
    assert result.released == 303 and updates == 0  # nothing late ("send"): nothing written
    # 303 at 50 a day: the notice says they spread over seven calendar days (50, 5 x 50, then 3).
    assert result.first_slot is not None and result.last_slot is not None
    assert (result.last_slot.date() - result.first_slot.date()).days == 6
