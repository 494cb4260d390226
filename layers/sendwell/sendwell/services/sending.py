"""Send one due step: at most once, within the inbox's limits, through its provider.

The order of operations is the whole point:

1. **Claim the inbox slot** with one conditional update: the inbox is connected, not paused, not
   rate-limited, no other send holds its lease, the minimum gap has passed and the daily cap is
   not reached. A duplicate delivery of the same message loses here. The update returns the
   inbox, so the claim costs no read; the row is small (its credentials are an item of their own,
   opened once per container and version), so the claim costs one write unit.
2. **Re-read the enrollment** (strongly consistent): a reply, bounce or unsubscribe recorded
   since dispatch stops it here, before anything is sent.
3. **Mark the attempt, or reconcile**: the enrollment records the step being attempted before the
   provider is called. A step attempted before - whatever the queue says about the message - may
   have been sent: our Message-ID is derived from enrollment and step, so we look for it in Sent
   and record it instead of sending again. Where Sent can't prove a negative (a custom inbox's
   copy is saved after SMTP), the step is held as unconfirmed, never resent by itself.
4. Render, build, send, record, advance. Each provider failure is acted on by its class only.
   The queue message is done only once the outcome is stored: a write that keeps failing fails
   the message, and its next delivery finds the marker.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.clock import epoch
from sendwell.failures import FailureKind, ProviderFailure
from sendwell.ids import step_message_id
from sendwell.mime import MessageBuildError, build_message
from sendwell.models import (
    Campaign,
    Enrollment,
    EnrollmentState,
    Inbox,
    InboxStatus,
    Models,
)
from sendwell.pacing import local_day
from sendwell.ports.mailbox import Mailbox, Mailboxes, SentReceipt
from sendwell.ports.messages import AuthFailureReport, SendRequest
from sendwell.ports.platform import AuthFailureReporter
from sendwell.render import RenderError, render_step
from sendwell.services import activity, enrollment_states, suppression
from sendwell.services.inbox_health import degraded_watch, replies_are_current
from sendwell.services.polling import POLL_INTERVAL

SEND_LEASE_SECONDS = 90  # longer than one send can take (the function times out at 60 s)
DEFAULT_RATE_LIMIT_PAUSE = timedelta(hours=1)


class Outcome(enum.StrEnum):
    SENT = "sent"
    RECONCILED = "reconciled"  # found in Sent after a lost acknowledgement: recorded, not resent
    STALE = "stale"  # the step was already sent, or the enrollment stopped: nothing to do
    INBOX_UNAVAILABLE = "inbox_unavailable"  # disconnected/paused/rate-limited: the step stays due
    RECIPIENT_REJECTED = "recipient_rejected"
    FAILED = "failed"  # our message could not be built or was refused as malformed
    AUTH_FAILURE = "auth_failure"  # reported to the auth-failure queue; the step stays due
    HELD_FOR_REPLIES = "held_for_replies"  # a follow-up while the inbox's replies aren't current
    UNCONFIRMED = "unconfirmed"  # an earlier attempt may have delivered it: held, never resent by itself
    SUPPRESSED = "suppressed"  # the address went on the suppression list after the step was queued


class RetryLater(Exception):
    """Leave the queue message for a later attempt (the handler reports a batch item failure)."""

    def __init__(self, reason: str, delay_seconds: int, *, failure: FailureKind | None = None) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.failure = failure  # the provider failure's class when one caused it (counted by ops)


@dataclass(frozen=True, slots=True)
class SendContext:
    models: Models
    mailboxes: Mailboxes
    auth_failures: AuthFailureReporter
    unsubscribe_base_url: str  # https://.../u
    # How to read a campaign; handlers pass a cached reader (campaigns change rarely).
    campaigns: Callable[[str], Campaign] | None = None

    def campaign(self, campaign_id: str) -> Campaign:
        return self.campaigns(campaign_id) if self.campaigns else self.models.campaign.get(campaign_id)


class InboxUnavailable(Exception):
    """The inbox is disconnected, paused or rate-limited: the step stays due, the message is done."""


def send_step(ctx: SendContext, request: SendRequest, *, now: datetime, redelivered: bool) -> Outcome:
    """Send one step at most once. Raises ``RetryLater`` to leave the message for later, and
    ``WriteNotDone`` when a write kept failing: the message then comes back and the step's stored
    state (its attempt marker) decides what the next attempt does."""
    models = ctx.models
    claim = f"{request.enrollment_id}:{request.step_index}"
    try:
        inbox, counted = _claim_inbox_slot(models, request, claim, now, reclaim_first=redelivered)
    except InboxUnavailable:
        return Outcome.INBOX_UNAVAILABLE
    enrollment = _current(models, request)
    if enrollment is None:
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.STALE
    if request.step_index > 0 and not replies_are_current(inbox, now=now, poll_interval=POLL_INTERVAL):
        # A reply may be waiting unread: dispatch offers the follow-up again once polling caught up.
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.HELD_FOR_REPLIES
    try:
        campaign = ctx.campaign(enrollment.campaign_id)
    except DoesNotExist:
        _stop_enrollment(models, enrollment, EnrollmentState.FAILED, "its campaign was deleted", now)
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.FAILED
    if not attempted_before(enrollment) and suppression.is_suppressed(models, enrollment.email):
        # Checked before the attempt is marked: nothing went out, and nothing ever will. (An earlier
        # attempt that may have sent is settled first, below, as it would be otherwise.)
        _stop_enrollment(models, enrollment, EnrollmentState.SUPPRESSED, "its address is on the suppression list", now)
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.SUPPRESSED
    message_id = step_message_id(
        enrollment.enrollment_id, request.step_index, inbox.address, attempt=int(enrollment.step_attempt)
    )
    try:
        mailbox = ctx.mailboxes.open(inbox)
        if attempted_before(enrollment):
            # An earlier attempt of this step may have sent it: look before sending again.
            settled = _reconcile(models, campaign, enrollment, inbox, mailbox, message_id, claim, now, counted=counted)
            if settled is not None:
                return settled
        try:
            message = _compose(ctx, campaign, enrollment, inbox, request.step_index, message_id, now)
        except (RenderError, MessageBuildError) as error:
            _stop_enrollment(models, enrollment, EnrollmentState.FAILED, str(error), now)
            _release(models, inbox, claim, refund=True, now=now)
            return Outcome.FAILED
        if not _mark_attempt(models, enrollment):
            # Another attempt of this step got there first, or the enrollment moved on meanwhile:
            # leave the message for later, when the stored state says what to do.
            _release(models, inbox, claim, refund=True, now=now)
            raise RetryLater("another attempt of this step is under way", SEND_LEASE_SECONDS)
        thread = None if _starts_thread(campaign, request.step_index) else enrollment.thread_id
        receipt = mailbox.send(message, thread_id=thread)
    except ProviderFailure as failure:
        return _on_failure(ctx, inbox, enrollment, claim, failure, now)
    _record_sent(models, campaign, enrollment, inbox, message_id, receipt, now, reconciled=False)
    if inbox.transient_since is not None:
        _release(models, inbox, claim, refund=False, now=now)  # ends the spell of transient failures
    # Otherwise the claim is left to expire: releasing it would cost a write per email, and the
    # next send from this inbox can't come before the gap anyway (the lease is no longer than it).
    return Outcome.SENT


def _current(models: Models, request: SendRequest) -> Enrollment | None:
    """The enrollment, read strongly consistent, if it still waits for this step."""
    try:
        enrollment = models.enrollment.get(request.enrollment_id, consistent_read=True)
    except DoesNotExist:
        return None
    if enrollment.state != EnrollmentState.ACTIVE or enrollment.step_index != request.step_index:
        return None
    return enrollment


def attempted_before(enrollment: Enrollment) -> bool:
    """Whether an earlier attempt of the enrollment's current step may have reached the provider."""
    marker = enrollment.send_attempt
    return marker is not None and marker.split(":", 1)[0] == str(int(enrollment.step_index))


