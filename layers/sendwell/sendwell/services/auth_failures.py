"""What happens when an inbox loses permission: disconnect once, notify once per incident, remind.

Reports arrive from sends and polls through the auth-failure queue, often many at once for one
inbox. Exactly one of them moves the inbox ``connected -> disconnected`` (a conditional write)
and opens an *incident*; the others are absorbed. Every side effect of an incident - pausing its
campaigns, each notice, the SNS event, the log entries - runs through ``Once`` keyed on the
incident, so whichever report comes next (the winner's own redelivery included) finishes what a
failed SES or SNS call left undone, and nothing is ever done twice.

Reminders and the "degraded" notice are the reminders function's work (``services.attention``).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from sendwell import writes
from sendwell.clock import epoch
from sendwell.failures import FailureKind
from sendwell.models import Campaign, Inbox, InboxStatus, Models
from sendwell.ports.messages import AuthFailureReport
from sendwell.ports.platform import Email, EventPublisher, Mailer, Once
from sendwell.services import activity, breaker, links, notices, owner_links
from sendwell.services.breaker import BreakerSettings
from sendwell.services.inbox_health import ATTENTION_SHARDS, DEGRADED_AFTER
from sendwell.services.lookups import campaigns_on

REMINDER_DELAYS = (timedelta(hours=24), timedelta(hours=72))
# A report about an inbox already disconnected finishes that incident's notices only this long
# after the failure. It is far longer than SQS redelivers a message (5 receives) and far shorter
# than the idempotency records live, so a report redriven from the DLQ weeks later can't send a
# notice again after its record has expired. (Reminders go out regardless.)
NOTICE_RETRY_WINDOW = timedelta(days=3)


class Verdict(enum.StrEnum):
    DISCONNECTED = "disconnected"  # this report made the transition
    TRIPPED = "tripped"  # this report tripped the mass-disconnect breaker: ops alarm, inbox held
    HELD = "held"  # the breaker is tripped: the inbox is held, not disconnected
    ABSORBED = "absorbed"  # the inbox was already disconnected (or not connected)
    APP_CONFIG = "app_config"  # ops notified; no inbox touched
    IGNORED = "ignored"  # transient, unknown inbox, or older than the inbox's last reconnect


@dataclass(frozen=True, slots=True)
class IncidentContext:
    models: Models
    mailer: Mailer
    events: EventPublisher
    once: Once
    workspace_name: str
    admin_emails: tuple[str, ...]
    public_base_url: str
    reminder_delays: tuple[timedelta, ...] = field(default=REMINDER_DELAYS)
    degraded_after: timedelta = DEGRADED_AFTER
    notice_retry_window: timedelta = NOTICE_RETRY_WINDOW
    # The auth-failure handler weighs losses against the provider's other inboxes; other users of
    # this context (reminders) only send notices.
    breaker: BreakerSettings | None = None


# ------------------------------------------------------------------------------------ reports


def handle_report(ctx: IncidentContext, report: AuthFailureReport, *, now: datetime) -> Verdict:
    kind = FailureKind(report.kind)
    if kind is FailureKind.APP_CONFIG:
        _notify_app_config(ctx, report, now)
        return Verdict.APP_CONFIG
    if not kind.disconnects:
        return Verdict.IGNORED
    try:
        inbox = ctx.models.inbox.get(report.inbox_id, consistent_read=True)
    except DoesNotExist:
        return Verdict.IGNORED
    verdict = Verdict.ABSORBED
    if inbox.status == InboxStatus.CONNECTED:
        if not report.conclusive and ctx.breaker is not None:
            held = _weigh(ctx, ctx.breaker, inbox, report, now)
            if held is not None:
                return held
        if _disconnect(ctx, inbox, report, now):
            verdict = Verdict.DISCONNECTED
        elif inbox.status == InboxStatus.CONNECTED:
            return Verdict.IGNORED  # the failure predates a reconnect: the new grant is fine
    retry_follow_up = inbox.status == InboxStatus.DISCONNECTED and _incident_is_recent(ctx, inbox, now)
    if inbox.incident_id and (verdict is Verdict.DISCONNECTED or retry_follow_up):
        # Runs for the winner and for later reports: finishes what a failed SES or SNS call left
        # undone. Once the whole follow-up has succeeded, a late report costs one idempotency lookup.
        ctx.once.run(f"{inbox.incident_id}:follow-up", lambda: _follow_up(ctx, inbox, now))
    return verdict


def _weigh(
    ctx: IncidentContext, settings: BreakerSettings, inbox: Inbox, report: AuthFailureReport, now: datetime
) -> Verdict | None:
    """None: go on and disconnect. Raises breaker.Settling while the loss is too recent to judge."""
    failed_at = _report_time(report)
    if report.source == "poll" and inbox.last_polled_at is not None and inbox.last_polled_at > failed_at:
        breaker.release(ctx.models, inbox, now=now)  # a later poll signed in: the loss did not last
        return Verdict.IGNORED
    trip = breaker.weigh(ctx.models, settings, inbox, report, failed_at=failed_at, now=now)
    if trip is None:
        return None
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.held",
        message=(
            f"Sending from {inbox.address} is held, not disconnected: {trip.inboxes} of {trip.connected} connected "
            f"{notices.provider_name(trip.provider)} inboxes lost permission at once, which points at the app's "
            "own configuration. Its owner was not told; it resumes by itself once the cause is fixed."
        ),
        inbox_id=inbox.inbox_id,
        details={"code": report.code, "tripped_at": trip.tripped_at},
        dedup=f"held.{trip.tripped_at}",
    )
    ctx.once.run(f"breaker:{trip.provider}:{trip.tripped_at}:notice", lambda: _notify_trip(ctx, trip))
    return Verdict.TRIPPED if trip.new else Verdict.HELD


def _notify_trip(ctx: IncidentContext, trip: breaker.Trip) -> str:
    if not ctx.admin_emails:
        return "no admins"
    name = notices.provider_name(trip.provider)
    email = notices.app_config(
        workspace=ctx.workspace_name,
        provider=trip.provider,
        code=f"breaker: {', '.join(trip.codes)}",
        reason=(
            f"{trip.inboxes} of {trip.connected} connected {name} inboxes ({trip.share:.0%}) reported a "
            "permission loss within minutes of each other. So many at once is almost always the app's own "
            "configuration, not each person's account"
        ),
        fix=(
            f"Operator: check the {name} app first. Google: is the OAuth consent screen still in Testing "
            "(its grants end after 7 days)? Was the client secret or a scope changed? Microsoft: did the app "
            "registration lose a permission (Mail.Send, Mail.ReadWrite) or admin consent, or did its secret "
            "change? These inboxes are held, not disconnected, and their owners were not told; each resumes "
            "by itself at its next successful poll once the cause is fixed. One that still fails after the "
            "breaker closes is disconnected and its owner told as usual"
        ),
        to=ctx.admin_emails,
    )
    return ctx.mailer.send(email)


def _follow_up(ctx: IncidentContext, inbox: Inbox, now: datetime) -> str:
    # Each step is once-only by itself, so a retry after a failure half way repeats none of them.
    _pause_campaigns(ctx, inbox, now)
    notify_incident(ctx, inbox, now=now, reminder=0)
    return "done"


def _report_time(report: AuthFailureReport) -> datetime:
    at = datetime.fromisoformat(report.at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _incident_is_recent(ctx: IncidentContext, inbox: Inbox, now: datetime) -> bool:
    return inbox.failed_at is not None and now - inbox.failed_at <= ctx.notice_retry_window


def _disconnect(ctx: IncidentContext, inbox: Inbox, report: AuthFailureReport, now: datetime) -> bool:
    """The one conditional transition; on losing it, ``inbox`` is refreshed to what won."""
    table = ctx.models.inbox
    failed_at = _report_time(report)
    actions: list[Action] = [
        table.status.set(InboxStatus.DISCONNECTED.value),
        table.status_code.set(report.code),
        table.status_reason.set(report.reason),
        table.status_fix.set(report.fix),
        table.failed_at.set(failed_at),
        table.incident_id.set("inc_" + secrets.token_hex(8)),
        table.reminders_sent.set(0),
        # Nothing to poll with any more; the reconnect schedules polling again. Pending steps are
        # not touched: dispatch skips a disconnected inbox, so they wait, due, for the reconnect.
        table.poll_shard.remove(),
        table.send_shard.remove(),  # off the send index too: the reconnect puts it back
        # A degraded spell ends here: the inbox is now plainly disconnected.
        table.transient_since.remove(),
        table.degraded_notified.set(False),
        table.held_since.remove(),  # a hold ends in the disconnect it was weighing
        table.held_reason.remove(),
    ]
    if ctx.reminder_delays:
        actions += [
            table.attention_shard.set(str(secrets.randbelow(ATTENTION_SHARDS))),
            table.attention_at.set(epoch(now + ctx.reminder_delays[0])),
        ]
    # A report written before the inbox's last reconnect is about the old grant: ignore it.
    fresh = table.reconnected_at.does_not_exist() | (table.reconnected_at < failed_at)
    if report.credentials_version >= 0:
        # Made with credentials replaced since (renewed while connected): not about the current ones.
        fresh &= table.credentials_version == report.credentials_version
    if not writes.update(inbox, actions=actions, condition=(table.status == InboxStatus.CONNECTED.value) & fresh):
        inbox.refresh(consistent_read=True)
        return False
    return True


def _pause_campaigns(ctx: IncidentContext, inbox: Inbox, now: datetime) -> None:
    """Mark every campaign on the inbox "paused because the inbox is disconnected", and log why."""

    def pause() -> str:
        table = ctx.models.campaign
        affected: list[Campaign] = []
        for campaign in campaigns_on(ctx.models, inbox.inbox_id):
            if not writes.update(
                campaign,
                actions=[table.disconnected_inbox_ids.add({inbox.inbox_id})],
                condition=table.campaign_id.exists(),
            ):
                continue
            affected.append(campaign)
        reason = notices.UNKNOWN_REASON if not inbox.status_reason else inbox.status_reason.rstrip(".")
        activity.record(
            ctx.models,
            now=now,
            kind="inbox.disconnected",
            message=(
                f"Sending from {inbox.address} is paused because the inbox was disconnected: {reason}. "
                "Pending steps are kept and resume after a reconnect."
            ),
            inbox_id=inbox.inbox_id,
            campaign_ids=[c.campaign_id for c in affected],
            details={"code": inbox.status_code, "incident_id": inbox.incident_id},
            dedup=inbox.incident_id,
        )
        return str(len(affected))

    ctx.once.run(f"{inbox.incident_id}:campaigns", pause)


# ------------------------------------------------------------------------------------ notices


def notify_incident(ctx: IncidentContext, inbox: Inbox, *, now: datetime, reminder: int) -> None:
    """Email the admins, the owner and the inbox itself (once each), and on the first notice
    (``reminder`` 0) publish ``inbox.disconnected``. Each email carries its own fresh link."""
    incident = inbox.incident_id
    campaigns = campaigns_on(ctx.models, inbox.inbox_id)
    if reminder == 0:
        # First, so integrations hear of it even while SES refuses our emails (a sandboxed account).
        ctx.once.run(f"{incident}:sns", lambda: _publish_disconnected(ctx, inbox, campaigns))
    recipients = notices.recipients(ctx.admin_emails, inbox)
    for recipient in recipients:
        if recipient.role is notices.Role.OWNER and _notify_owner_once(ctx, recipient.address, reminder, now):
            continue

        def deliver(recipient: notices.Recipient = recipient) -> str:
            return _send_disconnect_notice(ctx, inbox, recipient, [c.name for c in campaigns], reminder, now)

        ctx.once.run(f"{incident}:{reminder}:email:{recipient.address}", deliver)

    def log() -> str:
        what = f"Reminder {reminder}" if reminder else "Disconnect notice"
        activity.record(
            ctx.models,
            now=now,
            kind="notice.reminder" if reminder else "notice.sent",
            message=f"{what} sent to: {', '.join(r.role.value for r in recipients)}",
            inbox_id=inbox.inbox_id,
            details={"incident_id": incident, "reminder": reminder},
            dedup=f"{incident}.{reminder}",
        )
        return "logged"

    ctx.once.run(f"{incident}:{reminder}:log", log)


def _notify_owner_once(ctx: IncidentContext, owner: str, reminder: int, now: datetime) -> bool:
    """An owner with several inboxes down gets one notice with one link for them all, once a day
    (per reminder); False when this is their only one, which gets the inbox's own notice."""
    waiting = owner_links.disconnected_of(ctx.models, owner)
    if len(waiting) < 2:
        return False

    def deliver() -> str:
        issued = links.create_owner_link(ctx.models, owner_email=owner, created_by="notice:owner", now=now)
        return mail_with_link(
            ctx,
            issued,
            lambda url: notices.owner_disconnected(
                workspace=ctx.workspace_name,
                owner=owner,
                inboxes=waiting,
                admin_emails=ctx.admin_emails,
                reconnect_url=url,
                link_expires=issued.link.expires_at,
                reminder=reminder,
            ),
        )

    # The link covers inboxes that go down later the same day: its page lists them as they are.
    ctx.once.run(f"owner:{owner}:{reminder}:{now:%Y-%m-%d}", deliver)
    return True


