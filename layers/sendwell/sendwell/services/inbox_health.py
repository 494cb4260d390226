"""The watches the reminders function keeps on an inbox (see ``attention``): a long spell of
transient failures while it stays connected ("degraded"), and a reconnect still unfinished.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from pynamodb.expressions.update import Action

from sendwell.clock import epoch
from sendwell.models import POLL_SHARDS, Inbox

DEGRADED_AFTER = timedelta(hours=24)
# A poll that finds nothing new writes nothing, except that a working inbox's ``last_polled_at`` is
# written at least this often: an idle poll costs no write most of the time.
POLL_HEARTBEAT = timedelta(minutes=30)
# Replies are known to be current while no poll has failed since the last success, and that success
# is at most the heartbeat and this many poll intervals old; follow-ups wait otherwise (a reply may
# be sitting unread). A failed poll is written at once, so a failing inbox holds its follow-ups
# from its first failure; the age only catches polling that stopped running altogether.
REPLIES_CURRENT_INTERVALS = 2
# The attention index is spread over partitions like the poll index.
ATTENTION_SHARDS = POLL_SHARDS
# The reconnect worker finishes a reconnect within a minute or two; one still unfinished after
# this long lost its task (or the task keeps failing), and the reminders function queues it again.
RECONNECT_GRACE = timedelta(minutes=15)


def degraded_watch(table: type[Inbox], *, now: datetime, after: timedelta = DEGRADED_AFTER) -> list[Action]:
    """Update actions for the first transient failure of a spell (``transient_since`` unset).

    Polls and sends add these to their own update; a success removes ``transient_since`` (the
    reminders function then takes the inbox off the attention index by itself).
    """
    return [
        table.transient_since.set(now),
        table.attention_shard.set(str(secrets.randbelow(ATTENTION_SHARDS))),
        table.attention_at.set(epoch(now + after)),
    ]


def replies_are_current(inbox: Inbox, *, now: datetime, poll_interval: timedelta) -> bool:
    """Whether the inbox's polls are working, recently enough to send it a follow-up."""
    last = inbox.last_polled_at
    if last is None or inbox.poll_failed_at is not None:
        return False
    return now - last <= POLL_HEARTBEAT + poll_interval * REPLIES_CURRENT_INTERVALS


def reconnect_watch(table: type[Inbox], *, now: datetime) -> list[Action]:
    """Update actions that have the reminders function look again at an unfinished reconnect."""
    return [
        table.attention_shard.set(str(secrets.randbelow(ATTENTION_SHARDS))),
        table.attention_at.set(epoch(now + RECONNECT_GRACE)),
    ]
