"""Dispatch: find due steps and hand each one, once, to the send queue.

Runs every minute. For every inbox with due steps it enqueues at most the one step the inbox may
send now (the minimum gap between sends is at least a minute in practice), and re-times steps
that cannot go now (window closed, daily cap reached) to the instant they can: never dropped.
Disconnected, reconnecting and paused inboxes are skipped without touching their steps, so the
reconnect can re-time the whole backlog at once.

The queue is SQS FIFO: group = inbox (one send at a time per inbox), deduplication id =
enrollment + step, so overlapping ticks put each step on the queue once. The send function's
claim is the second guard, for ticks more than the FIFO deduplication window apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.clock import epoch
from sendwell.models import DUE_SHARDS, Enrollment, Inbox, InboxStatus, Models
from sendwell.pacing import SendingWindow, next_send_time
from sendwell.ports.messages import QueuedMessage, SendRequest
from sendwell.ports.platform import MessageQueue
from sendwell.services.inbox_health import replies_are_current
from sendwell.services.limits import campaign_window, jitter_for, limits_of, usage_of
from sendwell.services.lookups import find_campaign
from sendwell.services.polling import POLL_INTERVAL


@dataclass
class DispatchReport:
    due: int = 0
    enqueued: int = 0
    retimed: int = 0
    waiting: int = 0  # due, but the inbox's gap or an earlier step comes first
    skipped_inboxes: dict[str, str] = field(default_factory=dict)  # inbox id -> why
    # For ops: the oldest due step an inbox that may send has not sent (dispatch lag), and the due
    # steps held by disconnected or reconnecting inboxes (they wait for the reconnect, by design).
    oldest_due_at: int | None = None
    disconnected_backlog: int = 0
    # Follow-ups held because the inbox's replies are not known to be current (polling is behind).
    held_for_replies: int = 0

    def lag_seconds(self, now: datetime) -> int:
        return 0 if self.oldest_due_at is None else max(0, epoch(now) - self.oldest_due_at)

    def note_still_due(self, step: Enrollment) -> None:
        due = int(step.due_at or 0)
        self.oldest_due_at = due if self.oldest_due_at is None else min(self.oldest_due_at, due)


def _due_steps(models: Models, now: datetime, per_shard: int) -> Iterator[Enrollment]:
    for shard in range(DUE_SHARDS):
        yield from models.enrollment.due_index.query(
            str(shard), models.enrollment.due_at <= epoch(now), limit=per_shard
        )


def dispatch_due_steps(models: Models, queue: MessageQueue, *, now: datetime, per_shard: int = 1000) -> DispatchReport:
    report = DispatchReport()
    by_inbox: dict[str, list[Enrollment]] = defaultdict(list)
    for step in _due_steps(models, now, per_shard):
        by_inbox[step.inbox_id].append(step)
        report.due += 1

    windows: dict[str, SendingWindow | None] = {}  # per campaign, read and parsed once per tick
    outgoing: list[QueuedMessage] = []
    for inbox_id, steps in by_inbox.items():
        inbox = _inbox(models, inbox_id)
        why_not = _why_inbox_cannot_send(inbox, now)
        if why_not:
            report.skipped_inboxes[inbox_id] = why_not
            if inbox is not None and inbox.status in (InboxStatus.DISCONNECTED, InboxStatus.RECONNECTING):
                report.disconnected_backlog += len(steps)
            continue
        assert inbox is not None
        usage = usage_of(inbox, now)
        limits = limits_of(inbox)
        replies_current = replies_are_current(inbox, now=now, poll_interval=POLL_INTERVAL)
        chosen = False
        for step in sorted(steps, key=lambda s: (s.due_at or 0, s.enrollment_id)):
            if step.campaign_id not in windows:
                campaign = find_campaign(models, step.campaign_id)
                windows[step.campaign_id] = campaign_window(campaign) if campaign else None
            window = windows[step.campaign_id]
            if window is None:
                continue
            if int(step.step_index) > 0 and not replies_current:
                report.held_for_replies += 1
                report.note_still_due(step)
                continue
            jitter = jitter_for(f"{step.enrollment_id}:{step.step_index}")
            slot = next_send_time(now, window=window, limits=limits, usage=usage, jitter=jitter)
            if slot <= now and not chosen:
                request = SendRequest(
                    enrollment_id=step.enrollment_id,
                    step_index=int(step.step_index),
                    inbox_id=inbox_id,
                    local_day=usage.day.isoformat(),
                    min_gap_seconds=int(limits.gap(jitter).total_seconds()),
                    campaign_id=step.campaign_id,
                    inbox_address=inbox.address,
                    timezone=limits.tz,
                )
                outgoing.append(request.to_message())
                chosen = True
                report.note_still_due(step)
            elif slot > now and _retime(models, step, slot):
                report.retimed += 1
            else:
                report.waiting += 1
                report.note_still_due(step)
    queue.send_batch(outgoing)
    report.enqueued = len(outgoing)
    return report


def _why_inbox_cannot_send(inbox: Inbox | None, now: datetime) -> str | None:
    if inbox is None:
        return "inbox deleted"
    if inbox.status != InboxStatus.CONNECTED:
        return f"inbox {inbox.status}"
    if inbox.paused:
        return "inbox paused"
    if inbox.held_since is not None:
        return "inbox held while a permission loss is checked"
    if inbox.rate_limited_until and inbox.rate_limited_until > now:
        return "provider sending limit"
    return None


def _inbox(models: Models, inbox_id: str) -> Inbox | None:
    try:
        return models.inbox.get(inbox_id)
    except DoesNotExist:
        return None


def _retime(models: Models, step: Enrollment, slot: datetime) -> bool:
    """Move a due step to the instant it may go, unless something else changed it meanwhile."""
    if slot.timestamp() - (step.due_at or 0) < 60:
        return False  # it becomes sendable within a tick anyway: leave it, save the write
    # False: the send function or a reply got there first.
    return writes.update(
        step,
        actions=[models.enrollment.due_at.set(epoch(slot))],
        condition=(models.enrollment.due_at == step.due_at) & (models.enrollment.step_index == step.step_index),
    )
