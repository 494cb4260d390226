"""A finished reconnect: what it did, in words, in the logs, and who is told (once each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sendwell.models import BacklogMode, Campaign, Inbox, Models, ReconnectLink
from sendwell.ports.platform import NoticeContext
from sendwell.services import activity, notices
from sendwell.services.backlog import BacklogRelease
from sendwell.services.polling import PollResult


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """What the catch-up poll found in the mail that arrived while the inbox was disconnected."""

    fetched: int = 0
    replies: int = 0
    bounces: int = 0
    failure: str | None = None  # the failure code when the catch-up could not run

    @classmethod
    def of(cls, result: PollResult) -> CaughtUp:
        outcomes = result.outcomes
        return cls(result.fetched, outcomes["reply"], outcomes["bounce"], result.failure)


@dataclass(frozen=True, slots=True)
class ReconnectOutcome:
    """What a reconnect did; stored on the inbox with its move to connected (``reconnect_outcome``),
    so the notices sent by a retry, after a fault, say what the first run did."""

    caught_up: CaughtUp | None  # None when the inbox was connected already (a renewed sign-in)
    backlog: BacklogRelease

    def to_json(self) -> dict[str, Any]:
        backlog = asdict(self.backlog) | {"mode": self.backlog.mode.value}
        for slot in ("first_slot", "last_slot"):
            backlog[slot] = backlog[slot].isoformat() if backlog[slot] else None
        return {"caught_up": asdict(self.caught_up) if self.caught_up else None, "backlog": backlog}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReconnectOutcome:
        backlog = dict(data["backlog"])
        backlog["mode"] = BacklogMode(backlog["mode"])
        for slot in ("first_slot", "last_slot"):
            backlog[slot] = datetime.fromisoformat(backlog[slot]) if backlog[slot] else None
        caught_up = data.get("caught_up")
        return cls(caught_up=CaughtUp(**caught_up) if caught_up else None, backlog=BacklogRelease(**backlog))


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A finished reconnect; ``send_notices`` tells the people and integrations about it."""

    inbox: Inbox
    link: ReconnectLink
    workspace_name: str
    outcome: ReconnectOutcome
    at: datetime  # when the owner's new sign-in took effect

    @property
    def caught_up(self) -> CaughtUp | None:
        return self.outcome.caught_up

    @property
    def backlog(self) -> BacklogRelease:
        return self.outcome.backlog

    @property
    def catch_up_failed(self) -> bool:
        return self.caught_up is not None and self.caught_up.failure is not None

    def log_fields(self) -> dict[str, object]:
        """What the worker's log line says about this reconnect (no address, no secret)."""
        return {
            "caught_up": self.caught_up.fetched if self.caught_up else None,
            "catch_up_failure": self.caught_up.failure if self.caught_up else None,
            "backlog_mode": self.backlog.mode.value,
            "released": self.backlog.released,
        }

    def catch_up_summary(self) -> str:
        caught_up = self.caught_up
        if caught_up is None:
            return "The inbox was connected already; its new sign-in replaces the old one."
        if caught_up.failure is not None:
            return "The mail that arrived while it was disconnected could not be checked yet."
        if not caught_up.fetched:
            return "No mail arrived while it was disconnected."
        arrived = f"{notices.count(caught_up.fetched, 'message')} arrived while it was disconnected"
        if not caught_up.replies + caught_up.bounces:
            return f"{arrived}; none of them needed a sequence to stop."
        return (
            f"{arrived}: {notices.count(caught_up.replies, 'reply', 'replies')} and "
            f"{notices.count(caught_up.bounces, 'bounce')}, whose follow-ups are stopped."
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

    Runs in the reconnect worker once the inbox is connected; a mail service failing here fails
    the task, and its redelivery sends only what is still missing.
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
