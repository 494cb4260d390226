"""Release an inbox's backlog after a reconnect: paced within its limits, immediate, or held.

Follow-ups that became too late while the inbox was down are skipped or held first, as the
campaign's ``late_policy`` says; each of those is a conditional write on the step it saw, so a step
sent, stopped or re-timed meanwhile keeps its own state. The steps that go are not re-timed:
dispatch sends an inbox's due steps oldest first, one per gap, within its window and daily cap
(``sendwell.services.dispatch``), which is the pace itself. The release only works out the slots
that gives, for the notice, so it writes nothing for them whatever the backlog's size, and a
release run again after a fault finds the same steps and says the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sendwell import writes
from sendwell.clock import epoch
from sendwell.models import BacklogMode, Campaign, Enrollment, EnrollmentState, Inbox, Models
from sendwell.pacing import InboxUsage, SendingWindow, pace_backlog, record_send
from sendwell.services import notices
from sendwell.services.limits import campaign_window, jitter_for, limits_of, usage_of
from sendwell.services.lookups import find_campaign


@dataclass(frozen=True, slots=True)
class BacklogRelease:
    mode: BacklogMode
    released: int = 0  # pending steps that go now, paced by dispatch
    first_slot: datetime | None = None
    last_slot: datetime | None = None
    late_skipped: int = 0
    late_held: int = 0
    held: bool = False  # the inbox stays paused until an admin resumes it

    def summary(self) -> str:
        late = []
        if self.late_skipped:
            late.append(f"{notices.count(self.late_skipped, 'late follow-up')} skipped")
        if self.late_held:
            late.append(f"{notices.count(self.late_held, 'late follow-up')} held for review")
        tail = f" ({'; '.join(late)})" if late else ""
        if self.held:
            return f"Sending stays paused until an admin resumes it{tail}."
        if self.mode is BacklogMode.IMMEDIATE:
            return f"{notices.count(self.released, 'waiting email')} go out as fast as the inbox's limits allow{tail}."
        if not self.released or self.first_slot is None or self.last_slot is None:
            return f"No emails were waiting{tail}."
        return (
            f"{notices.count(self.released, 'waiting email')} spread from {self.first_slot.strftime(notices.DATE)} "
            f"to {self.last_slot.strftime(notices.DATE)}, within the inbox's daily limit and sending hours{tail}."
        )


def release_backlog(models: Models, inbox: Inbox, mode: BacklogMode, *, now: datetime) -> BacklogRelease:
    """Release this inbox's pending steps after a reconnect, as ``mode`` says.

    Follow-ups more than the campaign's ``late_after_seconds`` late are skipped or held first
    (``late_policy``). ``paced`` and ``immediate`` then leave the due steps as they are: dispatch
    sends them one per gap within the inbox's window and cap, oldest first, and ``paced`` says when
    that puts the first and the last; ``hold`` touches nothing and keeps the inbox paused.
    """
    if mode is BacklogMode.HOLD:
        return BacklogRelease(mode=mode, held=True)
    campaigns: dict[str, Campaign | None] = {}
    late = Counter[str]()
    due_now: list[tuple[Enrollment, Campaign]] = []
    for enrollment in _pending_steps(models, inbox.inbox_id):
        if enrollment.campaign_id not in campaigns:
            campaigns[enrollment.campaign_id] = find_campaign(models, enrollment.campaign_id)
        campaign = campaigns[enrollment.campaign_id]
        if campaign is None:
            continue
        outcome = _handle_late(models, campaign, enrollment, now)
        if outcome:
            late[outcome] += 1
        # A skip moves on to the next follow-up, which may be due already (the update refreshed it;
        # ``state`` is not on the index, so it reads as active until an update says otherwise).
        due = enrollment.due_at
        if enrollment.state == EnrollmentState.ACTIVE and due is not None and due <= epoch(now):
            due_now.append((enrollment, campaign))
    if mode is BacklogMode.IMMEDIATE:
        return BacklogRelease(mode, released=len(due_now), late_skipped=late["skipped"], late_held=late["held"])
    slots = _slots(inbox, due_now, now)
    return BacklogRelease(
        mode,
        released=len(slots),
        first_slot=min(slots, default=None),
        last_slot=max(slots, default=None),
        late_skipped=late["skipped"],
        late_held=late["held"],
    )


def _slots(inbox: Inbox, due_now: list[tuple[Enrollment, Campaign]], now: datetime) -> list[datetime]:
    """When dispatch sends each due step: from now, oldest first, one per gap within the window and
    the cap; steps of campaigns with another window queue after, in turn."""
    limits = limits_of(inbox)
    usage: InboxUsage = usage_of(inbox, now)
    groups: dict[SendingWindow, list[Enrollment]] = {}
    for enrollment, campaign in sorted(due_now, key=lambda pair: (pair[0].due_at or 0, pair[0].enrollment_id)):
        groups.setdefault(campaign_window(campaign), []).append(enrollment)
    slots: list[datetime] = []
    for window, group in groups.items():
        jitters = [jitter_for(f"{e.enrollment_id}:{e.step_index}") for e in group]
        for slot in pace_backlog(now, len(group), window=window, limits=limits, usage=usage, jitters=jitters):
            slots.append(slot)
            usage = record_send(usage, slot, limits.tz)
    return slots


def _handle_late(models: Models, campaign: Campaign, enrollment: Enrollment, now: datetime) -> str | None:
    """Skip or hold a follow-up that is too late; "skipped", "held", or None when it is on time."""
    steps = campaign.steps
    index, due = int(enrollment.step_index), enrollment.due_at
    late_after = int(campaign.late_after_seconds)
    if index == 0 or due is None or epoch(now) - due <= late_after or campaign.late_policy == "send":
        return None  # a first email is never "late", and "send" means late ones go out paced too
    table = models.enrollment
    unchanged = (
        (table.step_index == enrollment.step_index)
        & (table.due_at == enrollment.due_at)
        & (table.state == EnrollmentState.ACTIVE.value)
    )
    days = (epoch(now) - due) // 86400
    if campaign.late_policy == "hold":
        actions: list[Any] = [
            table.state.set(EnrollmentState.PAUSED.value),
            table.state_reason.set(f"follow-up {index + 1} was {days} days late after the inbox reconnected"),
            table.due_inbox.remove(),
            table.due_at.remove(),
        ]
        outcome = "held"
    else:
        # Skip every follow-up that is too late by now; the first one on time stays (then paced).
        while index < len(steps) and epoch(now) - due > late_after:
            index += 1
            if index < len(steps):
                due += int(steps[index].delay_seconds)
        if index < len(steps):
            actions = [table.step_index.set(index), table.due_at.set(due)]
        else:
            actions = [
                table.step_index.set(index),
                table.state.set(EnrollmentState.FINISHED.value),
                table.state_reason.set(f"follow-ups skipped: {days} days late after the inbox reconnected"),
                table.due_inbox.remove(),
                table.due_at.remove(),
            ]
        outcome = "skipped"
    if not writes.update(enrollment, actions=actions, condition=unchanged):
        return None
    return outcome


def _pending_steps(models: Models, inbox_id: str) -> Iterator[Enrollment]:
    """The inbox's waiting steps, oldest first, from its due index: only active enrollments with a
    step waiting are on it, each with what the release needs (campaign, step, due time)."""
    return models.enrollment.due_index.query(inbox_id)