def _mark_attempt(models: Models, enrollment: Enrollment) -> bool:
    """Record, just before the provider is called, that this step is being attempted.

    False when another attempt marked it first or the enrollment moved on. Our own write, retried
    after a lost answer, finds its own marker: that is told apart by the attempt's id.
    """
    table = models.enrollment
    step = int(enrollment.step_index)
    marker = f"{step}:{secrets.token_hex(6)}"
    # Unmarked for this step, or still marked by the earlier attempt we reconciled against.
    unclaimed = table.send_attempt.does_not_exist() | ~table.send_attempt.startswith(f"{step}:")
    if enrollment.send_attempt is not None:
        unclaimed |= table.send_attempt == enrollment.send_attempt
    if writes.update(
        enrollment,
        actions=[table.send_attempt.set(marker)],
        condition=(table.step_index == step) & (table.state == EnrollmentState.ACTIVE.value) & unclaimed,
    ):
        return True
    if models.enrollment.get(enrollment.enrollment_id, consistent_read=True).send_attempt != marker:
        return False
    enrollment.send_attempt = marker  # our write went through; only its answer was lost
    return True


def _reconcile(
    models: Models,
    campaign: Campaign,
    enrollment: Enrollment,
    inbox: Inbox,
    mailbox: Mailbox,
    message_id: str,
    claim: str,
    now: datetime,
    *,
    counted: bool,
) -> Outcome | None:
    """Settle a step an earlier attempt may have sent; None when it is safe to send it now."""
    found = mailbox.find_sent(message_id)
    if found is not None:
        _record_sent(models, campaign, enrollment, inbox, message_id, found, now, reconciled=True)
        # The lost attempt already counted against the cap: don't count it twice.
        _release(models, inbox, claim, refund=counted, now=now)
        return Outcome.RECONCILED
    if mailbox.confirms_by_sent:
        return None  # not in Sent means not sent (Gmail, Graph)
    # A custom inbox keeps its Sent copy only after SMTP took the message: it may have been
    # delivered without one. Never resend blindly: hold it for a person to decide.
    step = int(enrollment.step_index)
    reason = f"step {step + 1} may have been delivered, but its delivery could not be confirmed"
    if enrollment_states.stop(models, enrollment, EnrollmentState.UNCONFIRMED, reason):
        activity.record(
            models,
            now=now,
            kind="step.unconfirmed",
            message=f"{enrollment.email}: {reason}; it is not sent again by itself",
            campaign_ids=[enrollment.campaign_id],
            details={"enrollment_id": enrollment.enrollment_id, "step": step, "message_id": message_id},
            dedup=f"{enrollment.enrollment_id}.{step}.unconfirmed",
        )
    _release(models, inbox, claim, refund=False, now=now)
    return Outcome.UNCONFIRMED


