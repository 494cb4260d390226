"""Reconnect links: a random token of 256 bits, of which only the SHA-256 is stored.

A link is single use (consumed with a conditional write), expires (7 days by default), can be
revoked, and records who created it. An unknown token and a revoked one look the same to the
person holding it, so a link never tells a stranger anything about an inbox.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.clock import epoch
from sendwell.models import BacklogMode, LinkState, Models, ReconnectLink

DEFAULT_LIFETIME = timedelta(days=7)
MAX_LIFETIME = timedelta(days=30)
TOKEN_BYTES = 32  # 256 bits
# secrets.token_urlsafe(32) is exactly 43 characters of the URL-safe base64 alphabet.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# Keep the record a while after expiry so an expired link gets its own page, then let TTL drop it.
TTL_GRACE = timedelta(days=30)


class LinkError(Exception):
    """Base: a link can't be used. Subclasses say why, for the page the holder sees."""


class InvalidLinkRequest(LinkError, ValueError):
    """The link asked for can't be made (its lifetime is out of range, no creator is named)."""


class LinkInvalid(LinkError):
    """Unknown, malformed or revoked: the same answer for all three."""


class LinkExpired(LinkError):
    pass


class LinkUsed(LinkError):
    pass


@dataclass(frozen=True, slots=True)
class IssuedLink:
    token: str  # shown once, to put in a URL; never stored
    link: ReconnectLink


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(token: str) -> bool:
    # ASCII only: str.isalnum() would let "é" through, and a malformed token must not cost a read.
    return _TOKEN_SHAPE.fullmatch(token) is not None


def create_link(
    models: Models,
    *,
    inbox_id: str,
    created_by: str,
    now: datetime,
    lifetime: timedelta = DEFAULT_LIFETIME,
    backlog_mode: BacklogMode = BacklogMode.PACED,
    revoke_older: bool = False,
) -> IssuedLink:
    if not timedelta(minutes=5) <= lifetime <= MAX_LIFETIME:
        raise InvalidLinkRequest("a link lives between 5 minutes and 30 days")
    if not created_by.strip():
        raise InvalidLinkRequest("a link records who created it")
    if revoke_older:
        for older in active_links(models, inbox_id, now=now):
            revoke_link(models, older)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires = now + lifetime
    link = models.link(
        token_hash=token_hash(token),
        link_id="lnk_" + secrets.token_hex(8),
        inbox_id=inbox_id,
        created_by=created_by,
        created_at=now,
        expires_at=expires,
        expires_ttl=epoch(expires + TTL_GRACE),
        state=LinkState.ACTIVE.value,
        backlog_mode=backlog_mode.value,
    )
    link.save(condition=models.link.token_hash.does_not_exist())
    return IssuedLink(token=token, link=link)


OWNER_PREFIX = "owner#"  # an owner link's ``inbox_id``: it covers every inbox of that owner


def owner_key(owner_email: str) -> str:
    return OWNER_PREFIX + owner_email.strip().lower()


def owner_of(link: ReconnectLink) -> str | None:
    """The owner an owner link covers, or None for an inbox's own link."""
    return link.inbox_id.removeprefix(OWNER_PREFIX) if link.inbox_id.startswith(OWNER_PREFIX) else None


def create_owner_link(
    models: Models,
    *,
    owner_email: str,
    created_by: str,
    now: datetime,
    lifetime: timedelta = DEFAULT_LIFETIME,
    backlog_mode: BacklogMode = BacklogMode.PACED,
) -> IssuedLink:
    """One link for all of an owner's disconnected inboxes. Its page lists them and starts each
    inbox's own sign-in in turn (``services.owner_links``), with the same proof as the inbox's link."""
    if "@" not in owner_email or len(owner_email) > 320:
        raise InvalidLinkRequest("an owner link needs the owner's email address")
    return create_link(
        models,
        inbox_id=owner_key(owner_email),
        created_by=created_by,
        now=now,
        lifetime=lifetime,
        backlog_mode=backlog_mode,
    )


