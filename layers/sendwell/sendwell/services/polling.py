"""Polling: read what arrived in each inbox since the last poll and act on replies and bounces.

Each poll is incremental (Gmail history id, Graph delta link, IMAP UIDVALIDITY + UID), and the
cursor is saved only after its messages were processed. A crash means the same messages are
processed again, which is harmless: every state change is a conditional write that happens once,
log entries are keyed on the provider's message id, and events go through ``Once``.

Scheduling. Every polled inbox has a fixed second of the five-minute cycle, ``poll_slot``, on the
KEYS_ONLY poll index. Every minute the scheduler reads the slots of the minute just ended and fans
those inboxes out in batches to poll workers, which run concurrently: each inbox is polled once a
cycle, 0-60 s after its slot, at any number of inboxes, and a poll never moves an index key. An
idle poll (nothing new, nothing to clear) writes nothing at all; the stored cursor still reads
from where it did, and ``last_polled_at`` is written at least every POLL_HEARTBEAT.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from sendwell import writes
from sendwell.clock import epoch
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.ids import parse_step_message_id, parse_step_ref
from sendwell.inbound import InboundKind, InboundVerdict, classify_inbound, parse_message_ids
from sendwell.models import POLL_SHARDS, Enrollment, EnrollmentState, Inbox, InboxStatus, Models, SuppressionReason
from sendwell.ports.mailbox import InboundMessage, Mailboxes
from sendwell.ports.messages import AuthFailureReport, MalformedMessage
from sendwell.ports.platform import AuthFailureReporter, EventPublisher, Mailer, MessageQueue, Once
from sendwell.services import activity, bounces, enrollment_states, schedule, suppression
from sendwell.services.bounces import Bounce, Returned
from sendwell.services.campaigns import enrollment_id_for, stop_address
from sendwell.services.fan_out import fan_out as fan_out_ids
from sendwell.services.inbox_health import POLL_HEARTBEAT, degraded_watch
from sendwell.services.lookups import campaigns_on
from sendwell.writes import WriteNotDone

POLL_INTERVAL = timedelta(minutes=5)  # the cycle: every inbox is polled once in it, at its slot
_CYCLE_SECONDS = int(POLL_INTERVAL.total_seconds())
TICK_SECONDS = 60  # the scheduler runs every minute (a divisor of the cycle: a tick's slots never wrap)
# Inboxes one worker message carries: ten polls of a few hundred milliseconds each, far inside the
# worker's timeout even when a mailbox has a day of mail waiting.
BATCH_SIZE = 10
# Polls a worker has at its providers at once.
POLL_THREADS = BATCH_SIZE
# A worker starts no poll with less time left than this: it hands what is left to another worker.
POLL_TIME_RESERVE_SECONDS = 30
DEFAULT_SENDER_LIMIT_PAUSE = timedelta(hours=24)
FIRST_POLL_LOOKBACK = timedelta(days=3)
RESYNC_MARGIN = timedelta(hours=1)
# A bounce that names none of our Message-IDs is matched by its failed recipient to an enrollment
# of the inbox that was sent to this recently: reports come back within days, not months.
RECIPIENT_MATCH_WINDOW = timedelta(days=30)
# What a delivery report can be matched to an enrollment by its failed recipient for.
_RETURNED = (
    InboundKind.BOUNCE,
    InboundKind.SOFT_BOUNCE,
    InboundKind.SENDER_BLOCKED,
    InboundKind.COMPLAINT,
)


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
    # Who hears that an inbox was paused for sender-side blocks (no mailer: the event and log only).
    mailer: Mailer | None = None
    admin_emails: Sequence[str] = ()
    workspace_name: str = "sendwell"


@dataclass
class PollResult:
    inbox_id: str
    fetched: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    # The same outcomes by campaign, for the messages matched to one of its enrollments.
    by_campaign: Counter[tuple[str, str]] = field(default_factory=Counter)
    paused_for_blocks: bool = False
    failure: str | None = None  # the failure code when the poll could not run


@dataclass(frozen=True, slots=True)
class PollBatch:
    """One worker message: inboxes whose slots had all come by ``due`` (epoch seconds)."""

    due: int
    inbox_ids: list[str]

    def to_body(self) -> str:
        return json.dumps({"due": self.due, "inbox_ids": self.inbox_ids})

    @classmethod
    def from_body(cls, body: str) -> PollBatch:
        try:
            data = json.loads(body)
            due, ids = data["due"], data["inbox_ids"]
        except (ValueError, TypeError, KeyError) as error:
            raise MalformedMessage(f"not a poll batch: {error}") from None
        if not isinstance(due, int) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise MalformedMessage("not a poll batch: due must be a number and inbox_ids a list of ids")
        return cls(due=due, inbox_ids=ids)


@dataclass
class PollRun:
    results: list[PollResult] = field(default_factory=list)
    lag_seconds: int = 0  # how long after its inboxes' slots the batch started
    # The inboxes the worker had no time left for, to go back on the work queue for another worker.
    leftover: PollBatch | None = None


def new_poll_place() -> tuple[str, int]:
    """A poll shard and a second of the cycle, each at random, so that inboxes spread evenly over
    the index's partitions and over the cycle."""
    return str(secrets.randbelow(POLL_SHARDS)), secrets.randbelow(_CYCLE_SECONDS)


