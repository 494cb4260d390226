"""Each inbox's send schedule: when dispatch next looks at it (``Inbox.next_send_at``).

Dispatch schedules inboxes, not steps. An inbox sends one email per gap at most, so a backlog of
hundreds of due steps needs one decision per gap, not one write per waiting step per tick: the
steps stay as they are in the per-inbox due index, and only the inbox's ``next_send_at`` moves.
The sparse send index holds only inboxes that can send (``send_shard`` set), keyed by it.

``next_send_at`` is when dispatch looks at the inbox next. A send does not move it: the send claim
sets ``gap_until`` instead, the end of the gap, outside the index (moving the key would cost two
index writes per email). Dispatch finds the inbox ready again at the next tick; inside a short gap
it passes over it without a write, past a long one it moves it on. Dispatch also moves it on to
when the inbox can next send (its window opens, its cap resets, its next step is due); and
anything that makes a step due sooner or an inbox able to send again *wakes* it: brings
``next_send_at`` forward, never before the end of the gap.

An inbox that cannot send for a reason that only a person or a reconnect ends (disconnected,
paused, held) leaves the index; the reconnect, the resume or the end of the hold wakes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition

from sendwell import writes
from sendwell.clock import epoch
from sendwell.models import SEND_SHARDS, Inbox, Models

_WAKE_ATTEMPTS = 3  # each failed attempt means a send landed meanwhile, which reschedules the inbox


def send_shard(inbox_id: str) -> str:
    """The send-index partition of an inbox: stable, so every writer puts it in the same one."""
    return str(int(hashlib.blake2b(inbox_id.encode(), digest_size=2).hexdigest(), 16) % SEND_SHARDS)


def ready_inbox_ids(models: Models, *, now: datetime) -> Iterator[str]:
    """Every inbox whose ``next_send_at`` has come, oldest first within each shard (keys only)."""
    table = models.inbox
    for shard in range(SEND_SHARDS):
        for key in table.send_index.query(str(shard), table.next_send_at <= epoch(now)):
            yield key.inbox_id


def due_steps(models: Models, inbox_id: str, *, now: datetime) -> int:
    """How many of the inbox's steps are due by ``now`` (a count query: no items returned)."""
    return models.enrollment.due_index.count(inbox_id, models.enrollment.due_at <= epoch(now))


def wake(models: Models, inbox_id: str, *, at: datetime) -> bool:
    """Have dispatch look at the inbox by ``at`` (or at the end of its gap, if that is later).

    False when the inbox is gone. Conditional on the last send seen, so a send that lands
    between the read and the write is never undercut: the loop reads again and recomputes.
    """
    table = models.inbox
    for _ in range(_WAKE_ATTEMPTS):
        try:
            inbox = table.get(inbox_id, consistent_read=True)
        except DoesNotExist:
            return False
        target = max(epoch(at), int(inbox.gap_until or 0))  # never sooner than the claim allows
        if inbox.send_shard is not None and inbox.next_send_at is not None and int(inbox.next_send_at) <= target:
            return True  # already looked at by then
        same_send = (
            table.last_sent_at.does_not_exist()
            if inbox.last_sent_at is None
            else table.last_sent_at == inbox.last_sent_at
        )
        sooner = table.send_shard.does_not_exist() | table.next_send_at.does_not_exist() | (table.next_send_at > target)
        if writes.update(
            inbox,
            actions=[table.send_shard.set(send_shard(inbox_id)), table.next_send_at.set(target)],
            condition=same_send & sooner,
        ):
            return True
    return True  # the inbox kept changing under us: each change was a send, which reschedules it


def park(models: Models, inbox: Inbox, *, until: datetime) -> bool:
    """Look at the inbox again at ``until``; False when it changed since dispatch read it (a send
    or a wake got there first, and their ``next_send_at`` stands)."""
    table = models.inbox
    return writes.update(
        inbox,
        actions=[table.next_send_at.set(epoch(until))],
        condition=_unchanged(table, inbox),
    )


def leave(models: Models, inbox: Inbox) -> bool:
    """Take the inbox off the send index until something wakes it (reconnect, resume, hold over)."""
    table = models.inbox
    return writes.update(inbox, actions=[table.send_shard.remove()], condition=_unchanged(table, inbox))


def _unchanged(table: type[Inbox], inbox: Inbox) -> Condition:
    seen = inbox.next_send_at
    same: Condition = table.next_send_at.does_not_exist() if seen is None else table.next_send_at == seen
    unchanged: Condition = same & table.send_shard.exists()
    return unchanged
