"""Release an inbox's backlog after a reconnect: paced within its limits, immediate, or held.

Follow-ups that became too late while the inbox was down are skipped or held first, as the
campaign's ``late_policy`` says. Every re-timing is a conditional write on the step it saw, so a
step sent, stopped or re-timed meanwhile keeps its own state. Each paced step records the reconnect
it was paced for (``paced_for``): a release run again after a fault keeps those slots and paces
the rest after them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
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
    released: int = 0  # pending steps re-timed (paced) or left due now (immediate)
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
    """Re-time this inbox's pending steps after a reconnect, as ``mode`` says.

    Follow-ups more than the campaign's ``late_after_seconds`` late are skipped or held first
    (``late_policy``). Then ``paced`` spreads the remaining due steps over the inbox's sending
    window, gap and daily cap (oldest first); ``immediate`` leaves them due now, so dispatch
    sends them as fast as the limits allow; ``hold`` touches nothing and keeps the inbox paused.
    """
    if mode is BacklogMode.HOLD:
        return BacklogRelease(mode=mode, held=True)
    campaigns: dict[str, Campaign | None] = {}
    late = Counter[str]()
    due_now: list[tuple[Enrollment, Campaign]] = []
    release = epoch(inbox.reconnected_at or now)
    paced_before: list[datetime] = []  # slots an earlier run of this same release gave
    for enrollment in _pending_enrollments(models, inbox.inbox_id):
        if enrollment.paced_for == release and (enrollment.due_at or 0) > epoch(now):
            paced_before.append(datetime.fromtimestamp(int(enrollment.due_at or 0), UTC))
            continue
        if enrollment.campaign_id not in campaigns:
            campaigns[enrollment.campaign_id] = find_campaign(models, enrollment.campaign_id)
        campaign = campaigns[enrollment.campaign_id]
        if campaign is None:
            continue
        outcome = _handle_late(models, campaign, enrollment, now)
        if outcome:
            late[outcome] += 1
        # A skip moves on to the next follow-up, which may be due already (the update refreshed it).
        due = enrollment.due_at
        if enrollment.state == EnrollmentState.ACTIVE and due is not None and due <= epoch(now):
            due_now.append((enrollment, campaign))
    if mode is BacklogMode.IMMEDIATE:
        return BacklogRelease(mode, released=len(due_now), late_skipped=late["skipped"], late_held=late["held"])
    slots = paced_before + _pace(models, inbox, due_now, now, release=release, taken=sorted(paced_before))
    return BacklogRelease(
        mode,
        released=len(slots),
        first_slot=min(slots, default=None),
        last_slot=max(slots, default=None),
        late_skipped=late["skipped"],
        late_held=late["held"],
    )


def _pace(
    models: Models,
    inbox: Inbox,
    due_now: list[tuple[Enrollment, Campaign]],
    now: datetime,
    *,
    release: int,
    taken: list[datetime],
) -> list[datetime]:
    """Give each due step its send slot, after the ``taken`` ones; steps of campaigns with another
    window queue after, in turn."""
    limits = limits_of(inbox)
    usage: InboxUsage = usage_of(inbox, now)
    for slot in taken:
        usage = record_send(usage, slot, limits.tz)
    groups: dict[SendingWindow, list[Enrollment]] = {}
    for enrollment, campaign in sorted(due_now, key=lambda pair: (pair[0].due_at or 0, pair[0].enrollment_id)):
        groups.setdefault(campaign_window(campaign), []).append(enrollment)
    slots: list[datetime] = []
    table = models.enrollment
    for window, group in groups.items():
        jitters = [jitter_for(f"{e.enrollment_id}:{e.step_index}") for e in group]
        group_slots = pace_backlog(now, len(group), window=window, limits=limits, usage=usage, jitters=jitters)
        for enrollment, slot in zip(group, group_slots, strict=True):
            if not writes.update(
                enrollment,
                actions=[table.due_at.set(epoch(slot)), table.paced_for.set(release)],
                condition=(table.step_index == enrollment.step_index)
                & (table.due_at == enrollment.due_at)
                & (table.state == EnrollmentState.ACTIVE.value),
            ):
                continue  # it was sent, stopped or re-timed meanwhile: its own state wins
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


def _pending_enrollments(models: Models, inbox_id: str) -> list[Enrollment]:
    """Active enrollments of the inbox with a step waiting (the by-inbox index is keys only)."""
    keys = [key.enrollment_id for key in models.enrollment.inbox_index.query(inbox_id)]
    found = models.enrollment.batch_get(keys, consistent_read=True)
    return [e for e in found if e.state == EnrollmentState.ACTIVE and e.due_at is not None]
