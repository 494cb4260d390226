"""What a bounce, a sender-side block or a complaint does to the enrollment, the address and the inbox.

- **Recipient gone** (hard bounce): the address is suppressed everywhere, and the sequence stops.
- **Mailbox unable for now** (soft bounce): the step goes out again later, under a new Message-ID;
  past ``MAX_SOFT_BOUNCES`` over the sequence the address is treated as gone.
- **Sender-side block** (spam, policy, authentication, reputation, PTR, relay): the prospect did
  nothing wrong and is never marked bounced. The step goes out again later from the same inbox;
  past ``MAX_SENDER_BLOCKS`` the enrollment is held for an admin. Every block counts against the
  inbox: past ``BLOCK_PAUSE_MIN`` blocks and ``BLOCK_PAUSE_RATE`` of the day's sends, sendwell
  pauses the inbox and tells the admins, once a day at most.
- **Complaint**: the address is suppressed everywhere, and the sequence stops.

Each decision is made from the stored enrollment and written with a condition on what was read,
so a replayed poll, or a catch-up that reads the same mail days later, acts once: the bounce's own
Message-ID is kept on the enrollment (``returned_by``) when it sends a step back.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sendwell import writes
from sendwell.clock import epoch
from sendwell.ids import StepRef
from sendwell.models import Enrollment, EnrollmentState, Inbox, Models
from sendwell.ports.platform import EventPublisher, Mailer, Once
from sendwell.services import activity, notices, schedule
from sendwell.services.limits import usage_of

MAX_SOFT_BOUNCES = 3  # sends of a sequence a full or suspended mailbox may return before it counts as gone
MAX_SENDER_BLOCKS = 3  # sends of a sequence a block may return before a person looks
# When a returned step goes out again: the first soft bounce soon (a full mailbox is often emptied
# within hours), later ones after longer waits; a block waits a day for the inbox's standing.
SOFT_RETRY_AFTER = (timedelta(hours=4), timedelta(hours=24), timedelta(hours=72))
BLOCK_RETRY_AFTER = timedelta(hours=24)
BLOCK_PAUSE_MIN = 5  # blocks on one inbox-local day before the rate is looked at at all
BLOCK_PAUSE_RATE = 0.1  # ... and this share of the day's sends


class _Context(Protocol):
    """What acting on a bounce needs; the poll context fits."""

    @property
    def models(self) -> Models: ...
    @property
    def events(self) -> EventPublisher: ...
    @property
    def once(self) -> Once: ...
    @property
    def mailer(self) -> Mailer | None: ...
    @property
    def admin_emails(self) -> Sequence[str]: ...
    @property
    def workspace_name(self) -> str: ...


class Returned(enum.StrEnum):
    """What a soft bounce or a block did to its enrollment."""

    RESENT_LATER = "resent_later"  # the step goes out again later
    NOTED = "noted"  # a later step went out meanwhile, or nothing was sent yet: only counted
    ALREADY = "already"  # this bounce was acted on before (a replayed poll)
    GONE = "gone"  # soft bounces ran out: the address is treated as gone
    HELD = "held"  # blocks ran out: held for an admin
    STOPPED = "stopped"  # the enrollment had stopped: nothing to send again


@dataclass(frozen=True, slots=True)
class Bounce:
    """One returned message, as the classifier read it."""

    key: str  # the bounce's own Message-ID, else the provider's id: one key per bounce
    step: StepRef | None  # the send it names, when it names one of ours
    status: str | None
    diagnostic: str | None
    at: datetime

    def detail(self) -> str:
        return " ".join(filter(None, [self.status, self.diagnostic]))[:300]


def send_back(models: Models, enrollment: Enrollment, bounce: Bounce, *, blocked: bool) -> Returned:
    """Count a soft bounce (``blocked`` False) or a sender-side block against ``enrollment`` and,
    when the step it returned is the latest one sent, schedule that step again.

    Conditional on the enrollment as read: a concurrent change (a reply, a send) makes it read
    again and decide anew; a bounce already counted (its key in ``returned_by``) changes nothing.
    """
    table = models.enrollment
    for _ in range(3):
        if bounce.key in enrollment.returned_by:
            return Returned.ALREADY
        if enrollment.state not in (EnrollmentState.ACTIVE, EnrollmentState.FINISHED) or (
            enrollment.state == EnrollmentState.FINISHED and enrollment.state_reason
        ):
            return Returned.STOPPED  # replied, bounced, held, skipped: stopped for a reason of its own
        counter = table.sender_blocks if blocked else table.soft_bounces
        count = int(enrollment.sender_blocks if blocked else enrollment.soft_bounces) + 1
        last_sent = int(enrollment.step_index) - 1
        named = bounce.step.step_index if bounce.step else last_sent
        # A report on an earlier delivery of the step (a late second report on a copy already sent
        # again) sends nothing back: the latest copy may well arrive.
        stale = bounce.step is not None and bounce.step.attempt != int(enrollment.sent_attempt)
        if last_sent < 0 or named != last_sent or stale:
            actions: list[Any] = [
                counter.set(count),
                table.returned_by.set((table.returned_by | []).append([bounce.key])),
            ]
            outcome = Returned.NOTED
        elif count > (MAX_SOFT_BOUNCES if not blocked else MAX_SENDER_BLOCKS):
            if not blocked:
                return Returned.GONE  # the caller suppresses and stops it: both done once anyway
            actions = [
                counter.set(count),
                table.returned_by.set((table.returned_by | []).append([bounce.key])),
                table.state.set(EnrollmentState.PAUSED.value),
                table.state_reason.set(f"refused {count} times because of the sending inbox: {bounce.detail()}"[:500]),
                table.due_inbox.remove(),
                table.due_at.remove(),
            ]
            outcome = Returned.HELD
        else:
            retries = int(enrollment.soft_bounces) + int(enrollment.sender_blocks) + 1
            wait = BLOCK_RETRY_AFTER if blocked else SOFT_RETRY_AFTER[min(count, len(SOFT_RETRY_AFTER)) - 1]
            actions = [
                counter.set(count),
                table.returned_by.set((table.returned_by | []).append([bounce.key])),
                table.step_index.set(last_sent),
                # Unique among the step's deliveries: one more than every retry of the sequence.
                table.step_attempt.set(retries),
                table.state.set(EnrollmentState.ACTIVE.value),
                table.due_inbox.set(enrollment.inbox_id),
                table.due_at.set(epoch(bounce.at + wait)),
            ]
            outcome = Returned.RESENT_LATER
        same_count = counter == count - 1
        if count == 1:
            same_count = same_count | counter.does_not_exist()  # enrollments stored before the counter
        unchanged = (
            (table.step_index == enrollment.step_index)
            & (table.state == enrollment.state)
            & same_count
            & ~table.returned_by.contains(bounce.key)
        )
        if outcome is Returned.RESENT_LATER:
            # Before the step is written: a crash in between leaves the inbox looked at once for
            # nothing, never a step no tick looks at (a replay finds the bounce counted and stops).
            schedule.wake(models, enrollment.inbox_id, at=bounce.at + wait)
        if writes.update(enrollment, actions=actions, condition=unchanged):
            return outcome
        enrollment = models.enrollment.get(enrollment.enrollment_id, consistent_read=True)
    raise writes.WriteNotDone(f"{enrollment.enrollment_id} kept changing while a bounce was recorded")


# --- the inbox's side of a block ----------------------------------------------------------------


def count_block(ctx: _Context, inbox: Inbox, bounce: Bounce, *, new: bool) -> bool:
    """Count one sender-side block against the inbox (``new``: not counted before) and pause the
    inbox when the day's blocks pass the threshold. True when this call paused it.

    The counter is per inbox-local day, beside the day's sends (``sent_today``): blocks arriving
    before the day's first send count against none, which errs on the side of pausing an inbox
    that is being refused. A replayed block is not counted again, but the threshold is looked at
    again: the pause and its notice, cut short by a fault, are finished then.
    """
    table = ctx.models.inbox
    usage = usage_of(inbox, bounce.at)
    day = usage.day.isoformat()
    if new:
        same_day = inbox.block_day == day and writes.update(
            inbox, actions=[table.blocks_today.add(1)], condition=table.block_day == day
        )
        first = (table.block_day != day) | table.block_day.does_not_exist()
        if not same_day and not writes.update(
            inbox, actions=[table.block_day.set(day), table.blocks_today.set(1)], condition=first
        ):
            # Another poll started the day meanwhile: add to its count.
            writes.update(inbox, actions=[table.blocks_today.add(1)], condition=table.block_day == day)
    blocks = int(inbox.blocks_today) if inbox.block_day == day else 0
    if blocks < BLOCK_PAUSE_MIN or blocks < BLOCK_PAUSE_RATE * usage.sent_today:
        return False
    return _pause_for_blocks(ctx, inbox, bounce, blocks=blocks, sent=usage.sent_today, day=day)


def _pause_for_blocks(ctx: _Context, inbox: Inbox, bounce: Bounce, *, blocks: int, sent: int, day: str) -> bool:
    table = ctx.models.inbox
    reason = (
        f"{blocks} messages from this inbox were refused today as coming from a blocked sender "
        f"(of {sent} sent); the last said: {bounce.detail() or 'no reason given'}"
    )
    paused = False
    if not inbox.paused:
        paused = writes.update(
            inbox,
            actions=[table.paused.set(True), table.paused_reason.set(reason[:500])],
            condition=table.paused == False,  # noqa: E712 - a DynamoDB condition, not a comparison
        )
        if not paused:
            inbox.refresh(consistent_read=True)  # our own write, its answer lost, or an admin's pause
            if not (inbox.paused and inbox.paused_reason):
                return False  # an admin paused it: nothing for us to say
    elif not inbox.paused_reason:
        return False
    activity.record(
        ctx.models,
        now=bounce.at,
        kind="inbox.paused_for_blocks",
        message=f"Sending paused by sendwell: {reason}",
        inbox_id=inbox.inbox_id,
        dedup=f"blocked.{day}",
    )
    key = f"blocked:{inbox.inbox_id}:{day}"
    ctx.once.run(f"{key}:sns", partial(_publish_paused, ctx, inbox, reason, bounce.at, key))
    if ctx.mailer is not None and ctx.admin_emails:
        email = notices.blocked(
            workspace=ctx.workspace_name,
            inbox=inbox,
            blocks=blocks,
            sent=sent,
            last_reason=bounce.detail(),
            paused_at=bounce.at,
            to=list(ctx.admin_emails),
        )
        ctx.once.run(f"{key}:email", partial(ctx.mailer.send, email))
    return paused


def _publish_paused(ctx: _Context, inbox: Inbox, reason: str, at: datetime, key: str) -> str:
    ctx.events.publish(
        "inbox.paused",
        {"inbox_id": inbox.inbox_id, "address": inbox.address, "reason": reason, "at": at.isoformat()},
        dedup_key=key,
    )
    return "published"
