"""What the scheduled reminders function attends to: a reconnect left unfinished (its task is
queued again), reminders while an inbox stays disconnected, one "degraded" notice when it has
failed with transient errors for long, and expired links.

Each inbox is looked at on its own, from its stored state: a notice goes out once per incident,
reminder and recipient (``Once``), and the inbox is advanced only after it went out.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from sendwell import writes
from sendwell.clock import epoch
from sendwell.models import Inbox, InboxStatus, LinkState, Models
from sendwell.ports.messages import ReconnectTask
from sendwell.ports.platform import MessageQueue, NoticeContext
from sendwell.services import activity, notices
from sendwell.services.auth_failures import IncidentContext, notify_incident
from sendwell.services.inbox_health import ATTENTION_SHARDS, reconnect_watch


class Attention(enum.StrEnum):
    REQUEUED = "requeued"  # a reconnect still unfinished: its task is queued again
    REMINDED = "reminded"
    DEGRADED = "degraded"
    RESCHEDULED = "rescheduled"  # looked at too early: due again later
    CLEARED = "cleared"  # nothing (more) to say: taken off the attention index
    SKIPPED = "skipped"  # changed while we looked (reconnected, another run): nothing done


def attend_all(
    ctx: IncidentContext,
    reconnect_tasks: MessageQueue,
    *,
    now: datetime,
    retry_next_run: tuple[type[Exception], ...],
    on_failure: Callable[[str, str | None, Exception], None],
) -> Counter[str]:
    """Attend to every inbox that is due, then to expired links; counts of each outcome.

    An error of ``retry_next_run`` (the notice's services failing, another run busy with the same
    notice) is handed to ``on_failure`` and counted; the next run sends only what is still missing.
    Anything else is a bug and fails the invocation.
    """
    outcomes: Counter[str] = Counter()
    for inbox_id in due_for_attention(ctx.models, now=now):
        try:
            outcome = attend(ctx, reconnect_tasks, inbox_id, now=now)
        except retry_next_run as error:
            on_failure("notice not sent", inbox_id, error)
            outcomes["failed"] += 1
            continue
        outcomes[outcome.value] += 1
    try:
        if expired := notify_expired_links(ctx, now=now):
            outcomes["expired_links"] = expired
    except retry_next_run as error:
        on_failure("expired-link notices not sent", None, error)
        outcomes["failed"] += 1
    return outcomes


def due_for_attention(models: Models, *, now: datetime, limit: int = 200) -> list[str]:
    """Ids of inboxes whose reminder or degraded check is due (the sparse attention index)."""
    table = models.inbox
    return [
        key.inbox_id
        for shard in range(ATTENTION_SHARDS)
        for key in table.attention_index.query(str(shard), table.attention_at <= epoch(now), limit=limit)
    ]


def attend(ctx: IncidentContext, reconnect_tasks: MessageQueue, inbox_id: str, *, now: datetime) -> Attention:
    """Do what is due for one inbox. Status is read again here: a reconnect stops reminders."""
    try:
        inbox = ctx.models.inbox.get(inbox_id, consistent_read=True)
    except DoesNotExist:
        return Attention.SKIPPED
    if inbox.attention_at is None or inbox.attention_at > epoch(now):
        return Attention.SKIPPED
    if inbox.reconnect_link and inbox.status in (InboxStatus.RECONNECTING, InboxStatus.CONNECTED):
        return _requeue_reconnect(ctx, reconnect_tasks, inbox, now)
    if inbox.status == InboxStatus.DISCONNECTED and inbox.incident_id:
        return _remind(ctx, inbox, now)
    if inbox.status == InboxStatus.CONNECTED and inbox.transient_since is not None and not inbox.degraded_notified:
        return _report_degraded(ctx, inbox, inbox.transient_since, now)
    return _clear_attention(ctx, inbox)


def _requeue_reconnect(ctx: IncidentContext, tasks: MessageQueue, inbox: Inbox, now: datetime) -> Attention:
    """The reconnect worker has not finished this reconnect in time: its task was lost, or keeps
    failing into the dead-letter queue. Queue it again, and look again after another grace."""
    table = ctx.models.inbox
    # Queued before the watch moves on: a failure here leaves it due, and the next run tries again.
    tasks.send_batch([ReconnectTask(inbox_id=inbox.inbox_id, link_hash=inbox.reconnect_link or "").to_message()])
    seen = (table.attention_at == inbox.attention_at) & (table.reconnect_link == inbox.reconnect_link)
    if not writes.update(inbox, actions=reconnect_watch(table, now=now), condition=seen):
        return Attention.SKIPPED  # finished, or watched again, meanwhile
    return Attention.REQUEUED


def _remind(ctx: IncidentContext, inbox: Inbox, now: datetime) -> Attention:
    table = ctx.models.inbox
    sent = int(inbox.reminders_sent)
    delays = ctx.reminder_delays
    if sent >= len(delays):
        return _clear_attention(ctx, inbox)
    number = sent + 1
    # Send first (once per incident, reminder and recipient), then advance: a failed send leaves
    # the reminder due, and the next run sends only what is missing.
    notify_incident(ctx, inbox, now=now, reminder=number)
    actions: list[Action] = [table.reminders_sent.set(number)]
    if number < len(delays):
        gap = delays[number] - delays[number - 1]
        actions.append(table.attention_at.set(int(inbox.attention_at or epoch(now)) + int(gap.total_seconds())))
    else:
        actions += [table.attention_shard.remove(), table.attention_at.remove()]
    condition = (
        (table.status == InboxStatus.DISCONNECTED.value)
        & (table.incident_id == inbox.incident_id)
        & (table.reminders_sent == sent)
    )
    if not writes.update(inbox, actions=actions, condition=condition):
        return Attention.SKIPPED  # reconnected, or another run advanced it
    return Attention.REMINDED


def _report_degraded(ctx: IncidentContext, inbox: Inbox, since: datetime, now: datetime) -> Attention:
    table = ctx.models.inbox
    same_spell = (table.status == InboxStatus.CONNECTED.value) & (table.transient_since == since)
    due = since + ctx.degraded_after
    if due > now:
        if not writes.update(inbox, actions=[table.attention_at.set(epoch(due))], condition=same_spell):
            return Attention.SKIPPED
        return Attention.RESCHEDULED
    if ctx.admin_emails:
        email = notices.degraded(workspace=ctx.workspace_name, inbox=inbox, since=since, to=ctx.admin_emails)
        ctx.once.run(f"degraded:{inbox.inbox_id}:{epoch(since)}", lambda: ctx.mailer.send(email))
    if not writes.update(
        inbox,
        actions=[table.degraded_notified.set(True), table.attention_shard.remove(), table.attention_at.remove()],
        condition=same_spell,
    ):
        return Attention.SKIPPED  # it recovered (or disconnected) meanwhile
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.degraded",
        message=f"Every attempt to reach the provider has failed with temporary errors since {since:%Y-%m-%d %H:%M} "
        "UTC; the inbox stays connected and keeps retrying. Admins were notified.",
        inbox_id=inbox.inbox_id,
        dedup=f"degraded.{epoch(since)}",
    )
    return Attention.DEGRADED


def _clear_attention(ctx: IncidentContext, inbox: Inbox) -> Attention:
    table = ctx.models.inbox
    if not writes.update(
        inbox,
        actions=[table.attention_shard.remove(), table.attention_at.remove()],
        condition=table.attention_at == inbox.attention_at,  # not one set meanwhile for a new reason
    ):
        return Attention.SKIPPED
    return Attention.CLEARED


def notify_expired_links(ctx: NoticeContext, *, now: datetime) -> int:
    """Tell each creator of a link that expired unused, once; returns how many links were handled.

    Meant for the scheduled reminders function. Links are few (one per incident and reminder), so a
    filtered scan is cheaper than an index every link write would pay for.
    """
    table = ctx.models.link
    handled = 0
    not_notified = table.expiry_notified == False  # noqa: E712 - a DynamoDB condition, not a comparison
    expired = table.scan((table.state == LinkState.ACTIVE.value) & (table.expires_at <= now) & not_notified)
    for link in expired:
        if not writes.update(link, actions=[table.expiry_notified.set(True)], condition=not_notified):
            continue  # another run has it
        handled += 1
        try:
            inbox = ctx.models.inbox.get(link.inbox_id)
        except DoesNotExist:
            continue
        if inbox.status == InboxStatus.CONNECTED:
            continue  # reconnected another way: nothing to do
        for address in notices.creator_addresses(link.created_by, ctx.admin_emails):
            email = notices.compose(
                "link_expired",
                to=[address],
                subject=f"The reconnect link for {inbox.address} expired unused",
                variables={
                    "workspace": ctx.workspace_name,
                    "inbox_address": inbox.address,
                    "provider_name": notices.provider_name(inbox.provider),
                    "created_at": link.created_at.strftime(notices.DATE),
                    "expired_at": link.expires_at.strftime(notices.DATE),
                    "status": inbox.status,
                },
            )
            ctx.once.run(f"link_expired:{link.link_id}:{address}", partial(ctx.mailer.send, email))
    return handled
