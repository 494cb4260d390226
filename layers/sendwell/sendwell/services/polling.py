"""Polling: read what arrived in each inbox since the last poll and act on replies and bounces.

Each poll is incremental (Gmail history id, Graph delta link, IMAP UIDVALIDITY + UID), and the
cursor is saved only after its messages were processed. A crash means the same messages are
processed again, which is harmless: every state change is a conditional write that happens once,
log entries are keyed on the provider's message id, and events go through ``Once``.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from sendwell import writes
from sendwell.clock import epoch
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.ids import parse_step_message_id
from sendwell.inbound import InboundKind, InboundVerdict, classify_inbound
from sendwell.models import POLL_SHARDS, Enrollment, EnrollmentState, Inbox, InboxStatus, Models
from sendwell.ports.mailbox import InboundMessage, Mailboxes
from sendwell.ports.messages import AuthFailureReport
from sendwell.ports.platform import AuthFailureReporter, EventPublisher, Once
from sendwell.services import activity, enrollment_states
from sendwell.services.inbox_health import degraded_watch
from sendwell.writes import WriteNotDone

POLL_INTERVAL = timedelta(minutes=5)
DEFAULT_SENDER_LIMIT_PAUSE = timedelta(hours=24)
FIRST_POLL_LOOKBACK = timedelta(days=3)
RESYNC_MARGIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class PollContext:
    models: Models
    mailboxes: Mailboxes
    auth_failures: AuthFailureReporter
    events: EventPublisher
    once: Once
    # What one inbox's poll can fail with besides its provider (AWS faults, a write that kept
    # failing, credentials that can't be decrypted): the run goes on with the other inboxes.
    isolated: tuple[type[Exception], ...] = (WriteNotDone,)
    interval: timedelta = POLL_INTERVAL


@dataclass
class PollResult:
    inbox_id: str
    fetched: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failure: str | None = None  # the failure code when the poll could not run


def polling_scheduled(table: type[Inbox], *, now: datetime) -> list[Action]:
    """The actions that put an inbox on the poll index, spread over shards and a minute."""
    return [
        table.poll_shard.set(str(secrets.randbelow(POLL_SHARDS))),
        table.next_poll_at.set(epoch(now) + secrets.randbelow(60)),
    ]


def poll_lag_seconds(models: Models, *, now: datetime) -> int:
    """How long the most overdue inbox has waited for its poll: the head of each poll-index shard."""
    table = models.inbox
    overdue = [
        int(key.next_poll_at)
        for shard in range(POLL_SHARDS)
        for key in table.poll_index.query(str(shard), table.next_poll_at <= epoch(now), limit=1)
        if key.next_poll_at is not None
    ]
    return max(0, epoch(now) - min(overdue)) if overdue else 0


def poll_due_inboxes(ctx: PollContext, *, now: datetime, limit: int = 200) -> list[PollResult]:
    """Poll every inbox that is due. One inbox's failure never stops the others: an error of
    ``ctx.isolated`` (AWS, DynamoDB, KMS faults; a write that kept failing) is its result's
    ``failure``, its cursor stays where it was, and it is polled again next time."""
    results: list[PollResult] = []
    table = ctx.models.inbox
    for shard in range(POLL_SHARDS):
        for key in table.poll_index.query(str(shard), table.next_poll_at <= epoch(now), limit=limit):
            try:
                inbox = table.get(key.inbox_id)
                results.append(poll_inbox(ctx, inbox, now=now))
            except DoesNotExist:
                continue
            except ctx.isolated as error:
                results.append(PollResult(inbox_id=key.inbox_id, failure=f"error:{type(error).__name__}"))
    return results


def poll_inbox(ctx: PollContext, inbox: Inbox, *, now: datetime, since: datetime | None = None) -> PollResult:
    """Poll one inbox from its cursor; a resync looks back at least to ``since`` (reconnect catch-up).

    The cursor is saved only after every message's effects are stored: a write that keeps failing
    raises (``WriteNotDone``), and the next poll reads the same messages again.
    """
    result = PollResult(inbox_id=inbox.inbox_id)
    cursor = inbox.poll_cursor  # the last successful poll's: a catch-up starts there too
    # A resync (no cursor, or the provider forgot it) looks back past the last poll by a margin,
    # and to ``since`` when that is earlier: processing a message twice is harmless, missing one is not.
    lookback = (inbox.last_polled_at - RESYNC_MARGIN) if inbox.last_polled_at else now - FIRST_POLL_LOOKBACK
    if since is not None:
        lookback = min(lookback, since)
    try:
        mailbox = ctx.mailboxes.open(inbox)
        messages, new_cursor = mailbox.poll(cursor, since=lookback)
    except ProviderFailure as error:
        result.failure = error.failure.code
        _on_poll_failure(ctx, inbox, error, now)
        return result
    result.fetched = len(messages)
    # Several messages of a poll often share a thread: look each thread up once.
    threads: dict[str, Enrollment | None] = {}

    def thread_enrollment(thread_id: str) -> Enrollment | None:
        if thread_id not in threads:
            threads[thread_id] = _thread_enrollment(ctx.models, inbox, thread_id)
        return threads[thread_id]

    for message in messages:
        verdict = classify_inbound(
            message.message,
            is_ours=lambda message_id: parse_step_message_id(message_id) is not None,
            thread_is_ours=lambda thread: thread_enrollment(thread) is not None,
            provider_thread_id=message.thread_id,
        )
        result.outcomes[_apply(ctx, inbox, message, verdict, now, thread_enrollment)] += 1
    _save_cursor(ctx, inbox, cursor_before=inbox.poll_cursor, cursor_after=new_cursor, now=now)
    return result


def _save_cursor(
    ctx: PollContext, inbox: Inbox, *, cursor_before: str | None, cursor_after: str, now: datetime
) -> None:
    table = ctx.models.inbox
    actions: list[Any] = [
        table.poll_cursor.set(cursor_after),
        table.last_polled_at.set(now),
        table.transient_since.remove(),
        table.degraded_notified.set(False),
    ]
    if inbox.status == InboxStatus.CONNECTED and not inbox.paused:
        actions.append(table.next_poll_at.set(epoch(now + ctx.interval) + secrets.randbelow(30)))
    condition = table.poll_cursor.does_not_exist() if cursor_before is None else table.poll_cursor == cursor_before
    # False: a concurrent poll saved a newer cursor; ours would move it backwards.
    writes.update(inbox, actions=actions, condition=condition)


def _on_poll_failure(ctx: PollContext, inbox: Inbox, error: ProviderFailure, now: datetime) -> None:
    failure = error.failure
    table = ctx.models.inbox
    if failure.kind.is_auth_failure:
        ctx.auth_failures.report(AuthFailureReport.of(inbox, failure, at=now, source="poll"))
    actions: list[Any] = []
    if inbox.poll_shard is not None:
        actions.append(table.next_poll_at.set(epoch(now + ctx.interval)))  # retry at the next poll
    if failure.kind in (FailureKind.TRANSIENT, FailureKind.RATE_LIMITED) and inbox.transient_since is None:
        actions += degraded_watch(table, now=now)  # the start of a spell; a day of it is "degraded"
    if actions:
        inbox.update(actions=actions)


# ------------------------------------------------------------------------------------ verdicts


def _apply(
    ctx: PollContext,
    inbox: Inbox,
    message: InboundMessage,
    verdict: InboundVerdict,
    now: datetime,
    thread_enrollment: Callable[[str], Enrollment | None],
) -> str:
    kind = verdict.kind
    if kind is InboundKind.SENDER_LIMIT:
        until = now + (verdict.pause or DEFAULT_SENDER_LIMIT_PAUSE)
        inbox.update(actions=[ctx.models.inbox.rate_limited_until.set(until)])
        activity.record(
            ctx.models,
            now=now,
            kind="inbox.sending_limit",
            message=f"The provider reported a sending limit; sending paused until {until:%Y-%m-%d %H:%M} UTC",
            inbox_id=inbox.inbox_id,
            dedup=f"limit.{message.provider_id}",
        )
        return kind.value
    if kind is InboundKind.OTHER:
        return kind.value
    enrollment = _enrollment_for(ctx.models, inbox, message, verdict, thread_enrollment)
    if enrollment is None:
        return "unmatched"
    if kind is InboundKind.REPLY:
        _stop(ctx, enrollment, EnrollmentState.REPLIED, "the prospect replied", message, now)
    elif kind is InboundKind.COMPLAINT:
        _stop(ctx, enrollment, EnrollmentState.COMPLAINED, "the recipient reported the email as spam", message, now)
    elif kind is InboundKind.BOUNCE:
        reason = " ".join(filter(None, ["bounced", verdict.status, verdict.diagnostic]))
        _stop(ctx, enrollment, EnrollmentState.BOUNCED, reason, message, now)
    elif kind is InboundKind.AUTO_REPLY:
        campaign = ctx.models.campaign.get(enrollment.campaign_id)
        if campaign.stop_on_auto_reply:
            _stop(
                ctx,
                enrollment,
                EnrollmentState.FINISHED,
                "auto-reply (the campaign stops on auto-replies)",
                message,
                now,
            )
        else:
            _note(ctx, enrollment, "enrollment.auto_reply", "auto-reply received; the sequence goes on", message, now)
    elif kind is InboundKind.SOFT_BOUNCE:
        _note(
            ctx,
            enrollment,
            "enrollment.soft_bounce",
            f"delivery delayed ({verdict.status or '4.x.x'}); the sequence goes on",
            message,
            now,
        )
    return kind.value


def _enrollment_for(
    models: Models,
    inbox: Inbox,
    message: InboundMessage,
    verdict: InboundVerdict,
    thread_enrollment: Callable[[str], Enrollment | None],
) -> Enrollment | None:
    if verdict.message_id:
        named = parse_step_message_id(verdict.message_id)
        if named is not None:
            try:
                enrollment = models.enrollment.get(named[0])
            except DoesNotExist:
                return None
            return enrollment if enrollment.inbox_id == inbox.inbox_id else None
    return thread_enrollment(message.thread_id) if message.thread_id else None


def _thread_enrollment(models: Models, inbox: Inbox, thread_id: str) -> Enrollment | None:
    for match in models.enrollment.thread_index.query(f"{inbox.inbox_id}#{thread_id}", limit=1):
        try:
            return models.enrollment.get(match.enrollment_id)
        except DoesNotExist:
            return None
    return None


def _stop(
    ctx: PollContext,
    enrollment: Enrollment,
    state: EnrollmentState,
    reason: str,
    message: InboundMessage,
    now: datetime,
) -> None:
    if not enrollment_states.stop(ctx.models, enrollment, state, reason):
        return  # it had already stopped for another reason
    _note(ctx, enrollment, f"enrollment.{state.value}", reason, message, now)
    ctx.once.run(
        f"{enrollment.enrollment_id}:{state.value}",
        lambda: _publish(ctx, enrollment, state, reason),
    )


def _publish(ctx: PollContext, enrollment: Enrollment, state: EnrollmentState, reason: str) -> str:
    ctx.events.publish(
        f"enrollment.{state.value}",
        {
            "enrollment_id": enrollment.enrollment_id,
            "campaign_id": enrollment.campaign_id,
            "inbox_id": enrollment.inbox_id,
            "email": enrollment.email,
            "reason": reason,
        },
        dedup_key=f"{enrollment.enrollment_id}:{state.value}",
    )
    return "published"


def _note(
    ctx: PollContext, enrollment: Enrollment, kind: str, text: str, message: InboundMessage, now: datetime
) -> None:
    activity.record(
        ctx.models,
        now=_arrived_at(message, now),
        kind=kind,
        message=f"{enrollment.email}: {text}",
        campaign_ids=[enrollment.campaign_id],
        details={"enrollment_id": enrollment.enrollment_id, "provider_message_id": message.provider_id},
        dedup=f"{kind}.{message.provider_id}",
    )


def _arrived_at(message: InboundMessage, fallback: datetime) -> datetime:
    """The message's own Date, so a replayed poll writes the same log entry, not a second one."""
    try:
        sent = parsedate_to_datetime(str(message.message.get("Date", "")))
    except (TypeError, ValueError):
        return fallback
    return sent if sent.tzinfo is not None else fallback