# ------------------------------------------------------------------------------------ the claim


def _claim_inbox_slot(
    models: Models, request: SendRequest, claim: str, now: datetime, *, reclaim_first: bool
) -> tuple[Inbox, bool]:
    """Take the inbox's send slot, or raise RetryLater saying when to come back. Returns the inbox
    and whether this claim counted against the cap (a claim taken back did not).

    One conditional update, no read: dispatch put the inbox's time zone and gap in the request,
    and the update returns the whole inbox. The first send of a local day takes a second update
    (the counter restarts at 1), which is cheaper than reading the inbox before every send. A
    redelivered message first tries to take back its own claim, so a crash after the claim does
    not count the step against the cap twice.
    """
    table = models.inbox
    inbox = table(request.inbox_id)
    # The cap counts in the inbox's local day now, not the day dispatch saw.
    day = local_day(now, request.timezone).isoformat() if request.timezone else request.local_day
    can_send = (
        (table.status == InboxStatus.CONNECTED.value)
        & (table.paused == False)  # noqa: E712 - a DynamoDB condition, not a Python comparison
        & table.held_since.does_not_exist()
        & (table.rate_limited_until.does_not_exist() | (table.rate_limited_until <= now))
    )
    lease_free = table.send_lease_until.does_not_exist() | (table.send_lease_until < epoch(now))
    sendable = can_send & lease_free & (table.gap_until.does_not_exist() | (table.gap_until <= epoch(now)))
    actions: list[Any] = [
        table.send_claim.set(claim),
        # No longer than the gap: the claim is not released after a send, and must not hold up the
        # next one. FIFO delivers one message per inbox at a time, so the gap is cover enough.
        table.send_lease_until.set(epoch(now) + min(SEND_LEASE_SECONDS, max(request.min_gap_seconds, 1))),
        table.last_sent_at.set(now),
        # Not next_send_at, the send index's key: moving it would cost two index writes per send.
        # Dispatch finds the inbox ready again, and reads gap_until (sendwell.services.dispatch).
        table.gap_until.set(epoch(now) + request.min_gap_seconds),
        table.usage_day.set(day),
    ]
    same_day = table.usage_day == day
    # Our own claim, left by an attempt that died (its lease has run out): take it back uncounted.
    own_claim = can_send & lease_free & same_day & (table.send_claim == claim)
    if reclaim_first and writes.update(inbox, actions=actions, condition=own_claim):
        return inbox, False
    if writes.update(
        inbox,
        actions=[*actions, table.sent_today.add(1)],
        condition=sendable & same_day & (table.sent_today < table.daily_cap),
    ):
        return inbox, True
    if writes.update(inbox, actions=[*actions, table.sent_today.set(1)], condition=sendable & ~same_day):
        return inbox, True
    try:
        current = table.get(request.inbox_id, consistent_read=True)
    except DoesNotExist:
        raise InboxUnavailable("inbox deleted") from None
    if (
        current.status != InboxStatus.CONNECTED
        or current.paused
        or current.held_since is not None
        or (current.rate_limited_until is not None and current.rate_limited_until > now)
    ):
        # Dispatch will enqueue the step again once the inbox can send; retrying here would only
        # walk the message to the dead-letter queue.
        raise InboxUnavailable(str(current.status))
    if current.gap_until and current.gap_until > epoch(now):
        raise RetryLater("the inbox's minimum gap", max(5, int(current.gap_until) - epoch(now)))
    if current.send_lease_until and current.send_lease_until >= epoch(now):
        raise RetryLater("another send holds the inbox", max(5, int(current.send_lease_until) - epoch(now) + 1))
    # The cap is reached for today: dispatch enqueues the step again on the inbox's next local day
    # (retrying the message would walk it to the dead-letter queue).
    raise InboxUnavailable("daily cap")


