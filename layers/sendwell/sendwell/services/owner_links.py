"""One link for all of an owner's disconnected inboxes.

Opening it gives the owner a session of their own (its cookie apart from an inbox's), and a page
that lists their inboxes that need a sign-in. Each "Reconnect" on it makes that inbox a short-lived
link of its own and opens it, so the sign-in that follows is the inbox's usual flow with the usual
proof (the same Google or Microsoft account, or a password both servers accept). Back on the page,
the next inbox is waiting. The owner link itself is never used up: it only ever leads to those
proofs, and it expires like any link.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from pynamodb.exceptions import DoesNotExist

from sendwell.models import BacklogMode, Inbox, InboxStatus, Models, ReconnectLink, WebSession
from sendwell.services import links, reconnect
from sendwell.services.reconnect import OpenedSession, ReconnectContext, RequestRejected, SessionMissing

# An inbox's link made from the owner page is opened at once; it need not outlive the sign-in.
STEP_LINK_LIFETIME = timedelta(minutes=30)
NEEDS_SIGN_IN = (InboxStatus.DISCONNECTED.value,)
DONE = (InboxStatus.RECONNECTING.value, InboxStatus.CONNECTED.value)


@dataclass(frozen=True, slots=True)
class OwnerVisit:
    session: WebSession
    link: ReconnectLink
    owner_email: str
    waiting: list[Inbox]  # disconnected: each has its Reconnect button
    done: list[Inbox]  # reconnected (or reconnecting) since the link was made


def owner_inboxes(models: Models, owner_email: str) -> list[Inbox]:
    """Every inbox whose owner is ``owner_email`` (in any case), by address."""
    wanted = owner_email.strip().lower()
    table = models.inbox
    # A scan: owner pages and owner notices are rare next to sends and polls, and an owner index
    # would cost a write on every inbox change.
    found = table.scan(filter_condition=table.owner_email.exists())
    return sorted((i for i in found if i.owner_email.strip().lower() == wanted), key=lambda i: i.address)


def disconnected_of(models: Models, owner_email: str) -> list[Inbox]:
    """The owner's inboxes that need a sign-in now, or soon (a loss still settling)."""
    return [
        inbox
        for inbox in owner_inboxes(models, owner_email)
        if inbox.status in NEEDS_SIGN_IN or (inbox.status == InboxStatus.CONNECTED and inbox.held_reason == "settling")
    ]


def load_owner_visit(ctx: ReconnectContext, cookie: str | None, *, now: datetime) -> OwnerVisit:
    session, link = _owner_session(ctx, cookie, now)
    owner = links.owner_of(link) or ""
    inboxes = owner_inboxes(ctx.models, owner)
    waiting = [i for i in inboxes if i.status in NEEDS_SIGN_IN]
    done = [
        i for i in inboxes if i.status in DONE and i.reconnected_at is not None and i.reconnected_at >= link.created_at
    ]
    return OwnerVisit(session=session, link=link, owner_email=owner, waiting=waiting, done=done)


def start_inbox(
    ctx: ReconnectContext, cookie: str | None, csrf_token: str, inbox_id: str, *, now: datetime
) -> tuple[OpenedSession, ReconnectLink]:
    """The inbox's own sign-in, started from the owner page: a session for a fresh link of it."""
    session, link = _owner_session(ctx, cookie, now)
    if not hmac.compare_digest(session.csrf_token.encode(), csrf_token.encode()):
        raise RequestRejected("csrf token does not match")
    try:
        inbox = ctx.models.inbox.get(inbox_id, consistent_read=True) if inbox_id else None
    except DoesNotExist:
        inbox = None
    owner = links.owner_of(link) or ""
    if inbox is None or inbox.owner_email.strip().lower() != owner:
        raise RequestRejected("not an inbox of this owner")  # the same answer for any other id
    if inbox.status not in NEEDS_SIGN_IN:
        raise reconnect.AlreadyReconnected(inbox.inbox_id)
    issued = links.create_link(
        ctx.models,
        inbox_id=inbox.inbox_id,
        created_by=f"owner-link:{link.link_id}",
        now=now,
        lifetime=STEP_LINK_LIFETIME,
        backlog_mode=BacklogMode(link.backlog_mode),
    )
    return reconnect.open_link(ctx, issued.token, now=now)


def _owner_session(ctx: ReconnectContext, cookie: str | None, now: datetime) -> tuple[WebSession, ReconnectLink]:
    if not cookie or len(cookie) > 100:
        raise SessionMissing("no owner session cookie")
    try:
        session = ctx.models.session.get(links.token_hash(cookie), consistent_read=True)
    except DoesNotExist:
        raise SessionMissing("unknown session") from None
    if session.expires_ttl <= int(now.timestamp()) or not session.inbox_id.startswith(links.OWNER_PREFIX):
        raise SessionMissing("session expired")
    # An owner link is never used up; it can be revoked or expire, like any link.
    link = links.verify_hash(ctx.models, session.token_hash, now=now)
    return session, link