def polling_scheduled(table: type[Inbox]) -> list[Action]:
    """The actions that put an inbox on the poll index, at a place of its own (``new_poll_place``)."""
    shard, slot = new_poll_place()
    return [table.poll_shard.set(shard), table.poll_slot.set(slot)]


def slots_due(now: datetime) -> tuple[int, int, int]:
    """The slots a tick at ``now`` hands out: those of the minute just ended, as (first, last, and
    the epoch second by which all of them had come). Two ticks in one minute hand out the same
    slots (a second poll is harmless); a tick missed leaves its inboxes to their next slot."""
    due = epoch(now) // TICK_SECONDS * TICK_SECONDS
    first = (due - TICK_SECONDS) % _CYCLE_SECONDS
    return first, first + TICK_SECONDS - 1, due


def scheduled_inbox_ids(models: Models, *, now: datetime) -> Iterator[str]:
    """The inboxes whose slot is in the minute just ended, shard by shard (keys only)."""
    table = models.inbox
    first, last, _ = slots_due(now)
    for shard in range(POLL_SHARDS):
        for key in table.poll_index.query(str(shard), table.poll_slot.between(first, last)):
            yield key.inbox_id


def fan_out(models: Models, work: MessageQueue, *, now: datetime, batch_size: int = BATCH_SIZE) -> int:
    """The scheduler: put every inbox whose slot has come on the work queue, in batches, as the
    index is read. How many inboxes."""
    due = slots_due(now)[2]
    ids = scheduled_inbox_ids(models, now=now)
    return fan_out_ids(work, ids, batch_size=batch_size, body=lambda some: PollBatch(due, some).to_body())


