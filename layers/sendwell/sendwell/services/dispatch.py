"""Dispatch: for each inbox whose turn has come, hand its next step, once, to the send queue.

Dispatch schedules inboxes, not steps (see ``sendwell.services.schedule``). Every minute the
scheduler lists the inboxes on the send index whose ``next_send_at`` has come and fans them out in
batches to dispatch workers, which run concurrently. For each inbox a worker reads its oldest due
steps from the per-inbox due index and either enqueues the one it may send now or moves the
inbox's ``next_send_at`` to when it can send: its window opens, its cap resets, its next step
becomes due. The waiting steps are never rewritten, so a backlog of any size costs one decision
per send, not a write per step per tick. A send does not move the inbox in the index (the claim
sets ``gap_until``): the next ticks find it ready and pass over it, without a write, until its gap
is over; only a gap longer than GAP_RECHECK_LIMIT is worth a move (a read a tick costs less than
the three write units of moving the key, up to about that many ticks).

Disconnected, reconnecting, paused and held inboxes leave the send index and are woken by the
reconnect, the resume or the end of the hold; their steps stay untouched, and the backlog release
after a reconnect decides when they go.

The send queue is SQS FIFO: group = inbox (one send at a time per inbox), deduplication id =
enrollment + step, so an inbox offered by two ticks before its send ran puts the step on the
queue once. The send function's claim is the second guard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sendwell import writes
from sendwell.batches import batched
from sendwell.clock import epoch
from sendwell.models import Campaign, Inbox, InboxStatus, Models
from sendwell.pacing import SendingWindow, next_send_time
from sendwell.ports.messages import QueuedMessage, SendRequest
from sendwell.ports.platform import MessageQueue
from sendwell.services import schedule
from sendwell.services.fan_out import SQS_BATCH
from sendwell.services.fan_out import fan_out as fan_out_ids
from sendwell.services.inbox_health import replies_are_current
from sendwell.services.limits import campaign_window, jitter_for, limits_of, usage_of
from sendwell.services.lookups import find_campaign
from sendwell.services.polling import POLL_INTERVAL, polling_scheduled

# Due steps read per inbox: enough to pass follow-ups held for replies and steps of campaigns whose
# window is shut, to reach one that may go. The rest wait their turn in the index, untouched.
STEP_LOOKAHEAD = 25
# An inbox with nothing waiting is looked at again this late; anything due sooner wakes it. Short
# enough that a wake lost to a fault delays a step by hours at most, not days.
IDLE_RECHECK = timedelta(hours=6)
# Follow-ups wait for polling to catch up; dispatch looks again after one poll interval.
REPLIES_RECHECK = POLL_INTERVAL
# An inbox inside its gap is read again each tick up to this long before its gap ends; past that,
# it is moved on to the end of its gap (a write of one unit and two index writes).
GAP_RECHECK_LIMIT = timedelta(minutes=10)
# Inboxes one worker message carries: a batch read (100 keys) and well inside the worker's timeout.
BATCH_SIZE = 100


@dataclass
class DispatchReport:
    inboxes: int = 0  # inboxes looked at
    enqueued: int = 0
    rescheduled: int = 0  # inboxes moved on to when they can next send
    in_gap: int = 0  # inboxes passed over, without a write, until the gap after their last send ends
    # How long after its turn came the most belated inbox of the batch was decided: the later of
    # its next_send_at and the end of its gap. Inboxes a tick never reaches are offered again, and
    # count when they are decided.
    lag_seconds: int = 0
    skipped_inboxes: dict[str, str] = field(default_factory=dict)  # inbox id -> why
    # Follow-ups held because the inbox's replies are not known to be current (polling is behind).
    held_for_replies: int = 0
    unfinished: int = 0  # inboxes left for the next tick: the worker ran out of time

    def merge(self, other: DispatchReport) -> None:
        self.inboxes += other.inboxes
        self.enqueued += other.enqueued
        self.rescheduled += other.rescheduled
        self.in_gap += other.in_gap
        self.lag_seconds = max(self.lag_seconds, other.lag_seconds)
        self.skipped_inboxes.update(other.skipped_inboxes)
        self.held_for_replies += other.held_for_replies
        self.unfinished += other.unfinished


def fan_out(models: Models, work: MessageQueue, *, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """The scheduler: put every inbox whose turn has come on the work queue, in batches, as the
    index is read. How many inboxes. An inbox offered twice (its batch not yet run when the next
    tick comes) is harmless: its step is deduplicated by the send queue and claimed once."""
    return fan_out_ids(work, schedule.ready_inbox_ids(models, now=now), batch_size=batch_size, body=",".join)


def inbox_ids_of(body: str) -> list[str]:
    return [inbox_id for inbox_id in body.split(",") if inbox_id]


def dispatch_inboxes(
    models: Models,
    queue: MessageQueue,
    inbox_ids: Iterable[str],
    *,
    now: datetime,
    time_left: Callable[[], float] | None = None,
    chunk: int = BATCH_SIZE,
) -> DispatchReport:
    """The worker: decide each inbox's next send. Sends go on the queue as they are decided. The
    inboxes are read ``chunk`` at a time; once ``time_left()`` (seconds) runs short, the chunks not
    started stay ready for the next tick (the first is always done: every run makes progress)."""
    report = DispatchReport()
    outgoing: list[QueuedMessage] = []
    campaigns: dict[str, Campaign | None] = {}
    ids = list(dict.fromkeys(inbox_ids))
    for position, some in enumerate(batched(ids, chunk)):
        if position and time_left is not None and time_left() < 5:
            report.unfinished += len(ids) - position * chunk
            break
        for inbox in models.inbox.batch_get(list(some)):
            report.inboxes += 1
            request = _dispatch_inbox(models, inbox, campaigns, report, now)
            if request is not None:
                outgoing.append(request.to_message())
                if len(outgoing) == SQS_BATCH:
                    _enqueue(queue, outgoing, report)
                    outgoing = []
    _enqueue(queue, outgoing, report)
    return report


def dispatch_due_steps(models: Models, queue: MessageQueue, *, now: datetime) -> DispatchReport:
    """One tick in one process: every inbox whose turn has come (tests, the local demo, benches)."""
    return dispatch_inboxes(models, queue, schedule.ready_inbox_ids(models, now=now), now=now)


def _enqueue(queue: MessageQueue, messages: Sequence[QueuedMessage], report: DispatchReport) -> None:
    queue.send_batch(messages)
    report.enqueued += len(messages)


def _dispatch_inbox(
    models: Models, inbox: Inbox, campaigns: dict[str, Campaign | None], report: DispatchReport, now: datetime
) -> SendRequest | None:
    if inbox.status == InboxStatus.CONNECTED and inbox.poll_slot is None:
        # Off the poll index (a row from before poll slots, or a placement lost to a fault): from
        # here it is polled again, as a poll puts an inbox that can send back on the send index.
        table = models.inbox
        writes.update(inbox, actions=polling_scheduled(table), condition=table.poll_slot.does_not_exist())
    why_not = _why_inbox_cannot_send(inbox, now)
    if why_not:
        report.skipped_inboxes[inbox.inbox_id] = why_not
        if inbox.rate_limited_until is not None and inbox.rate_limited_until > now:
            schedule.park(models, inbox, until=inbox.rate_limited_until)
        else:
            schedule.leave(models, inbox)  # its reconnect, resume or the end of its hold wakes it
        return None
    gap_until = int(inbox.gap_until or 0)
    if gap_until > epoch(now):
        if gap_until - epoch(now) > GAP_RECHECK_LIMIT.total_seconds():
            _reschedule(models, inbox, datetime.fromtimestamp(gap_until, now.tzinfo), report)
        else:
            report.in_gap += 1
        return None
    turn = max(int(inbox.next_send_at or epoch(now)), gap_until)
    report.lag_seconds = max(report.lag_seconds, epoch(now) - turn)
    due = models.enrollment.due_index
    steps = list(due.query(inbox.inbox_id, models.enrollment.due_at <= epoch(now), limit=STEP_LOOKAHEAD))
    if not steps:
        later = next(iter(due.query(inbox.inbox_id, limit=1)), None)
        until = datetime.fromtimestamp(int(later.due_at), now.tzinfo) if later and later.due_at else now + IDLE_RECHECK
        _reschedule(models, inbox, until, report)
        return None
    usage, limits = usage_of(inbox, now), limits_of(inbox)
    replies_current = replies_are_current(inbox, now=now, poll_interval=POLL_INTERVAL)
    soonest: datetime | None = None
    for step in steps:
        window = _window(models, campaigns, step.campaign_id)
        if int(step.step_index) > 0 and not replies_current:
            report.held_for_replies += 1
            soonest = _earlier(soonest, now + REPLIES_RECHECK)
            continue
        jitter = jitter_for(f"{step.enrollment_id}:{step.step_index}")
        # A step whose campaign is gone goes to the send function, which stops it (nothing is sent).
        slot = now if window is None else next_send_time(now, window=window, limits=limits, usage=usage, jitter=jitter)
        if slot <= now:
            return SendRequest(
                enrollment_id=step.enrollment_id,
                step_index=int(step.step_index),
                inbox_id=inbox.inbox_id,
                local_day=usage.day.isoformat(),
                min_gap_seconds=int(limits.gap(jitter).total_seconds()),
                campaign_id=step.campaign_id,
                inbox_address=inbox.address,
                timezone=limits.tz,
            )
        soonest = _earlier(soonest, slot)
    _reschedule(models, inbox, soonest or now + REPLIES_RECHECK, report)
    return None


def _reschedule(models: Models, inbox: Inbox, until: datetime, report: DispatchReport) -> None:
    # False: a send or a wake moved it meanwhile, and theirs stands.
    if schedule.park(models, inbox, until=until):
        report.rescheduled += 1


def _window(models: Models, campaigns: dict[str, Campaign | None], campaign_id: str) -> SendingWindow | None:
    if campaign_id not in campaigns:  # read once per worker run: campaigns change rarely
        campaigns[campaign_id] = find_campaign(models, campaign_id)
    campaign = campaigns[campaign_id]
    return campaign_window(campaign) if campaign else None


def _earlier(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None else min(current, candidate)


def _why_inbox_cannot_send(inbox: Inbox, now: datetime) -> str | None:
    if inbox.status != InboxStatus.CONNECTED:
        return f"inbox {inbox.status}"
    if inbox.paused:
        return "inbox paused"
    if inbox.held_since is not None:
        return "inbox held while a permission loss is checked"
    if inbox.rate_limited_until and inbox.rate_limited_until > now:
        return "provider sending limit"
    return None
