"""Inboxes as admins manage them: create, look at, pause and resume."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.failures import Provider
from sendwell.models import Inbox, InboxStatus, Models
from sendwell.services import activity, schedule

_ADDRESS = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


class InboxError(Exception):
    """Base of the domain errors admins see (mapped to HTTP 4xx in one place)."""


class InboxNotFound(InboxError):
    pass


class InvalidInbox(InboxError):
    pass


class InboxConflict(InboxError):
    """The inbox changed under us (another request won); nothing was written."""


@dataclass(frozen=True, slots=True)
class NewInbox:
    provider: Provider
    address: str
    owner_email: str
    display_name: str = ""
    daily_cap: int = 50
    min_gap_seconds: int = 120
    timezone: str = "UTC"
    # Custom SMTP/IMAP inboxes only.
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str = "starttls"
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: str = "tls"
    username: str | None = None

    def validate(self) -> None:
        problems: list[str] = []
        for name in ("address", "owner_email"):
            value = getattr(self, name)
            if not _ADDRESS.match(value) or len(value) > 254:
                problems.append(f"{name} is not a valid email address")
        if any(ch in self.display_name for ch in "\r\n") or len(self.display_name) > 200:
            problems.append("display_name must be one line of at most 200 characters")
        if not 1 <= self.daily_cap <= 2000:
            problems.append("daily_cap must be between 1 and 2000")
        if not 0 <= self.min_gap_seconds <= 86400:
            problems.append("min_gap_seconds must be between 0 and 86400")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not a known IANA time zone")
        if self.provider is Provider.CUSTOM:
            for host_field, port_field in (("smtp_host", "smtp_port"), ("imap_host", "imap_port")):
                host, port = getattr(self, host_field), getattr(self, port_field)
                if not host or not _HOST.match(host):
                    problems.append(f"{host_field} is required for a custom inbox")
                if port is None or not 1 <= port <= 65535:
                    problems.append(f"{port_field} must be a TCP port")
            if self.smtp_security not in ("starttls", "tls", "none"):
                problems.append("smtp_security must be starttls, tls or none")
            if self.imap_security not in ("starttls", "tls", "none"):
                problems.append("imap_security must be starttls, tls or none")
        if problems:
            raise InvalidInbox("; ".join(problems))


def create_inbox(models: Models, new: NewInbox, *, now: datetime, created_by: str) -> Inbox:
    new.validate()
    inbox = models.inbox(
        inbox_id="ibx_" + secrets.token_hex(8),
        provider=new.provider.value,
        address=new.address.lower(),
        display_name=new.display_name,
        owner_email=new.owner_email.lower(),
        created_at=now,
        status=InboxStatus.PENDING.value,
        daily_cap=new.daily_cap,
        min_gap_seconds=new.min_gap_seconds,
    )
    inbox.window.tz = new.timezone
    if new.provider is Provider.CUSTOM:
        inbox.smtp_host, inbox.smtp_port, inbox.smtp_security = new.smtp_host, new.smtp_port, new.smtp_security
        inbox.imap_host, inbox.imap_port, inbox.imap_security = new.imap_host, new.imap_port, new.imap_security
        inbox.username = new.username or new.address
    if not writes.save(inbox, condition=models.inbox.inbox_id.does_not_exist()):
        # A 64-bit id collision: vanishingly rare, but never overwrite.
        raise InboxConflict("inbox id already taken; try again")
    activity.record(
        models,
        now=now,
        kind="inbox.created",
        message=f"Inbox {inbox.address} ({new.provider.value}) added by {created_by}",
        inbox_id=inbox.inbox_id,
    )
    return inbox


def get_inbox(models: Models, inbox_id: str) -> Inbox:
    try:
        return models.inbox.get(inbox_id, consistent_read=True)
    except DoesNotExist as error:
        raise InboxNotFound(f"no inbox {inbox_id}") from error


def describe(inbox: Inbox) -> dict[str, Any]:
    """The admin's view of an inbox: status, why, and what to do. Never credentials."""
    return {
        "inbox_id": inbox.inbox_id,
        "provider": inbox.provider,
        "address": inbox.address,
        "display_name": inbox.display_name,
        "owner_email": inbox.owner_email,
        "status": inbox.status,
        "paused": inbox.paused,
        "paused_reason": inbox.paused_reason,  # set when sendwell paused it (sender-side blocks)
        "reason": inbox.status_reason,
        "fix": inbox.status_fix,
        "code": inbox.status_code,
        "failed_at": inbox.failed_at.isoformat() if inbox.failed_at else None,
        "daily_cap": inbox.daily_cap,
        "sent_today": inbox.sent_today,
        "timezone": inbox.window.tz,
    }


def set_paused(models: Models, inbox_id: str, *, paused: bool, now: datetime, actor: str) -> Inbox:
    inbox = get_inbox(models, inbox_id)
    if inbox.paused == paused:
        return inbox
    # Polling goes on while paused: replies to mail already sent must still stop their sequences,
    # and a resumed inbox's follow-ups wait for replies to be current.
    actions: list[Any] = [models.inbox.paused.set(paused)]
    if not paused:
        actions.append(models.inbox.paused_reason.remove())  # sendwell's own pause ends with it
    if not writes.update(inbox, actions=actions, condition=models.inbox.paused == (not paused)):
        # Someone else toggled it, or our own write went through and only its answer was lost.
        inbox = models.inbox.get(inbox_id, consistent_read=True)
        if inbox.paused != paused:
            raise InboxConflict("the inbox changed while pausing; try again")
    if not paused:
        schedule.wake(models, inbox_id, at=now)  # dispatch took it off the send index while paused
    verb = "paused" if paused else "resumed"
    activity.record(models, now=now, kind=f"inbox.{verb}", message=f"Sending {verb} by {actor}", inbox_id=inbox_id)
    return inbox