def poll_batch(
    ctx: PollContext, batch: PollBatch, *, now: datetime, time_left: Callable[[], float] | None = None
) -> PollRun:
    """The worker: poll each inbox of ``batch``. One inbox's failure never stops the others: an
    error of ``ctx.isolated`` (AWS, DynamoDB, KMS faults; a write that kept failing) is its result's
    ``failure``, its cursor stays where it was, and it is polled again at its next slot."""
    run = PollRun(lag_seconds=max(0, epoch(now) - batch.due))
    ids = list(dict.fromkeys(batch.inbox_ids))
    # Inboxes taken off polling since the tick (disconnected) have nothing to poll with.
    inboxes = [inbox for inbox in ctx.models.inbox.batch_get(ids) if inbox.poll_shard is not None]

    def fetch(inbox: Inbox) -> _Fetched | ProviderFailure | PollResult:
        try:
            return _fetch(ctx, inbox, now=now, since=None)
        except ctx.isolated as error:
            return _isolated(inbox, error)

    # The provider's halves run side by side (a poll is mostly waiting for its provider, and the
    # function is billed for the wait); the effects are applied one inbox at a time, here.
    with ThreadPoolExecutor(max_workers=POLL_THREADS) as pool:
        for start in range(0, len(inboxes), POLL_THREADS):
            if start and time_left is not None and time_left() < POLL_TIME_RESERVE_SECONDS:
                run.leftover = PollBatch(batch.due, [inbox.inbox_id for inbox in inboxes[start:]])
                break
            some = inboxes[start : start + POLL_THREADS]
            for inbox, fetched in zip(some, pool.map(fetch, some), strict=True):
                if isinstance(fetched, PollResult):
                    run.results.append(fetched)
                    continue
                try:
                    run.results.append(_apply_fetched(ctx, inbox, fetched, now=now))
                except ctx.isolated as error:
                    run.results.append(_isolated(inbox, error))
    return run


def _isolated(inbox: Inbox, error: Exception) -> PollResult:
    return PollResult(inbox_id=inbox.inbox_id, failure=f"error:{type(error).__name__}")


def poll_due_inboxes(ctx: PollContext, *, now: datetime) -> list[PollResult]:
    """One tick in one process: every inbox whose slot is in the minute just ended (tests, benches)."""
    ids = list(scheduled_inbox_ids(ctx.models, now=now))
    return poll_batch(ctx, PollBatch(slots_due(now)[2], ids), now=now).results


def poll_inbox(ctx: PollContext, inbox: Inbox, *, now: datetime, since: datetime | None = None) -> PollResult:
    """Poll one inbox from its cursor; a resync looks back at least to ``since`` (reconnect catch-up).

    The cursor is saved only after every message's effects are stored: a write that keeps failing
    raises (``WriteNotDone``), and the next poll reads the same messages again.
    """
    return _apply_fetched(ctx, inbox, _fetch(ctx, inbox, now=now, since=since), now=now)


@dataclass(frozen=True, slots=True)
class _Fetched:
    messages: list[InboundMessage]
    cursor: str


def _fetch(ctx: PollContext, inbox: Inbox, *, now: datetime, since: datetime | None) -> _Fetched | ProviderFailure:
    """The provider's half of a poll: sign in (a token refresh stores the new tokens, each inbox
    its own) and read what is new. It touches no enrollment and no poll state, so a worker runs
    several at once."""
    cursor = inbox.poll_cursor  # the last successful poll's: a catch-up starts there too
    # A resync (no cursor, or the provider forgot it) looks back past the last poll by a margin,
    # and to ``since`` when that is earlier: processing a message twice is harmless, missing one is not.
    lookback = (inbox.last_polled_at - RESYNC_MARGIN) if inbox.last_polled_at else now - FIRST_POLL_LOOKBACK
    if since is not None:
        lookback = min(lookback, since)
    try:
        messages, new_cursor = ctx.mailboxes.open(inbox).poll(cursor, since=lookback)
    except ProviderFailure as error:
        return error
    return _Fetched(list(messages), new_cursor)


def _apply_fetched(ctx: PollContext, inbox: Inbox, fetched: _Fetched | ProviderFailure, *, now: datetime) -> PollResult:
    """Our half: act on each message, then save the cursor (one inbox at a time)."""
    result = PollResult(inbox_id=inbox.inbox_id)
    if isinstance(fetched, ProviderFailure):
        result.failure = fetched.failure.code
        _on_poll_failure(ctx, inbox, fetched, now)
        return result
    messages, new_cursor = fetched.messages, fetched.cursor
    result.fetched = len(messages)
    lookups = _Lookups(ctx.models, inbox)
    for message in messages:
        verdict = classify_inbound(
            message.message,
            is_ours=lambda message_id: parse_step_message_id(message_id) is not None,
            thread_is_ours=lambda thread: lookups.thread(thread) is not None,
            provider_thread_id=message.thread_id,
        )
        _apply(ctx, inbox, message, verdict, now, lookups, result)
    _save_cursor(ctx, inbox, fetched=bool(messages), cursor_after=new_cursor, now=now)
    return result


