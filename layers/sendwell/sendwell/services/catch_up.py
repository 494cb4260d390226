"""Finish a reconnect, in the reconnect worker: catch up, release the backlog, connect, tell people.

The owner's page answered as soon as the new credentials were stored (``services.reconnect``).
The inbox is ``reconnecting`` then (dispatch sends nothing from it) and names the link used in
``reconnect_link``. From that durable state, never from what one invocation remembers:

1. the mailbox is polled from the last successful poll, or from the failure if that is earlier:
   a prospect who replied or bounced meanwhile is stopped before any follow-up;
2. the backlog is released as the link says (paced, immediate or held); it is held when the
   catch-up could not run;
3. the inbox moves to ``connected``, back on the poll index, with what 1 and 2 did
   (``reconnect_outcome``), in one conditional write; then back on the send index, from its
   backlog's first slot (unless the backlog is held);
4. the campaigns' flags, the activity log and the notices (each once);
5. ``reconnect_link`` is cleared: the reconnect is done.

Every step is safe to repeat. A task that fails is delivered again by SQS; one that was never
queued, or that ended in the dead-letter queue, is queued again by the reminders function
(``attention``), which looks at every inbox whose reconnect is unfinished after RECONNECT_GRACE.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.models import BacklogMode, Inbox, InboxStatus, Models, ReconnectLink
from sendwell.ports.messages import ReconnectTask
from sendwell.ports.platform import EventPublisher, Mailer, Once
from sendwell.services import schedule
from sendwell.services.backlog import BacklogRelease, release_backlog
from sendwell.services.lookups import campaigns_on
from sendwell.services.polling import PollContext, poll_inbox, polling_scheduled
from sendwell.services.reconnected import CaughtUp, Reconnected, ReconnectOutcome, log_reconnect, send_notices


@dataclass(frozen=True, slots=True)
class CatchUpContext:
    models: Models
    poll: PollContext  # the catch-up poll
    mailer: Mailer
    events: EventPublisher
    once: Once
    workspace_name: str
    admin_emails: tuple[str, ...]


def finish_reconnect(ctx: CatchUpContext, task: ReconnectTask, *, now: datetime) -> Reconnected | None:
    """Finish the reconnect ``task`` names; None when there is nothing (more) to do.

    Nothing to do: the inbox was deleted, that reconnect is finished, a newer one replaced it (its
    own task finishes it), or the inbox disconnected again before the worker came.
    """
    models = ctx.models
    try:
        inbox = models.inbox.get(task.inbox_id, consistent_read=True)
    except DoesNotExist:
        return None
    if inbox.reconnect_link != task.link_hash:
        return None
    try:
        link = models.link.get(task.link_hash, consistent_read=True)
    except DoesNotExist:
        _finish(models, inbox, task)  # the link is gone (TTL): nobody left to report to
        return None
    if inbox.reconnect_outcome is None and inbox.status == InboxStatus.RECONNECTING:
        outcome = _catch_up(ctx, inbox, link, task, now)
        if outcome is None:
            return None
    elif inbox.reconnect_outcome is not None and inbox.status == InboxStatus.CONNECTED:
        outcome = ReconnectOutcome.from_json(inbox.reconnect_outcome)  # connected by an earlier try
    else:
        _finish(models, inbox, task)
        return None
    if not outcome.backlog.held:
        schedule.wake(models, inbox.inbox_id, at=outcome.backlog.first_slot or now)
    campaigns = campaigns_on(models, inbox.inbox_id)
    for campaign in campaigns:
        if campaign.disconnected_inbox_ids and inbox.inbox_id in campaign.disconnected_inbox_ids:
            writes.update(
                campaign, actions=[models.campaign.disconnected_inbox_ids.delete({inbox.inbox_id})], condition=None
            )
    result = Reconnected(
        inbox=inbox, link=link, workspace_name=ctx.workspace_name, outcome=outcome, at=inbox.reconnected_at or now
    )
    log_reconnect(models, result, campaigns, now)
    send_notices(ctx, result)  # raises when a notice can't go out now: SQS delivers the task again
    _finish(models, inbox, task)
    return result


def _catch_up(
    ctx: CatchUpContext, inbox: Inbox, link: ReconnectLink, task: ReconnectTask, now: datetime
) -> ReconnectOutcome | None:
    """Steps 1 to 3; the outcome stored with the move to connected, or None if the inbox changed."""
    caught_up = poll_inbox(ctx.poll, inbox, now=now, since=inbox.failed_at)
    if caught_up.failure is None:
        backlog = release_backlog(ctx.models, inbox, BacklogMode(link.backlog_mode), now=now)
    else:
        # Without the catch-up a prospect who replied could get a follow-up: hold instead.
        backlog = BacklogRelease(mode=BacklogMode.HOLD, held=True)
    outcome = ReconnectOutcome(caught_up=CaughtUp.of(caught_up), backlog=backlog)
    table = ctx.models.inbox
    actions: list[Any] = [
        table.status.set(InboxStatus.CONNECTED.value),
        table.status_code.remove(),
        table.status_reason.remove(),
        table.status_fix.remove(),
        table.failed_at.remove(),
        table.incident_id.remove(),
        table.reminders_sent.set(0),
        table.reconnect_outcome.set(outcome.to_json()),
        *polling_scheduled(table),
    ]
    if backlog.held:
        actions.append(table.paused.set(True))
    condition = (table.status == InboxStatus.RECONNECTING.value) & (table.reconnect_link == task.link_hash)
    if writes.update(inbox, actions=actions, condition=condition):
        return outcome
    # A retried write finds its own effect (or a twin task's): connected, with this link's outcome.
    inbox.refresh(consistent_read=True)
    if inbox.status == InboxStatus.CONNECTED and inbox.reconnect_link == task.link_hash and inbox.reconnect_outcome:
        return ReconnectOutcome.from_json(inbox.reconnect_outcome)
    return None  # a newer reconnect replaced this one, or the inbox was changed meanwhile


def _finish(models: Models, inbox: Inbox, task: ReconnectTask) -> None:
    """This reconnect needs nothing more. Its attention entry stays: the reminders function clears
    it when due, or reminds, if the inbox disconnected again meanwhile."""
    table = models.inbox
    writes.update(
        inbox,
        actions=[table.reconnect_link.remove(), table.reconnect_outcome.remove()],
        condition=table.reconnect_link == task.link_hash,
    )