def describe(link: ReconnectLink) -> dict[str, Any]:
    """A link as the admin API and CLI show it (never its token: only its hash is stored)."""
    return {
        "link_id": link.link_id,
        **({"owner_email": owner} if (owner := owner_of(link)) else {"inbox_id": link.inbox_id}),
        "state": link.state,
        "created_by": link.created_by,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "backlog_mode": link.backlog_mode,
    }


def verify(models: Models, token: str, *, now: datetime) -> ReconnectLink:
    """The active link behind ``token``, or the LinkError that says why it can't be used."""
    if not looks_like_token(token):
        raise LinkInvalid("malformed token")
    return verify_hash(models, token_hash(token), now=now)


def verify_hash(models: Models, hashed: str, *, now: datetime) -> ReconnectLink:
    """As ``verify``, for a link known by its hash (a session's)."""
    try:
        link = models.link.get(hashed, consistent_read=True)
    except DoesNotExist:
        raise LinkInvalid("unknown token") from None
    if link.state == LinkState.REVOKED:
        raise LinkInvalid("revoked")
    if link.state == LinkState.USED:
        raise LinkUsed(link.link_id)
    if link.expires_at <= now:
        raise LinkExpired(link.link_id)
    return link


def consume(models: Models, link: ReconnectLink, *, now: datetime, by: str | None = None) -> None:
    """Mark the link used by the session ``by``, exactly once.

    The write is conditional on the link being active and unexpired *now*, so of two people
    finishing a reconnect with the same link at the same moment only one succeeds. The loser
    gets the error that describes the link as it is now (used, revoked or expired). The session
    that used it may finish again (a double submit, a retry after a fault): that is not a loss.
    """
    table = models.link
    actions: list[Any] = [table.state.set(LinkState.USED.value), table.used_at.set(now)]
    condition = (table.state == LinkState.ACTIVE.value) & (table.expires_at > now)
    if by is not None:
        actions.append(table.used_by.set(by))
        condition |= (table.state == LinkState.USED.value) & (table.used_by == by)
    if not writes.update(link, actions=actions, condition=condition):
        try:
            link.refresh(consistent_read=True)
        except DoesNotExist:
            raise LinkInvalid("unknown token") from None
        if link.state == LinkState.REVOKED:
            raise LinkInvalid("revoked")
        if link.state == LinkState.ACTIVE and link.expires_at <= now:
            raise LinkExpired(link.link_id)
        raise LinkUsed(link.link_id)


def active_links(models: Models, inbox_id: str, *, now: datetime) -> list[ReconnectLink]:
    return [
        link
        for link in models.link.inbox_index.query(inbox_id, scan_index_forward=False)
        if link.state == LinkState.ACTIVE and link.expires_at > now
    ]


def list_links(models: Models, inbox_id: str, *, limit: int = 50) -> list[ReconnectLink]:
    return list(models.link.inbox_index.query(inbox_id, scan_index_forward=False, limit=limit))


def revoke(models: Models, link_id: str, *, inbox_id: str) -> bool:
    """Revoke an active link of ``inbox_id`` by its public id; False if none was active."""
    table = models.link
    for link in models.link.inbox_index.query(inbox_id, filter_condition=table.link_id == link_id):
        return revoke_link(models, link)
    return False


def revoke_link(models: Models, link: ReconnectLink) -> bool:
    """Revoke a link already in hand; False if it was no longer active."""
    table = models.link
    revoked = [table.state.set(LinkState.REVOKED.value)]
    return writes.update(link, actions=revoked, condition=table.state == LinkState.ACTIVE.value)


def revoke_all(models: Models, inbox_id: str, *, now: datetime) -> int:
    return sum(revoke_link(models, link) for link in active_links(models, inbox_id, now=now))
