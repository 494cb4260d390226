"""A finished reconnect: what it did, in words, in the logs, and who is told (once each)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sendwell.models import Campaign, Inbox, Models, ReconnectLink
from sendwell.ports.platform import NoticeContext
from sendwell.services import activity, notices
from sendwell.services.backlog import BacklogRelease
from sendwell.services.polling import PollResult


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A finished reconnect; ``send_notices`` tells the people and integrations about it."""

    inbox: Inbox
    link: ReconnectLink
    workspace_name: str
    caught_up: PollResult | None  # None when the inbox was connected already
    backlog: BacklogRelease
    at: datetime

    @property
    def catch_up_failed(self) -> bool:
        return self.caught_up is not None and self.caught_up.failure is not None

    def log_fields(self) -> dict[str, object]:
        """What the handler's log line says about this reconnect (no address, no secret)."""
        return {
            "caught_up": self.caught_up.fetched if self.caught_up else None,
            "catch_up_failure": self.caught_up.failure if self.caught_up else None,
            "backlog_mode": self.backlog.mode.value,
            "released": self.backlog.released,
        }

    def catch_up_summary(self) -> str:
        if self.caught_up is None:
            return "The inbox was connected already; its new sign-in replaces the old one."
        if self.caught_up.failure is not None:
            return "The mail that arrived while it was disconnected could not be checked yet."
        outcomes, fetched = self.caught_up.outcomes, self.caught_up.fetched
        if not fetched:
            return "No mail arrived while it was disconnected."
        arrived = f"{notices.count(fetched, 'message')} arrived while it was disconnected"
        stopped = outcomes["reply"] + outcomes["bounce"]
        if not stopped:
            return f"{arrived}; none of them needed a sequence to stop."
        return (
            f"{arrived}: {notices.count(outcomes['reply'], 'reply', 'replies')} and "
            f"{notices.count(outcomes['bounce'], 'bounce')}, whose follow-ups are stopped."
        )


def log_reconnect(models: Models, result: Reconnected, campaigns: Sequence[Campaign], now: datetime) -> None:
    inbox, link = result.inbox, result.link
    details = {
        "link_id": link.link_id,
        "created_by": link.created_by,
        "backlog_mode": result.backlog.mode.value,
        "released": result.backlog.released,
        "late_skipped": result.backlog.late_skipped,
        "late_held": result.backlog.late_held,
    }
    if result.caught_up is not None:
        details |= {"caught_up": result.caught_up.fetched, "catch_up_failure": result.caught_up.failure or ""}
    activity.record(
        models,
        now=now,
        kind="inbox.reconnected",
        message=f"{inbox.address} reconnected. {result.catch_up_summary()} {result.backlog.summary()}",
        inbox_id=inbox.inbox_id,
        details=details,
        dedup=f"{link.link_id}.reconnected",
    )
    if result.caught_up is not None:
        activity.record(
            models,
            now=now,
            kind="campaign.resumed" if not result.backlog.held else "campaign.held",
            message=f"{inbox.address} is connected again. {result.backlog.summary()}",
            campaign_ids=[c.campaign_id for c in campaigns],
            details=details,
            dedup=f"{link.link_id}.resumed",
        )


def send_notices(ctx: NoticeContext, result: Reconnected) -> None:
    """Email the link's creator and the owner, and publish ``inbox.reconnected``: once each.

    Separate from the reconnect itself, which is complete by then: a mail service failing here
    must not turn the owner's success into an error page (the caller logs and counts it).
    """
    inbox, link, now = result.inbox, result.link, result.at
    variables = {
        "workspace": ctx.workspace_name,
        "inbox_address": inbox.address,
        "inbox_name": inbox.display_name,
        "provider_name": notices.provider_name(inbox.provider),
        "reconnected_at": now.strftime(notices.DATE),
        "catch_up": result.catch_up_summary(),
        "backlog": result.backlog.summary(),
        "held": result.backlog.held,
    }
    creators = notices.creator_addresses(link.created_by, ctx.admin_emails)
    for address in creators:
        subject = f"{inbox.address} is reconnected"
        email = notices.compose("reconnected", to=[address], subject=subject, variables=variables)
        ctx.once.run(f"reconnect:{link.link_id}:email:{address}", partial(ctx.mailer.send, email))
    owner = inbox.owner_email.strip().lower()
    if owner and owner not in creators:
        email = notices.compose(
            "reconnect_confirmed",
            to=[owner],
            subject=f"Thanks: {inbox.address} is connected again",
            variables=variables,
            reply_to=ctx.admin_emails,
        )
        ctx.once.run(f"reconnect:{link.link_id}:email:{owner}", partial(ctx.mailer.send, email))
    ctx.once.run(f"reconnect:{link.link_id}:sns", lambda: _publish_reconnected(ctx, result))


def _publish_reconnected(ctx: NoticeContext, result: Reconnected) -> str:
    inbox, link, now = result.inbox, result.link, result.at
    ctx.events.publish(
        "inbox.reconnected",
        {
            "inbox_id": inbox.inbox_id,
            "address": inbox.address,
            "provider": inbox.provider,
            "reconnected_at": now.isoformat(),
            "link_id": link.link_id,
            "caught_up": result.caught_up.fetched if result.caught_up else 0,
            "catch_up_failed": result.catch_up_failed,
            "backlog_mode": result.backlog.mode.value,
            "released": result.backlog.released,
            "held": result.backlog.held,
        },
        dedup_key=f"{link.link_id}:reconnected",
    )
    return "published"
