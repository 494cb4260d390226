"""When an inbox may send: its sending window, its daily cap and the gap between two sends.

Pure functions over timezone-aware datetimes: instants go in as any aware datetime and come out
in UTC; the wall-clock rules (the window's hours, the inbox's day for the cap) are applied in the
IANA zone named by the inbox, through ``zoneinfo``.

Daylight-saving days follow one rule, used for window edges and for midnight alike: a wall time
on a date stands for *the first instant at which the local clock reads that time or later*.

- A time the clock skips when it springs forward (02:30 in New York on the second Sunday of
  March) means the moment of the jump (03:00 EDT). A window whose start and end both fall in the
  skipped hour stays shut that day.
- A time the clock reads twice when it falls back means its first reading. So a window is one
  span of real time a day and never opens twice: a window 00:00-01:30 closes at the first 01:30,
  and the repeated half hour after it stays closed, so no slot is handed out twice.

A step that cannot go now is re-timed to the instant it may go, never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_ONE_DAY = timedelta(days=1)
_MIDNIGHT = time(0)


@dataclass(frozen=True, slots=True)
class SendingWindow:
    """The days and local hours an inbox may send in, e.g. Monday-Friday 09:00-17:00 Europe/Berlin.

    ``days`` numbers weekdays as ``date.weekday()`` does: 0 = Monday .. 6 = Sunday. ``start`` is
    inclusive, ``end`` exclusive, both wall times in ``tz``. A window doesn't cross midnight.
    """

    days: frozenset[int]
    start: time
    end: time
    tz: str

    def __post_init__(self) -> None:
        _zone(self.tz)
        if not self.days:
            raise ValueError("a sending window needs at least one day (0=Monday .. 6=Sunday)")
        if not self.days <= frozenset(range(7)):
            raise ValueError(f"window days must be 0=Monday .. 6=Sunday, got {sorted(self.days)}")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window start and end are wall times in the window's tz: give them without a tzinfo")
        if self.start >= self.end:
            raise ValueError(
                f"window start {self.start.isoformat()} must be before its end {self.end.isoformat()}: "
                "a sending window doesn't cross midnight"
            )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def span_on(self, day: date) -> tuple[datetime, datetime] | None:
        """The window's ``(opens, closes)`` instants in UTC on the local ``day``; None if shut that day."""
        if day.weekday() not in self.days:
            return None
        zone = self.zone
        opens, closes = _instant(day, self.start, zone), _instant(day, self.end, zone)
        return (opens, closes) if opens < closes else None  # both edges in one skipped hour

    def spans_from(self, at: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The window's spans that close after ``at``, in time order, without end."""
        at = _utc(at)
        # Edges are monotonic in wall time, so no span of an earlier local day closes after `at`.
        day = at.astimezone(self.zone).date()
        while True:  # ends: `days` is never empty, and a span is only empty on a rare DST day
            span = self.span_on(day)
            if span is not None and span[1] > at:
                yield span
            day += _ONE_DAY

    def contains(self, at: datetime) -> bool:
        at = _utc(at)
        opens, _ = next(self.spans_from(at))
        return opens <= at

    def next_open(self, at: datetime) -> datetime:
        """``at`` (in UTC) if the window is open then, else the instant it next opens."""
        at = _utc(at)
        opens, _ = next(self.spans_from(at))
        return max(at, opens)


@dataclass(frozen=True, slots=True)
class InboxLimits:
    """How fast one inbox may send. Its day, for ``daily_cap``, starts at midnight in ``tz``."""

    daily_cap: int  # sends per inbox-local day; stopping an inbox is pausing it, not a cap of 0
    min_gap_seconds: int  # between the end of one send and the next
    jitter_seconds: int  # at most this much extra gap, scaled by a jitter in [0, 1] from the caller
    tz: str

    def __post_init__(self) -> None:
        _zone(self.tz)
        if self.daily_cap < 1:
            raise ValueError(f"daily_cap must be at least 1, got {self.daily_cap} (pause the inbox instead)")
        if self.min_gap_seconds < 0 or self.jitter_seconds < 0:
            raise ValueError(
                f"min_gap_seconds and jitter_seconds can't be negative, "
                f"got {self.min_gap_seconds} and {self.jitter_seconds}"
            )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def gap(self, jitter: float) -> timedelta:
        """The least time after one send before the next, for a caller-drawn ``jitter`` in [0, 1]."""
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {jitter}")
        return timedelta(seconds=self.min_gap_seconds + jitter * self.jitter_seconds)


@dataclass(frozen=True, slots=True)
class InboxUsage:
    """What an inbox has sent: ``sent_today`` counts the sends of the inbox-local ``day``."""

    day: date
    sent_today: int
    last_sent_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.sent_today < 0:
            raise ValueError(f"sent_today can't be negative, got {self.sent_today}")
        if self.last_sent_at is not None:
            _utc(self.last_sent_at, "last_sent_at")


def local_day(now: datetime, tz: str) -> date:
    """The date in ``tz`` at ``now``: the day an inbox's daily cap counts in."""
    return _utc(now, "now").astimezone(_zone(tz)).date()


def usage_for(now: datetime, usage: InboxUsage, tz: str) -> InboxUsage:
    """``usage`` as of ``now``: the count starts again once the day in ``tz`` has moved on."""
    today = _utc(now, "now").astimezone(_zone(tz)).date()
    if today > usage.day:
        # last_sent_at stays: the minimum gap still holds across midnight.
        return InboxUsage(day=today, sent_today=0, last_sent_at=usage.last_sent_at)
    # An earlier local day than usage.day only happens when clocks fall back over midnight:
    # the sends already counted still count.
    return usage


def record_send(usage: InboxUsage, sent_at: datetime, tz: str) -> InboxUsage:
    """The usage after one more send at ``sent_at``."""
    current = usage_for(sent_at, usage, tz)
    return InboxUsage(day=current.day, sent_today=current.sent_today + 1, last_sent_at=_utc(sent_at))


def next_send_time(
    now: datetime, *, window: SendingWindow, limits: InboxLimits, usage: InboxUsage, jitter: float
) -> datetime:
    """The earliest instant (UTC, at or after ``now``) at which this inbox may send its next message.

    Inside the window, at least ``limits.gap(jitter)`` after the last send, and on an inbox-local
    day whose cap isn't spent; once it is, the window's first opening of a following day.
    """
    now = _utc(now, "now")
    gap = limits.gap(jitter)
    zone = limits.zone
    usage = usage_for(now, usage, limits.tz)
    earliest = now if usage.last_sent_at is None else max(now, usage.last_sent_at + gap)
    while True:
        candidate = window.next_open(earliest)
        day = candidate.astimezone(zone).date()
        if day > usage.day or usage.sent_today < limits.daily_cap:
            return candidate
        earliest = _instant(day + _ONE_DAY, _MIDNIGHT, zone)  # the cap is spent until local midnight


def may_send_now(
    now: datetime, *, window: SendingWindow, limits: InboxLimits, usage: InboxUsage, jitter: float
) -> bool:
    return next_send_time(now, window=window, limits=limits, usage=usage, jitter=jitter) <= now


def pace_backlog(
    now: datetime,
    count: int,
    *,
    window: SendingWindow,
    limits: InboxLimits,
    usage: InboxUsage,
    jitters: Sequence[float],
) -> list[datetime]:
    """Send slots (UTC, in order) for ``count`` pending steps of one inbox, e.g. after a reconnect.

    Each slot is the next send time after the previous slot was used, so the backlog keeps the
    window, the gap (with ``jitters[i]`` before slot ``i``) and the cap, spilling over the
    following days' windows instead of sending everything at once.
    """
    if count < 0:
        raise ValueError(f"count can't be negative, got {count}")
    if len(jitters) != count:
        raise ValueError(f"need one jitter per step: {count} steps, {len(jitters)} jitters")
    slots: list[datetime] = []
    for jitter in jitters:
        slot = next_send_time(now, window=window, limits=limits, usage=usage, jitter=jitter)
        slots.append(slot)
        usage = record_send(usage, slot, limits.tz)
    return slots


def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # ValueError: a malformed key such as "../x"
        raise ValueError(f"unknown time zone {key!r}: use an IANA name such as 'Europe/Berlin'") from exc


def _utc(at: datetime, name: str = "at") -> datetime:
    if at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got the naive datetime {at.isoformat()}")
    return at.astimezone(UTC)


def _instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the clock in ``zone`` reads ``wall`` on ``day``, or later."""
    local = datetime.combine(day, wall, tzinfo=zone)  # fold=0: the first reading of a repeated time
    first = local.astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return first
    # The clock skips `wall`. PEP 495 reads a skipped time with the offset after the jump for
    # fold=1 (an instant before it) and the offset before the jump for fold=0 (an instant after
    # it), so the jump lies between the two; zones change offset on whole seconds, so bisect those.
    before_jump = math.floor(local.replace(fold=1).timestamp())
    after_jump = math.ceil(first.timestamp())
    offset_before = datetime.fromtimestamp(before_jump, zone).utcoffset()
    while after_jump - before_jump > 1:
        middle = (before_jump + after_jump) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_before:
            before_jump = middle
        else:
            after_jump = middle
    return datetime.fromtimestamp(after_jump, UTC)