def _save_cursor(ctx: PollContext, inbox: Inbox, *, fetched: bool, cursor_after: str, now: datetime) -> None:
    """Record a successful poll, unless it was idle: nothing fetched and nothing to clear or fix,
    with ``last_polled_at`` younger than POLL_HEARTBEAT. An idle poll leaves the stored cursor,
    which reads from where it did: the next poll sees what this one saw, and nothing is missed."""
    table = ctx.models.inbox
    cursor_before = inbox.poll_cursor
    back_on_send_index = inbox.status == InboxStatus.CONNECTED and not inbox.paused and inbox.send_shard is None
    idle = not (
        fetched
        or cursor_before is None
        or inbox.last_polled_at is None
        or now - inbox.last_polled_at >= POLL_HEARTBEAT
        or inbox.poll_failed_at is not None
        or inbox.transient_since is not None
        or inbox.held_since is not None
        or back_on_send_index
    )
    if idle:
        return
    actions: list[Any] = [table.poll_cursor.set(cursor_after), table.last_polled_at.set(now)]
    if inbox.poll_failed_at is not None:
        actions.append(table.poll_failed_at.remove())
    if inbox.transient_since is not None or inbox.degraded_notified:
        actions += [table.transient_since.remove(), table.degraded_notified.set(False)]
    if inbox.held_since is not None:
        # The credentials work: whatever held the inbox (a loss being weighed, the breaker) is over.
        actions += [table.held_since.remove(), table.held_reason.remove()]
    if back_on_send_index:
        # Back on the send index (a hold just ended, or a wake was lost to a fault): a working inbox
        # that can send is never left off it for longer than a poll interval.
        actions.append(table.send_shard.set(schedule.send_shard(inbox.inbox_id)))
        if inbox.next_send_at is None:
            actions.append(table.next_send_at.set(epoch(now)))
    condition = table.poll_cursor.does_not_exist() if cursor_before is None else table.poll_cursor == cursor_before
    # False: a concurrent poll saved a newer cursor; ours would move it backwards.
    writes.update(inbox, actions=actions, condition=condition)


def _on_poll_failure(ctx: PollContext, inbox: Inbox, error: ProviderFailure, now: datetime) -> None:
    failure = error.failure
    table = ctx.models.inbox
    if failure.kind.is_auth_failure:
        ctx.auth_failures.report(AuthFailureReport.of(inbox, failure, at=now, source="poll"))
    actions: list[Any] = []
    if inbox.poll_failed_at is None:
        # Follow-ups wait until a poll succeeds again, and that poll is written, whatever it finds.
        actions.append(table.poll_failed_at.set(now))
    if failure.kind in (FailureKind.TRANSIENT, FailureKind.RATE_LIMITED) and inbox.transient_since is None:
        actions += degraded_watch(table, now=now)  # the start of a spell; a day of it is "degraded"
    if actions:
        inbox.update(actions=actions)


# ------------------------------------------------------------------------------------ verdicts