def _release(models: Models, inbox: Inbox, claim: str, *, refund: bool, now: datetime, healthy: bool = True) -> None:
    """Give the slot back; a refund also un-counts it and frees the gap (nothing was sent), so that
    dispatch offers the inbox's next step at its next tick.

    ``healthy`` says the provider answered: it ends a spell of transient failures (the spell's
    start, ``transient_since``, is what raises a "degraded" notice after a day).
    """
    table = models.inbox
    actions: list[Any] = [table.send_claim.remove(), table.send_lease_until.remove()]
    if refund:
        actions += [table.sent_today.add(-1), table.gap_until.remove()]
    if healthy and inbox.transient_since is not None:
        actions += [table.transient_since.remove(), table.degraded_notified.set(False)]
    elif not healthy and inbox.transient_since is None:
        actions += degraded_watch(table, now=now)  # a day of this raises a "degraded" notice
    # False: the lease expired and another send took the slot; nothing of ours to release.
    writes.update(inbox, actions=actions, condition=table.send_claim == claim)


# ------------------------------------------------------------------------------------ rendering


def _compose(
    ctx: SendContext,
    campaign: Campaign,
    enrollment: Enrollment,
    inbox: Inbox,
    step_index: int,
    message_id: str,
    now: datetime,
) -> EmailMessage:
    """The step as an email; a follow-up threads under the messages before it, under their subject."""
    variables = {**{str(k): str(v) for k, v in enrollment.fields.as_dict().items()}, "email": enrollment.email}
    step = campaign.steps[step_index]
    rendered = render_step(step.subject, step.text, step.html, variables)
    start = _thread_start(campaign, step_index)
    subject = (
        rendered.subject
        if start == step_index
        else render_step(campaign.steps[start].subject, "", None, variables).subject
    )  # people reply under the thread's subject; the builder adds "Re: "
    earlier = [step_message_id(enrollment.enrollment_id, i, inbox.address) for i in range(start, step_index)]
    return build_message(
        from_addr=inbox.address,
        from_name=inbox.display_name,
        to_addr=enrollment.email,
        to_name=" ".join(variables[k].strip() for k in ("first_name", "last_name") if variables.get(k)).strip(),
        subject=subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id,
        in_reply_to=earlier[-1] if earlier else None,
        references=earlier,
        unsubscribe_url=f"{ctx.unsubscribe_base_url}/{enrollment.enrollment_id}",
        unsubscribe_mailto=None,
        date=now,
    )


def _starts_thread(campaign: Campaign, step_index: int) -> bool:
    return step_index == 0 or bool(campaign.steps[step_index].new_thread)


def _thread_start(campaign: Campaign, step_index: int) -> int:
    start = step_index
    while not _starts_thread(campaign, start):
        start -= 1
    return start


# ------------------------------------------------------------------------------------ recording