def _send_disconnect_notice(
    ctx: IncidentContext,
    inbox: Inbox,
    recipient: notices.Recipient,
    campaigns: list[str],
    reminder: int,
    now: datetime,
) -> str:
    issued = links.create_link(ctx.models, inbox_id=inbox.inbox_id, created_by=f"notice:{recipient.role}", now=now)
    return mail_with_link(
        ctx,
        issued,
        lambda url: notices.disconnected(
            workspace=ctx.workspace_name,
            inbox=inbox,
            recipient=recipient,
            admin_emails=ctx.admin_emails,
            reconnect_url=url,
            link_expires=issued.link.expires_at,
            campaigns=campaigns,
            reminder=reminder,
        ),
    )


def mail_with_link(ctx: IncidentContext, issued: links.IssuedLink, compose: Callable[[str], Email]) -> str:
    """Send the email ``compose`` makes around the link's URL. If the send fails, nobody ever saw the
    token: the link is revoked (out of the inbox's active links), and the retry makes a new one."""
    email = compose(f"{ctx.public_base_url}/r/{issued.token}")
    try:
        return ctx.mailer.send(email)
    except BaseException:
        links.revoke_link(ctx.models, issued.link)
        raise


def _publish_disconnected(ctx: IncidentContext, inbox: Inbox, campaigns: list[Campaign]) -> str:
    """``inbox.disconnected``, as documented in docs/events.md."""
    ctx.events.publish(
        "inbox.disconnected",
        {
            "workspace": ctx.workspace_name,
            "inbox_id": inbox.inbox_id,
            "address": inbox.address,
            "provider": inbox.provider,
            "code": inbox.status_code,
            "reason": inbox.status_reason,
            "fix": inbox.status_fix,
            "failed_at": inbox.failed_at.isoformat() if inbox.failed_at else None,
            "incident_id": inbox.incident_id,
            "campaign_ids": sorted(c.campaign_id for c in campaigns),
        },
        dedup_key=f"{inbox.incident_id}:disconnected",
    )
    return "published"


def _notify_app_config(ctx: IncidentContext, report: AuthFailureReport, now: datetime) -> None:
    """One notice per error code per hour: an expired client secret fails every inbox at once."""
    if not ctx.admin_emails:
        return
    email = notices.app_config(
        workspace=ctx.workspace_name,
        provider=report.provider,
        code=report.code,
        reason=report.reason,
        fix=report.fix,
        to=ctx.admin_emails,
    )
    ctx.once.run(f"app_config:{report.provider}:{report.code}:{now:%Y-%m-%dT%H}", lambda: ctx.mailer.send(email))