class _Lookups:
    """One poll's lookups of enrollments, each made once: several messages often share a thread,
    and the inbox's campaigns are listed only when a bounce names none of our Message-IDs."""

    def __init__(self, models: Models, inbox: Inbox) -> None:
        self.models, self.inbox = models, inbox
        self._threads: dict[str, Enrollment | None] = {}
        self._campaign_ids: list[str] | None = None

    def thread(self, thread_id: str) -> Enrollment | None:
        if thread_id not in self._threads:
            self._threads[thread_id] = _thread_enrollment(self.models, self.inbox, thread_id)
        return self._threads[thread_id]

    def recipient(self, addresses: Sequence[str], now: datetime) -> Enrollment | None:
        """The enrollment of this inbox most recently sent to one of ``addresses``."""
        if self._campaign_ids is None:
            self._campaign_ids = [c.campaign_id for c in campaigns_on(self.models, self.inbox.inbox_id)]
        ids = [enrollment_id_for(campaign_id, a) for campaign_id in self._campaign_ids for a in addresses[:10]]
        recent = epoch(now - RECIPIENT_MATCH_WINDOW)
        candidates = [
            e
            for e in self.models.enrollment.batch_get(ids)
            if e.inbox_id == self.inbox.inbox_id and e.last_sent_at is not None and epoch(e.last_sent_at) >= recent
        ]
        return max(candidates, key=lambda e: e.last_sent_at or now, default=None)


def _apply(
    ctx: PollContext,
    inbox: Inbox,
    message: InboundMessage,
    verdict: InboundVerdict,
    now: datetime,
    lookups: _Lookups,
    result: PollResult,
) -> None:
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
        result.outcomes[kind.value] += 1
        return
    if kind in (InboundKind.OTHER, InboundKind.RECEIPT):
        result.outcomes[kind.value] += 1
        return
    enrollment = _enrollment_for(ctx.models, inbox, message, verdict, lookups, now)
    if enrollment is None:
        result.outcomes["unmatched"] += 1
        return
    result.outcomes[kind.value] += 1
    result.by_campaign[(enrollment.campaign_id, kind.value)] += 1
    if kind is InboundKind.REPLY:
        _stop(ctx, enrollment, EnrollmentState.REPLIED, "the prospect replied", message, now)
    elif kind is InboundKind.COMPLAINT:
        reason = "the recipient reported the email as spam"
        _suppress(ctx, enrollment, EnrollmentState.COMPLAINED, reason, message, now, inbox_id=inbox.inbox_id)
    elif kind is InboundKind.BOUNCE:
        reason = " ".join(filter(None, ["bounced", verdict.status, verdict.diagnostic]))
        _suppress(ctx, enrollment, EnrollmentState.BOUNCED, reason, message, now)
    elif kind is InboundKind.SOFT_BOUNCE:
        _soft_bounce(ctx, enrollment, message, _bounce(message, verdict, now), now)
    elif kind is InboundKind.SENDER_BLOCKED:
        bounce = _bounce(message, verdict, now)
        returned = _sender_block(ctx, enrollment, message, bounce, now)
        new = returned in (Returned.RESENT_LATER, Returned.NOTED, Returned.HELD)
        if bounces.count_block(ctx, inbox, bounce, new=new):
            result.paused_for_blocks = True
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


def _bounce(message: InboundMessage, verdict: InboundVerdict, now: datetime) -> Bounce:
    own = parse_message_ids(str(message.message.get("Message-ID", "") or ""))
    return Bounce(
        key=own[0] if own else f"provider:{message.provider_id}",
        step=parse_step_ref(verdict.message_id) if verdict.message_id else None,
        status=verdict.status,
        diagnostic=verdict.diagnostic,
        # The poll's time, not the report's Date: retries and the day's block count run on our
        # clock (a report's Date can be days off). A replay is recognised by ``key`` instead.
        at=now,
    )


def _soft_bounce(
    ctx: PollContext, enrollment: Enrollment, message: InboundMessage, bounce: Bounce, now: datetime
) -> None:
    returned = bounces.send_back(ctx.models, enrollment, bounce, blocked=False)
    detail = bounce.detail() or "4.x.x"
    if returned is Returned.GONE:
        reason = (
            f"bounced: the mailbox refused {bounces.MAX_SOFT_BOUNCES + 1} times for now ({detail}); treated as gone"
        )
        _suppress(ctx, enrollment, EnrollmentState.BOUNCED, reason, message, now)
    elif returned is Returned.RESENT_LATER:
        text = f"the mailbox can't take mail for now ({detail}); the email goes out again later"
        _note(ctx, enrollment, "enrollment.soft_bounce", text, message, now)
    elif returned is Returned.NOTED:
        _note(
            ctx,
            enrollment,
            "enrollment.soft_bounce",
            f"delivery delayed ({detail}); the sequence goes on",
            message,
            now,
        )


