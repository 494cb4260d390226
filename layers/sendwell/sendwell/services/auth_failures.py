"""What happens when an inbox loses permission: disconnect once, notify once per incident.

Reports arrive from sends and polls through the auth-failure queue, often many at once for one
inbox. Exactly one of them moves the inbox ``connected -> disconnected`` (a conditional write);
the others are absorbed. Notices are sent by whichever report comes next if the first one failed
half way, and never twice: each notice is delivered through ``Once`` keyed on the incident and
the recipient, so a retried SES or SNS call can't produce a duplicate.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pynamodb.exceptions import DoesNotExist, UpdateError

from sendwell.clock import epoch
from sendwell.failures import FailureKind
from sendwell.models import POLL_SHARDS, Campaign, Inbox, InboxStatus, Models
from sendwell.ports import AuthFailureReport, EventPublisher, Mailer
from sendwell.services import activity, links, notices

REMINDER_DELAYS = (timedelta(hours=24), timedelta(hours=72))
DEGRADED_AFTER = timedelta(hours=24)


class Once(Protocol):
    def run(self, key: str, action: Callable[[], str]) -> str:
        """Run ``action`` at most once per ``key`` (a failed run may be retried)."""


class Verdict(enum.StrEnum):
    DISCONNECTED = "disconnected"  # this report made the transition
    ABSORBED = "absorbed"  # the inbox was already disconnected (or not connected)
    APP_CONFIG = "app_config"  # ops notified; no inbox touched
    IGNORED = "ignored"  # transient or unknown inbox: never a disconnect


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
    if inbox.status == InboxStatus.CONNECTED and _disconnect(ctx, inbox, report, now):
        verdict = Verdict.DISCONNECTED
    if inbox.status == InboxStatus.DISCONNECTED and inbox.incident_id:
        # Runs for the winner and for every later report: finishes notices a crash interrupted.
        notify_incident(ctx, inbox, now=now, reminder=0)
    return verdict


def _disconnect(ctx: IncidentContext, inbox: Inbox, report: AuthFailureReport, now: datetime) -> bool:
    table = ctx.models.inbox
    first_reminder = now + ctx.reminder_delays[0] if ctx.reminder_delays else None
    actions: list[Any] = [
        table.status.set(InboxStatus.DISCONNECTED.value),
        table.status_code.set(report.code),
        table.status_reason.set(report.reason),
        table.status_fix.set(report.fix),
        table.failed_at.set(datetime.fromisoformat(report.at)),
        table.incident_id.set("inc_" + secrets.token_hex(8)),
        table.reminders_sent.set(0),
        # Stop polling (nothing to poll with) and drop any send lease; pending steps stay pending.
        table.poll_shard.remove(),
        table.next_poll_at.remove(),
        table.send_claim.remove(),
        table.send_lease_until.remove(),
    ]
    if first_reminder is not None:
        actions += [
            table.attention_shard.set(str(secrets.randbelow(POLL_SHARDS))),
            table.attention_at.set(epoch(first_reminder)),
        ]
    try:
        inbox.update(actions=actions, condition=table.status == InboxStatus.CONNECTED.value)
    except UpdateError:
        inbox.refresh(consistent_read=True)
        return False
    affected = _campaigns_on(ctx.models, inbox.inbox_id)
    for campaign in affected:
        campaign.update(actions=[ctx.models.campaign.disconnected_inbox_ids.add({inbox.inbox_id})])
    activity.record(
        ctx.models,
        now=now,
        kind="inbox.disconnected",
        message=f"{inbox.address} disconnected: {report.reason}. Sending paused; pending steps kept.",
        inbox_id=inbox.inbox_id,
        campaign_ids=[c.campaign_id for c in affected],
        details={"code": report.code, "source": report.source, "incident_id": inbox.incident_id},
        dedup=inbox.incident_id,
    )
    return True


def _campaigns_on(models: Models, inbox_id: str) -> list[Campaign]:
    # Campaigns are few per workspace; a filtered scan beats an index paid on every campaign write.
    return list(models.campaign.scan(models.campaign.inbox_ids.contains(inbox_id)))


def notify_incident(ctx: IncidentContext, inbox: Inbox, *, now: datetime, reminder: int) -> None:
    """Email the admins, the owner and the inbox itself, and publish the SNS event, once each."""
    incident = inbox.incident_id
    campaigns = [c.name for c in _campaigns_on(ctx.models, inbox.inbox_id)]
    recipients = _recipients(ctx, inbox)
    for role, address in recipients:

        def deliver(role: str = role, address: str = address) -> str:
            issued = links.create_link(ctx.models, inbox_id=inbox.inbox_id, created_by=f"notice:{role}", now=now)
            subject = (
                f"Reminder: {inbox.address} is still disconnected"
                if reminder
                else f"Action needed: {inbox.address} was disconnected"
            )
            email = notices.compose(
                "disconnected",
                to=[address],
                subject=subject,
                variables={
                    "workspace": ctx.workspace_name,
                    "inbox_address": inbox.address,
                    "inbox_name": inbox.display_name,
                    "reason": inbox.status_reason or "the provider refused our access",
                    "fix": inbox.status_fix or "",
                    "role": role,
                    "reconnect_url": f"{ctx.public_base_url}/r/{issued.token}",
                    "expires": issued.link.expires_at.strftime("%d %B %Y at %H:%M UTC"),
                    "campaigns": campaigns,
                    "reminder": reminder,
                    "failed_at": inbox.failed_at.strftime("%d %B %Y %H:%M UTC") if inbox.failed_at else "",
                },
            )
            return ctx.mailer.send(email)

        ctx.once.run(f"{incident}:{reminder}:email:{address}", deliver)
    if reminder == 0:
        ctx.once.run(
            f"{incident}:sns",
            lambda: _publish_disconnected(ctx, inbox),
        )
        activity.record(
            ctx.models,
            now=now,
            kind="notice.sent",
            message=f"Disconnect notice sent to {', '.join(role for role, _ in recipients)}",
            inbox_id=inbox.inbox_id,
            dedup=f"{incident}.notices",
        )


def _recipients(ctx: IncidentContext, inbox: Inbox) -> list[tuple[str, str]]:
    """(role, address) for each distinct address: admins first, then the owner, then the inbox."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    candidates = [("admin", a) for a in ctx.admin_emails] + [("owner", inbox.owner_email), ("inbox", inbox.address)]
    for role, address in candidates:
        key = address.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append((role, key))
    return out


