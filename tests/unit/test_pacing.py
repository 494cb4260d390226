"""Sending windows, daily caps, minimum gaps and paced backlog release, across zones and DST days."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from sendwell.pacing import (
    InboxLimits,
    InboxUsage,
    SendingWindow,
    may_send_now,
    next_send_time,
    pace_backlog,
    record_send,
    usage_for,
)

WEEKDAYS = frozenset(range(5))
EVERY_DAY = frozenset(range(7))
BERLIN, NEW_YORK, TOKYO = "Europe/Berlin", "America/New_York", "Asia/Tokyo"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(instant: datetime, tz: str) -> datetime:
    return instant.astimezone(ZoneInfo(tz))


def office_hours(tz: str, days: frozenset[int] = WEEKDAYS) -> SendingWindow:
    return SendingWindow(days=days, start=time(9), end=time(17), tz=tz)


def fresh(day: date) -> InboxUsage:
    return InboxUsage(day=day, sent_today=0, last_sent_at=None)


# --- the window --------------------------------------------------------------------------------


def test_window_is_open_from_start_inclusive_to_end_exclusive() -> None:
    window = office_hours(BERLIN)  # Tuesday 2024-01-16, CET = UTC+1
    assert not window.contains(utc(2024, 1, 16, 7, 59, 59))
    assert window.contains(utc(2024, 1, 16, 8, 0))
    assert window.contains(utc(2024, 1, 16, 15, 59, 59))
    assert not window.contains(utc(2024, 1, 16, 16, 0))


def test_next_open_is_the_instant_itself_inside_and_the_next_opening_outside() -> None:
    window = office_hours(BERLIN)
    inside = utc(2024, 1, 16, 10, 17, 3)
    assert window.next_open(inside) == inside
    assert window.next_open(utc(2024, 1, 16, 6, 0)) == utc(2024, 1, 16, 8, 0)
    assert window.next_open(utc(2024, 1, 16, 16, 0)) == utc(2024, 1, 17, 8, 0)


def test_weekend_days_are_skipped_to_monday() -> None:
    window = office_hours(BERLIN)
    saturday_morning = utc(2024, 1, 20, 10, 0)
    friday_evening = utc(2024, 1, 19, 17, 30)
    assert not window.contains(saturday_morning)
    assert window.next_open(saturday_morning) == utc(2024, 1, 22, 8, 0)
    assert window.next_open(friday_evening) == utc(2024, 1, 22, 8, 0)


def test_weekend_only_window() -> None:
    window = SendingWindow(days=frozenset({5, 6}), start=time(10), end=time(12), tz="UTC")
    assert window.next_open(utc(2024, 1, 16, 11, 0)) == utc(2024, 1, 20, 10, 0)
    assert window.contains(utc(2024, 1, 21, 11, 30))


def test_window_in_another_zone_than_utc_uses_that_zones_weekday_and_hours() -> None:
    window = office_hours("America/Los_Angeles")  # PDT = UTC-7 in July
    # Monday 16:30 in Los Angeles is already Tuesday in UTC.
    assert window.contains(utc(2024, 7, 1, 23, 30))
    # Friday 18:30 in Los Angeles (Saturday 01:30 UTC): next opening is Monday 09:00 PDT.
    friday_evening = utc(2024, 7, 6, 1, 30)
    assert not window.contains(friday_evening)
    assert window.next_open(friday_evening) == utc(2024, 7, 8, 16, 0)


def test_answers_are_in_utc_whatever_zone_the_input_is_in() -> None:
    window = office_hours(BERLIN)
    tokyo_evening = datetime(2024, 1, 16, 22, 0, tzinfo=ZoneInfo(TOKYO))  # 13:00 UTC, 14:00 Berlin
    assert window.contains(tokyo_evening)
    opened = window.next_open(tokyo_evening)
    assert opened == tokyo_evening
    assert opened.tzinfo is UTC


# --- daylight saving ---------------------------------------------------------------------------


def test_berlin_office_hours_follow_the_clock_change_in_march_and_october() -> None:
    window = office_hours(BERLIN, EVERY_DAY)
    spring, autumn = date(2024, 3, 31), date(2024, 10, 27)
    assert spring.weekday() == autumn.weekday() == 6  # last Sundays: the EU change days
    assert window.span_on(date(2024, 3, 30)) == (utc(2024, 3, 30, 8), utc(2024, 3, 30, 16))
    assert window.span_on(spring) == (utc(2024, 3, 31, 7), utc(2024, 3, 31, 15))
    assert window.span_on(date(2024, 10, 26)) == (utc(2024, 10, 26, 7), utc(2024, 10, 26, 15))
    assert window.span_on(autumn) == (utc(2024, 10, 27, 8), utc(2024, 10, 27, 16))
    assert window.next_open(utc(2024, 3, 30, 16)) == utc(2024, 3, 31, 7)
    assert window.next_open(utc(2024, 10, 26, 15)) == utc(2024, 10, 27, 8)


def test_berlin_window_through_the_skipped_hour_is_evenly_paced_in_real_time() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(1), end=time(4), tz=BERLIN)
    limits = InboxLimits(daily_cap=100, min_gap_seconds=1800, jitter_seconds=0, tz=BERLIN)
    # 01:00 CET to 04:00 CEST on 2024-03-31 is two real hours: four half-hourly slots.
    slots = pace_backlog(
        utc(2024, 3, 30, 23),
        5,
        window=window,
        limits=limits,
        usage=fresh(date(2024, 3, 31)),
        jitters=[0.0] * 5,
    )
    assert slots[:4] == [
        utc(2024, 3, 31, 0),
        utc(2024, 3, 31, 0, 30),
        utc(2024, 3, 31, 1),
        utc(2024, 3, 31, 1, 30),
    ]
    assert [local(s, BERLIN).strftime("%H:%M") for s in slots[:4]] == ["01:00", "01:30", "03:00", "03:30"]
    assert slots[4] == utc(2024, 3, 31, 23)  # 01:00 CEST the next day


def test_berlin_window_through_the_repeated_hour_opens_at_its_first_reading() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(2, 30), end=time(3, 30), tz=BERLIN)
    # 02:30 CEST (00:30 UTC) until 03:30 CET (02:30 UTC): the clock reads 02:30-03:00 twice.
    assert window.span_on(date(2024, 10, 27)) == (utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 2, 30))


def test_new_york_start_time_skipped_by_spring_forward_opens_when_the_clock_jumps() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(2, 30), end=time(5), tz=NEW_YORK)
    # 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00 UTC), so 02:30 never happens.
    assert window.span_on(date(2024, 3, 10)) == (utc(2024, 3, 10, 7), utc(2024, 3, 10, 9))
    assert window.next_open(utc(2024, 3, 10, 5)) == utc(2024, 3, 10, 7)
    assert local(window.next_open(utc(2024, 3, 10, 5)), NEW_YORK).strftime("%H:%M %Z") == "03:00 EDT"
    assert window.span_on(date(2024, 3, 11)) == (utc(2024, 3, 11, 6, 30), utc(2024, 3, 11, 9))


def test_window_wholly_inside_the_skipped_hour_stays_shut_that_day() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(2), end=time(2, 45), tz=NEW_YORK)
    assert window.span_on(date(2024, 3, 10)) is None
    assert window.next_open(utc(2024, 3, 10, 5)) == utc(2024, 3, 11, 6)  # 02:00 EDT the day after


def test_new_york_repeated_hour_hands_out_every_slot_once_and_skips_nothing() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(1), end=time(2), tz=NEW_YORK)
    limits = InboxLimits(daily_cap=100, min_gap_seconds=600, jitter_seconds=0, tz=NEW_YORK)
    # 2024-11-03: the clock reads 01:00-01:59 first in EDT, then again in EST, then 02:00 EST.
    slots = pace_backlog(
        utc(2024, 11, 3, 4),
        13,
        window=window,
        limits=limits,
        usage=fresh(date(2024, 11, 3)),
        jitters=[0.0] * 13,
    )
    first_day = slots[:12]
    assert first_day == [utc(2024, 11, 3, 5) + timedelta(minutes=10 * i) for i in range(12)]
    assert len(set(first_day)) == 12
    walls = [local(s, NEW_YORK).strftime("%H:%M %Z") for s in first_day]
    assert walls[:6] == [f"01:{m}0 EDT" for m in range(6)]
    assert walls[6:] == [f"01:{m}0 EST" for m in range(6)]
    assert slots[12] == utc(2024, 11, 4, 6)  # 01:00 EST on the next day


def test_window_closing_in_the_repeated_hour_closes_at_its_first_reading() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(0), end=time(1, 30), tz=NEW_YORK)
    assert window.span_on(date(2024, 11, 3)) == (utc(2024, 11, 3, 4), utc(2024, 11, 3, 5, 30))
    second_reading = utc(2024, 11, 3, 6, 15)  # the clock reads 01:15 again, now in EST
    assert local(second_reading, NEW_YORK).strftime("%H:%M") == "01:15"
    assert not window.contains(second_reading)


# --- usage and the daily cap -------------------------------------------------------------------


def test_usage_resets_at_midnight_in_the_inbox_zone_not_in_utc() -> None:
    monday = date(2024, 5, 6)
    last = utc(2024, 5, 6, 10, 0)
    usage = InboxUsage(day=monday, sent_today=50, last_sent_at=last)
    # 23:59:59 in Tokyo on Monday: still Monday's count.
    assert usage_for(utc(2024, 5, 6, 14, 59, 59), usage, TOKYO) == usage
    # 00:00 Tuesday in Tokyo while it is still Monday 15:00 in UTC: a new day.
    assert usage_for(utc(2024, 5, 6, 15, 0), usage, TOKYO) == InboxUsage(
        day=date(2024, 5, 7), sent_today=0, last_sent_at=last
    )
    # The same instant in UTC is still Monday.
    assert usage_for(utc(2024, 5, 6, 15, 0), usage, "UTC") == usage


def test_usage_is_never_reset_backwards() -> None:
    usage = InboxUsage(day=date(2024, 5, 7), sent_today=4, last_sent_at=utc(2024, 5, 6, 15, 30))
    assert usage_for(utc(2024, 5, 6, 12, 0), usage, "UTC") == usage


def test_record_send_counts_and_starts_a_new_day_when_due() -> None:
    usage = InboxUsage(day=date(2024, 5, 6), sent_today=7, last_sent_at=utc(2024, 5, 6, 9))
    same_day = record_send(usage, utc(2024, 5, 6, 10), TOKYO)
    assert same_day == InboxUsage(day=date(2024, 5, 6), sent_today=8, last_sent_at=utc(2024, 5, 6, 10))
    next_day = record_send(same_day, utc(2024, 5, 6, 15, 5), TOKYO)
    assert next_day == InboxUsage(day=date(2024, 5, 7), sent_today=1, last_sent_at=utc(2024, 5, 6, 15, 5))


def test_spent_cap_moves_the_send_to_the_next_local_days_opening() -> None:
    window = SendingWindow(days=WEEKDAYS, start=time(8), end=time(20), tz=TOKYO)
    limits = InboxLimits(daily_cap=3, min_gap_seconds=60, jitter_seconds=0, tz=TOKYO)
    spent = InboxUsage(day=date(2024, 5, 6), sent_today=3, last_sent_at=utc(2024, 5, 6, 2))
    monday_noon = utc(2024, 5, 6, 3)
    tuesday_8am_tokyo = utc(2024, 5, 6, 23)  # still Monday in UTC
    assert (
        next_send_time(monday_noon, window=window, limits=limits, usage=spent, jitter=0.0)
        == tuesday_8am_tokyo
    )
    assert not may_send_now(monday_noon, window=window, limits=limits, usage=spent, jitter=0.0)
    # Once the Tokyo day has turned, the same stored usage no longer blocks anything.
    assert may_send_now(tuesday_8am_tokyo, window=window, limits=limits, usage=spent, jitter=0.0)


def test_spent_cap_on_friday_waits_for_monday() -> None:
    window = office_hours(BERLIN)
    limits = InboxLimits(daily_cap=20, min_gap_seconds=300, jitter_seconds=120, tz=BERLIN)
    spent = InboxUsage(day=date(2024, 1, 19), sent_today=20, last_sent_at=utc(2024, 1, 19, 11))
    at = next_send_time(utc(2024, 1, 19, 12), window=window, limits=limits, usage=spent, jitter=0.9)
    assert at == utc(2024, 1, 22, 8)


def test_cap_counts_in_the_limits_zone_while_the_window_is_in_its_own() -> None:
    # The inbox counts its day in Tokyo but sends in New York office hours.
    window = office_hours(NEW_YORK, EVERY_DAY)  # 13:00-21:00 UTC in May (EDT)
    limits = InboxLimits(daily_cap=1, min_gap_seconds=0, jitter_seconds=0, tz=TOKYO)
    spent = InboxUsage(day=date(2024, 5, 7), sent_today=1, last_sent_at=utc(2024, 5, 6, 13, 30))
    # 14:00 UTC is 23:00 Tuesday in Tokyo: capped until Tokyo midnight at 15:00 UTC, inside the window.
    at = next_send_time(utc(2024, 5, 7, 14), window=window, limits=limits, usage=spent, jitter=0.0)
    assert at == utc(2024, 5, 7, 15)


# --- gap and jitter ----------------------------------------------------------------------------


def test_min_gap_plus_scaled_jitter_after_the_last_send() -> None:
    window = office_hours(BERLIN)
    limits = InboxLimits(daily_cap=100, min_gap_seconds=120, jitter_seconds=60, tz=BERLIN)
    usage = InboxUsage(day=date(2024, 1, 16), sent_today=5, last_sent_at=utc(2024, 1, 16, 9, 0))
    just_after = utc(2024, 1, 16, 9, 0, 30)
    assert next_send_time(just_after, window=window, limits=limits, usage=usage, jitter=0.0) == utc(
        2024, 1, 16, 9, 2
    )
    assert next_send_time(just_after, window=window, limits=limits, usage=usage, jitter=0.5) == utc(
        2024, 1, 16, 9, 2, 30
    )
    assert next_send_time(just_after, window=window, limits=limits, usage=usage, jitter=1.0) == utc(
        2024, 1, 16, 9, 3
    )
    later = utc(2024, 1, 16, 9, 40)
    assert next_send_time(later, window=window, limits=limits, usage=usage, jitter=1.0) == later
    assert may_send_now(later, window=window, limits=limits, usage=usage, jitter=1.0)
    assert not may_send_now(just_after, window=window, limits=limits, usage=usage, jitter=0.0)


def test_gap_running_past_the_window_end_moves_to_the_next_opening() -> None:
    window = office_hours(BERLIN)
    limits = InboxLimits(daily_cap=100, min_gap_seconds=900, jitter_seconds=0, tz=BERLIN)
    usage = InboxUsage(day=date(2024, 1, 16), sent_today=5, last_sent_at=utc(2024, 1, 16, 15, 50))
    at = next_send_time(utc(2024, 1, 16, 15, 55), window=window, limits=limits, usage=usage, jitter=0.0)
    assert at == utc(2024, 1, 17, 8)


# --- backlog release ---------------------------------------------------------------------------


def test_backlog_of_500_with_cap_50_spans_ten_local_days() -> None:
    window = SendingWindow(days=EVERY_DAY, start=time(8), end=time(18), tz=TOKYO)
    limits = InboxLimits(daily_cap=50, min_gap_seconds=240, jitter_seconds=120, tz=TOKYO)
    usage = InboxUsage(day=date(2024, 5, 6), sent_today=0, last_sent_at=None)
    rng = random.Random(7)
    jitters = [rng.random() for _ in range(500)]
    now = utc(2024, 5, 5, 22)  # 07:00 Monday in Tokyo, Sunday in UTC
    slots = pace_backlog(now, 500, window=window, limits=limits, usage=usage, jitters=jitters)

    per_day = Counter(local(s, TOKYO).date() for s in slots)
    assert sorted(per_day) == [date(2024, 5, 6) + timedelta(days=i) for i in range(10)]
    assert set(per_day.values()) == {50}
    assert slots[0] == utc(2024, 5, 5, 23)
    assert all(window.contains(s) for s in slots)
    for i in range(1, 500):
        assert slots[i] - slots[i - 1] >= limits.gap(jitters[i])


def test_backlog_counts_todays_earlier_sends_and_skips_the_weekend() -> None:
    window = office_hours(BERLIN)
    limits = InboxLimits(daily_cap=50, min_gap_seconds=300, jitter_seconds=60, tz=BERLIN)
    last = utc(2024, 1, 19, 9, 58)
    usage = InboxUsage(day=date(2024, 1, 19), sent_today=40, last_sent_at=last)  # Friday
    jitters = [0.25] * 110
    slots = pace_backlog(
        utc(2024, 1, 19, 10), 110, window=window, limits=limits, usage=usage, jitters=jitters
    )

    per_day = Counter(local(s, BERLIN).date() for s in slots)
    assert per_day == {date(2024, 1, 19): 10, date(2024, 1, 22): 50, date(2024, 1, 23): 50}
    assert slots[0] == last + limits.gap(0.25)
    assert slots[10] == utc(2024, 1, 22, 8)


def test_empty_backlog_and_bad_backlog_arguments() -> None:
    window, limits = office_hours(BERLIN), InboxLimits(50, 60, 0, BERLIN)
    usage = fresh(date(2024, 1, 16))
    assert pace_backlog(utc(2024, 1, 16), 0, window=window, limits=limits, usage=usage, jitters=[]) == []
    with pytest.raises(ValueError, match="one jitter per step: 3 steps, 2 jitters"):
        pace_backlog(utc(2024, 1, 16), 3, window=window, limits=limits, usage=usage, jitters=[0.1, 0.2])
    with pytest.raises(ValueError, match="count can't be negative"):
        pace_backlog(utc(2024, 1, 16), -1, window=window, limits=limits, usage=usage, jitters=[])


def test_ten_thousand_step_backlog_keeps_every_rule() -> None:
    window = SendingWindow(days=WEEKDAYS, start=time(8, 30), end=time(18), tz=NEW_YORK)
    limits = InboxLimits(daily_cap=200, min_gap_seconds=90, jitter_seconds=60, tz=NEW_YORK)
    rng = random.Random(10_000)
    jitters = [rng.random() for _ in range(10_000)]
    slots = pace_backlog(
        utc(2024, 2, 1, 12),
        10_000,
        window=window,
        limits=limits,
        usage=fresh(date(2024, 2, 1)),
        jitters=jitters,
    )
    assert len(slots) == 10_000
    per_day = Counter(local(s, NEW_YORK).date() for s in slots)
    assert len(per_day) == 50 and set(per_day.values()) == {200}  # 50 weekdays, across the March DST change
    assert all(slots[i] - slots[i - 1] >= limits.gap(jitters[i]) for i in range(1, 10_000))


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "start", "end", "tz", "message"),
    [
        (WEEKDAYS, time(9), time(17), "Europe/Berlinn", "unknown time zone 'Europe/Berlinn'"),
        (WEEKDAYS, time(9), time(17), "../etc/passwd", "unknown time zone"),
        (WEEKDAYS, time(9), time(17), "", "unknown time zone"),
        (frozenset(), time(9), time(17), BERLIN, "at least one day"),
        (frozenset({0, 7}), time(9), time(17), BERLIN, r"0=Monday \.\. 6=Sunday, got \[0, 7\]"),
        (WEEKDAYS, time(17), time(17), BERLIN, "doesn't cross midnight"),
        (WEEKDAYS, time(22), time(6), BERLIN, "start 22:00:00 must be before its end 06:00:00"),
        (WEEKDAYS, time(9, tzinfo=UTC), time(17), BERLIN, "without a tzinfo"),
    ],
)
def test_invalid_windows_are_refused_clearly(
    days: frozenset[int], start: time, end: time, tz: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SendingWindow(days=days, start=start, end=end, tz=tz)


def test_invalid_limits_usage_jitter_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="daily_cap must be at least 1"):
        InboxLimits(daily_cap=0, min_gap_seconds=60, jitter_seconds=0, tz=BERLIN)
    with pytest.raises(ValueError, match="can't be negative"):
        InboxLimits(daily_cap=10, min_gap_seconds=-1, jitter_seconds=0, tz=BERLIN)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        InboxLimits(daily_cap=10, min_gap_seconds=60, jitter_seconds=0, tz="Mars/Olympus")
    with pytest.raises(ValueError, match="sent_today can't be negative"):
        InboxUsage(day=date(2024, 1, 16), sent_today=-2)
    with pytest.raises(ValueError, match="last_sent_at must be timezone-aware"):
        InboxUsage(day=date(2024, 1, 16), sent_today=1, last_sent_at=datetime(2024, 1, 16, 9))

    window, limits = office_hours(BERLIN), InboxLimits(10, 60, 30, BERLIN)
    usage = fresh(date(2024, 1, 16))
    with pytest.raises(ValueError, match=r"jitter must be within \[0, 1\], got 1.5"):
        next_send_time(utc(2024, 1, 16, 9), window=window, limits=limits, usage=usage, jitter=1.5)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        next_send_time(datetime(2024, 1, 16, 9), window=window, limits=limits, usage=usage, jitter=0.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        window.contains(datetime(2024, 1, 16, 9))


# --- invariants over many instants -------------------------------------------------------------

ZONES = [
    "UTC",
    BERLIN,
    NEW_YORK,
    TOKYO,
    "Asia/Kolkata",  # +05:30, no DST
    "Australia/Lord_Howe",  # DST of half an hour
    "America/Santiago",  # changes at midnight
    "Australia/Sydney",  # southern hemisphere
]


CHANGE_DAYS = [
    utc(2024, *month_day) for month_day in [(3, 10), (3, 31), (4, 7), (9, 8), (10, 6), (10, 27), (11, 3)]
]


def clock_changes_near(at: datetime, zone: ZoneInfo) -> bool:
    return (at - timedelta(days=1)).astimezone(zone).utcoffset() != (at + timedelta(days=1)).astimezone(
        zone
    ).utcoffset()


def random_window(rng: random.Random) -> SendingWindow:
    days = frozenset(d for d in range(7) if rng.random() < 0.6) or frozenset({rng.randrange(7)})
    start_minute = rng.randrange(0, 23 * 60, 15)
    end_minute = rng.randrange(start_minute + 15, 24 * 60 + 1, 15)
    end = time(23, 59, 59) if end_minute == 24 * 60 else time(*divmod(end_minute, 60))
    return SendingWindow(days=days, start=time(*divmod(start_minute, 60)), end=end, tz=rng.choice(ZONES))


def random_instant(rng: random.Random) -> datetime:
    # All of 2024, weighted towards the DST change weeks of Europe, the US and Chile/Australia.
    if rng.random() < 0.5:
        return rng.choice(CHANGE_DAYS) + timedelta(seconds=rng.uniform(-2 * 86400, 2 * 86400))
    return utc(2024, 1, 1) + timedelta(seconds=rng.uniform(0, 366 * 86400))


def is_allowed(
    at: datetime, window: SendingWindow, limits: InboxLimits, usage: InboxUsage, jitter: float
) -> bool:
    if not window.contains(at):
        return False
    if usage.last_sent_at is not None and at < usage.last_sent_at + limits.gap(jitter):
        return False
    day = local(at, limits.tz).date()
    return day > usage.day or usage.sent_today < limits.daily_cap


def test_contains_agrees_with_the_wall_clock_away_from_clock_changes() -> None:
    rng = random.Random(2024)
    checked = 0
    for _ in range(3000):
        window, at = random_window(rng), random_instant(rng)
        zone = ZoneInfo(window.tz)
        if clock_changes_near(at, zone):
            continue  # a clock change is near: covered by the DST tests above
        wall = at.astimezone(zone)
        expected = wall.weekday() in window.days and window.start <= wall.time() < window.end
        assert window.contains(at) == expected, (window, at)
        checked += 1
    assert checked > 2000


def test_next_send_time_is_the_earliest_allowed_instant_for_many_nows() -> None:
    rng = random.Random(42)
    for _ in range(1500):
        window = random_window(rng)
        tz = rng.choice([window.tz, *ZONES])
        limits = InboxLimits(
            daily_cap=rng.randint(1, 60),
            min_gap_seconds=rng.choice([0, 60, 600, 7200]),
            jitter_seconds=rng.choice([0, 30, 900]),
            tz=tz,
        )
        now = random_instant(rng)
        last = None if rng.random() < 0.2 else now - timedelta(seconds=rng.uniform(0, 3 * 3600))
        usage_day = local(now, tz).date() - timedelta(days=rng.choice([0, 0, 0, 1]))
        usage = InboxUsage(day=usage_day, sent_today=rng.randint(0, limits.daily_cap), last_sent_at=last)
        jitter = rng.random()

        at = next_send_time(now, window=window, limits=limits, usage=usage, jitter=jitter)

        context = (window, limits, usage, now, jitter, at)
        assert at.tzinfo is UTC
        assert at >= now, context
        current = usage_for(now, usage, tz)
        assert is_allowed(at, window, limits, current, jitter), context
        assert may_send_now(at, window=window, limits=limits, usage=usage, jitter=jitter)
        if at > now:  # nothing earlier would have done
            assert not is_allowed(at - timedelta(microseconds=1), window, limits, current, jitter), context
            for _ in range(3):
                probe = now + (at - now) * rng.random()
                assert not is_allowed(probe, window, limits, current, jitter), context


def test_backlogs_keep_window_gap_and_cap_for_many_configurations() -> None:
    rng = random.Random(7)
    for _ in range(60):
        window = random_window(rng)
        limits = InboxLimits(
            daily_cap=rng.randint(1, 40),
            min_gap_seconds=rng.choice([0, 120, 1800]),
            jitter_seconds=rng.choice([0, 300]),
            tz=window.tz,
        )
        now = random_instant(rng)
        start_usage = InboxUsage(
            day=local(now, window.tz).date(), sent_today=rng.randint(0, limits.daily_cap), last_sent_at=now
        )
        jitters = [rng.random() for _ in range(rng.randint(1, 150))]

        slots = pace_backlog(
            now, len(jitters), window=window, limits=limits, usage=start_usage, jitters=jitters
        )

        per_day = Counter(local(s, limits.tz).date() for s in slots)
        per_day[start_usage.day] += start_usage.sent_today
        assert max(per_day.values()) <= limits.daily_cap, (window, limits)
        previous = start_usage.last_sent_at
        assert previous is not None
        for slot, jitter in zip(slots, jitters, strict=True):
            assert window.contains(slot), (window, slot)
            assert slot - previous >= limits.gap(jitter), (window, limits, slot)
            previous = slot