def _sender_block(
    ctx: PollContext, enrollment: Enrollment, message: InboundMessage, bounce: Bounce, now: datetime
) -> Returned:
    returned = bounces.send_back(ctx.models, enrollment, bounce, blocked=True)
    detail = bounce.detail() or "no reason given"
    texts = {
        Returned.RESENT_LATER: f"refused because of the sending inbox, not the address ({detail}); "
        "the email goes out again later from the same inbox",
        Returned.NOTED: f"refused because of the sending inbox, not the address ({detail})",
        Returned.HELD: f"refused {bounces.MAX_SENDER_BLOCKS + 1} times because of the sending inbox ({detail}); "
        "held for an admin, not marked bounced",
    }
    if returned in texts:
        _note(ctx, enrollment, "enrollment.sender_blocked", texts[returned], message, now, inbox_id=enrollment.inbox_id)
    return returned


_SUPPRESSED_FOR = {
    EnrollmentState.BOUNCED: SuppressionReason.BOUNCED,
    EnrollmentState.COMPLAINED: SuppressionReason.COMPLAINED,
}


def _suppress(
    ctx: PollContext,
    enrollment: Enrollment,
    state: EnrollmentState,
    reason: str,
    message: InboundMessage,
    now: datetime,
    *,
    inbox_id: str | None = None,
) -> None:
    """Suppress the address everywhere, stop this enrollment in ``state``, then the address's
    enrollments in other campaigns. In that order: a fault in between leaves the cursor where it
    was, and the replay finishes it (each step changes nothing the second time)."""
    suppression.suppress(
        ctx.models,
        enrollment.email,
        reason=_SUPPRESSED_FOR[state],
        now=now,
        source="poll",
        note=reason,
        campaign_id=enrollment.campaign_id,
        enrollment_id=enrollment.enrollment_id,
        inbox_id=enrollment.inbox_id,
    )
    _stop(ctx, enrollment, state, reason, message, now, inbox_id=inbox_id)
    stop_address(ctx.models, enrollment.email, now=now, reason=f"suppressed: {state.value} in another campaign")


def _enrollment_for(
    models: Models,
    inbox: Inbox,
    message: InboundMessage,
    verdict: InboundVerdict,
    lookups: _Lookups,
    now: datetime,
) -> Enrollment | None:
    if verdict.message_id:
        named = parse_step_message_id(verdict.message_id)
        if named is not None:
            try:
                enrollment = models.enrollment.get(named[0], consistent_read=True)
            except DoesNotExist:
                return None
            return enrollment if enrollment.inbox_id == inbox.inbox_id else None
    if message.thread_id:
        found = lookups.thread(message.thread_id)
        if found is not None:
            return found
    if verdict.kind in _RETURNED and verdict.recipients:
        return lookups.recipient(verdict.recipients, now)
    return None


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
    *,
    inbox_id: str | None = None,
) -> None:
    if not enrollment_states.stop(ctx.models, enrollment, state, reason):
        return  # it had already stopped for another reason
    _note(ctx, enrollment, f"enrollment.{state.value}", reason, message, now, inbox_id=inbox_id)
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
    ctx: PollContext,
    enrollment: Enrollment,
    kind: str,
    text: str,
    message: InboundMessage,
    now: datetime,
    *,
    inbox_id: str | None = None,  # what counts against the inbox (blocks, complaints) is in its log too
) -> None:
    activity.record(
        ctx.models,
        now=_arrived_at(message, now),
        kind=kind,
        message=f"{enrollment.email}: {text}",
        inbox_id=inbox_id,
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