def _record_sent(
    models: Models,
    campaign: Campaign,
    enrollment: Enrollment,
    inbox: Inbox,
    message_id: str,
    receipt: SentReceipt,
    now: datetime,
    *,
    reconciled: bool,
) -> None:
    step_index = int(enrollment.step_index)
    thread_id = receipt.thread_id or enrollment.thread_id
    if reconciled:
        activity.record(
            models,
            now=now,
            kind="step.reconciled",
            message=f"{enrollment.email}: step {step_index + 1} was already in Sent; recorded, not sent again",
            campaign_ids=[enrollment.campaign_id],
            details={"enrollment_id": enrollment.enrollment_id, "message_id": message_id},
            dedup=f"{enrollment.enrollment_id}.{step_index}.reconciled",
        )
    table = models.enrollment
    actions: list[Any] = [
        table.step_index.set(step_index + 1),
        table.last_sent_at.set(now),
        table.send_attempt.remove(),
        table.sent_attempt.set(int(enrollment.step_attempt)),
        table.step_attempt.remove(),  # the next step's first delivery
    ]
    if receipt.thread_id and receipt.thread_id != enrollment.thread_id:
        # A new thread: index it once, so a reply that names only the thread finds its enrollment.
        actions += [table.thread_id.set(thread_id), table.thread_key.set(f"{inbox.inbox_id}#{receipt.thread_id}")]
    if receipt.provider_message_id:
        actions.append(table.provider_message_ids.set(table.provider_message_ids.append([receipt.provider_message_id])))
    if step_index + 1 < len(campaign.steps):
        delay = int(campaign.steps[step_index + 1].delay_seconds)
        actions.append(table.due_at.set(epoch(now) + delay))
    else:
        actions += [
            table.state.set(EnrollmentState.FINISHED.value),
            table.due_inbox.remove(),
            table.due_at.remove(),
        ]
    # False: already advanced by the attempt that recorded it first.
    writes.update(enrollment, actions=actions, condition=table.step_index == step_index)


def _stop_enrollment(
    models: Models, enrollment: Enrollment, state: EnrollmentState, reason: str, now: datetime
) -> None:
    if not enrollment_states.stop(models, enrollment, state, reason):
        return  # it stopped for another reason first
    activity.record(
        models,
        now=now,
        kind=f"enrollment.{state.value}",
        message=f"{enrollment.email}: {reason}",
        campaign_ids=[enrollment.campaign_id],
        details={"enrollment_id": enrollment.enrollment_id, "step": int(enrollment.step_index)},
        dedup=f"{enrollment.enrollment_id}.{state.value}",
    )


# ------------------------------------------------------------------------------------ failures


def _on_failure(
    ctx: SendContext, inbox: Inbox, enrollment: Enrollment, claim: str, error: ProviderFailure, now: datetime
) -> Outcome:
    failure = error.failure
    models = ctx.models
    if not error.delivery_unknown:
        _clear_attempt(models, enrollment)  # the provider answered before taking the message
    if failure.kind.is_auth_failure:
        ctx.auth_failures.report(AuthFailureReport.of(inbox, failure, at=now, source="send"))
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.AUTH_FAILURE
    if failure.kind is FailureKind.RATE_LIMITED:
        until = now + (timedelta(seconds=failure.retry_after) if failure.retry_after else DEFAULT_RATE_LIMIT_PAUSE)
        writes.update(inbox, actions=[models.inbox.rate_limited_until.set(until)], condition=None)
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.INBOX_UNAVAILABLE
    if failure.kind is FailureKind.RECIPIENT_REJECTED:
        _stop_enrollment(models, enrollment, EnrollmentState.BOUNCED, failure.reason, now)
        _release(models, inbox, claim, refund=False, now=now)
        return Outcome.RECIPIENT_REJECTED
    if failure.kind is FailureKind.BAD_MESSAGE:
        _stop_enrollment(models, enrollment, EnrollmentState.FAILED, failure.reason, now)
        _release(models, inbox, claim, refund=True, now=now)
        return Outcome.FAILED
    # Transient. When the provider may have taken the message (a timeout after SMTP DATA), the
    # attempt marker stays, and the retry looks in Sent before sending again.
    _release(models, inbox, claim, refund=True, now=now, healthy=False)
    raise RetryLater(f"transient provider failure {failure.code}", int(failure.retry_after or 60), failure=failure.kind)


def _clear_attempt(models: Models, enrollment: Enrollment) -> None:
    table = models.enrollment
    marker = enrollment.send_attempt
    if marker is None:
        return
    # False: the step moved on or another attempt marked it since; its marker is not ours to clear.
    writes.update(enrollment, actions=[table.send_attempt.remove()], condition=table.send_attempt == marker)
