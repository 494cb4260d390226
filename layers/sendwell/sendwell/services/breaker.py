"""The mass-disconnect breaker: many inboxes of one provider losing permission at once is our app's
fault far more often than that many people's, so they are held instead of disconnected.

Real app-level causes look like per-user errors: a Google consent screen left in Testing ends every
grant after 7 days with ``invalid_grant``; an app registration that loses Mail.Send gives every
Outlook inbox ``ErrorAccessDenied``. Disconnecting on each would mail every owner a fix they can't
apply. So a permission loss that is not conclusive first *settles*: the inbox is held (sends wait,
polls go on), its loss is marked in the provider's loss log, and the report is queued again to come
back after the settle time. Then the marks of the window decide:

* few inboxes, or a small share of the provider's connected ones: disconnect as usual;
* at least ``min_inboxes`` and ``min_share``: the breaker is tripped. The inbox stays held, owners
  hear nothing, the app-config alarm counts it and the admins get one notice per trip, with the
  evidence. A held inbox whose next poll succeeds is released by that poll; one that still fails
  once the breaker has closed (too few recent marks) is disconnected properly.

Everything is decided from the table: the marks, the inbox's hold, the trip's own record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.models import Activity, Inbox, InboxStatus, Models
from sendwell.ports.messages import AuthFailureReport
from sendwell.services import schedule


class Hold(enum.StrEnum):
    SETTLING = "settling"  # a loss being weighed against the provider's other inboxes
    BREAKER = "breaker"  # held while the breaker is tripped


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    min_inboxes: int = 5
    min_share: float = 0.2  # of the provider's connected inboxes
    window: timedelta = timedelta(minutes=30)
    settle: timedelta = timedelta(minutes=2)  # SQS delays a message 15 minutes at most


class Settling(Exception):
    """The report is too young to decide on: the handler queues it again, to come back in ``delay``."""

    def __init__(self, message: str, *, delay: timedelta) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True, slots=True)
class Trip:
    provider: str
    tripped_at: str  # ISO-8601; names the trip, so its notice is sent once
    inboxes: int
    connected: int
    codes: tuple[str, ...]
    new: bool = False  # this loss tripped it: the one report the alarm counts

    @property
    def share(self) -> float:
        return self.inboxes / max(self.connected, 1)


def losses_key(provider: str) -> str:
    return f"losses#{provider}"


def _trip_key(provider: str) -> str:
    return f"breaker#{provider}"


def weigh(
    models: Models,
    settings: BreakerSettings,
    inbox: Inbox,
    report: AuthFailureReport,
    *,
    failed_at: datetime,
    now: datetime,
) -> Trip | None:
    """None: disconnect it. A Trip: it stays held. Raises Settling while the report is too young."""
    _mark(models, inbox, report, failed_at)
    _hold(models, inbox, Hold.SETTLING, now)
    if now - failed_at < settings.settle:
        delay = failed_at + settings.settle - now
        raise Settling(f"permission loss of {inbox.inbox_id} settles for {delay}", delay=delay)
    marks = list(
        models.activity.query(
            losses_key(inbox.provider), range_key_condition=models.activity.at_id >= _minute(now - settings.window)
        )
    )
    lost = {_details(mark).get("inbox_id") for mark in marks}
    if len(lost) < settings.min_inboxes:
        return None
    connected = _connected(models, inbox.provider)
    if len(lost) < settings.min_share * connected:
        return None
    _hold(models, inbox, Hold.BREAKER, now)
    codes = tuple(sorted({str(_details(mark).get("code")) for mark in marks}))
    return _record_trip(models, settings, inbox.provider, len(lost), connected, codes, now)


def release(models: Models, inbox: Inbox, *, now: datetime) -> None:
    """End a hold (the failure was superseded); the inbox sends again."""
    table = models.inbox
    writes.update(
        inbox,
        actions=[table.held_since.remove(), table.held_reason.remove()],
        condition=table.held_since.exists(),
    )
    schedule.wake(models, inbox.inbox_id, at=now)  # dispatch took it off the send index while held


def _details(item: Activity) -> dict[str, Any]:
    details: dict[str, Any] = item.details.as_dict()
    return details


def _minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


def _mark(models: Models, inbox: Inbox, report: AuthFailureReport, failed_at: datetime) -> None:
    # One mark per inbox per minute: the 50 reports of one inbox's failing sends count once.
    mark = models.activity(
        log_key=losses_key(inbox.provider),
        at_id=f"{_minute(failed_at)}#{inbox.inbox_id}",
        kind="inbox.permission_loss",
        message=f"{inbox.address}: {report.code}",
        details={"inbox_id": inbox.inbox_id, "code": report.code, "source": report.source},
    )
    writes.save(mark, condition=None)


def _hold(models: Models, inbox: Inbox, hold: Hold, now: datetime) -> None:
    table = models.inbox
    # Already held so, or behind the breaker: a new loss of a held inbox does not make it "settling".
    if inbox.held_reason in (hold.value, Hold.BREAKER.value):
        return
    connected = table.status == InboxStatus.CONNECTED.value
    actions = [table.held_reason.set(hold.value)]
    if inbox.held_since is None:
        actions.append(table.held_since.set(now))
    # False: disconnected or deleted meanwhile; the caller's own checks decide what that means.
    writes.update(inbox, actions=actions, condition=connected)


def _connected(models: Models, provider: str) -> int:
    table = models.inbox
    found = table.scan(
        filter_condition=(table.provider == provider) & (table.status == InboxStatus.CONNECTED.value),
        attributes_to_get=["inbox_id"],
    )
    return sum(1 for _ in found)


def _record_trip(
    models: Models,
    settings: BreakerSettings,
    provider: str,
    inboxes: int,
    connected: int,
    codes: tuple[str, ...],
    now: datetime,
) -> Trip:
    """The trip this loss belongs to: the open one, or a new one when the last was seen a window ago."""
    table = models.activity
    try:
        state: Activity | None = table.get(_trip_key(provider), "state", consistent_read=True)
    except DoesNotExist:
        state = None
    seen_at = str(_details(state).get("seen_at", "")) if state is not None else ""
    if state is not None and seen_at >= (now - settings.window).isoformat():
        writes.update(state, actions=[table.details["seen_at"].set(now.isoformat())], condition=None)
        return Trip(provider, str(_details(state)["tripped_at"]), inboxes, connected, codes)
    fresh = table(
        log_key=_trip_key(provider),
        at_id="state",
        kind="breaker.tripped",
        message=f"{inboxes} of {connected} connected {provider} inboxes lost permission within {settings.window}",
        details={"tripped_at": now.isoformat(), "seen_at": now.isoformat(), "codes": list(codes)},
    )
    # Whoever replaces the stale (or missing) record names the trip; a loser reads the winner's.
    stale = table.log_key.does_not_exist() if state is None else table.details["seen_at"] == seen_at
    if not writes.save(fresh, condition=stale):
        state = table.get(_trip_key(provider), "state", consistent_read=True)
        return Trip(provider, str(_details(state)["tripped_at"]), inboxes, connected, codes)
    return Trip(provider, now.isoformat(), inboxes, connected, codes, new=True)