def _publish_disconnected(ctx: IncidentContext, inbox: Inbox) -> str:
    ctx.events.publish(
        "inbox.disconnected",
        {
            "inbox_id": inbox.inbox_id,
            "address": inbox.address,
            "provider": inbox.provider,
            "code": inbox.status_code,
            "reason": inbox.status_reason,
            "fix": inbox.status_fix,
            "failed_at": inbox.failed_at.isoformat() if inbox.failed_at else None,
            "incident_id": inbox.incident_id,
        },
        dedup_key=f"{inbox.incident_id}:disconnected",
    )
    return "published"


def _notify_app_config(ctx: IncidentContext, report: AuthFailureReport, now: datetime) -> None:
    """One notice per error code per hour: an expired client secret fails every inbox at once."""
    provider = notices.provider_name(report.provider)
    email = notices.compose(
        "app_config",
        to=ctx.admin_emails,
        subject=f"Action needed: the {provider} app configuration is failing",
        variables={
            "workspace": ctx.workspace_name,
            "provider_name": provider,
            "reason": report.reason,
            "fix": report.fix,
            "code": report.code,
        },
    )
    if ctx.admin_emails:
        ctx.once.run(f"app_config:{report.code}:{now.strftime('%Y%m%d%H')}", lambda: ctx.mailer.send(email))
