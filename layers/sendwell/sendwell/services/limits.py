"""Translate stored inbox and campaign settings into the pacing module's value objects."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time

from sendwell.models import Campaign, Inbox, SendingWindowAttribute
from sendwell.pacing import InboxLimits, InboxUsage, SendingWindow, usage_for


def window_of(stored: SendingWindowAttribute) -> SendingWindow:
    return SendingWindow(
        days=frozenset(int(day) for day in stored.days.split(",") if day.strip()),
        start=time.fromisoformat(stored.start),
        end=time.fromisoformat(stored.end),
        tz=stored.tz,
    )


def campaign_window(campaign: Campaign) -> SendingWindow:
    return window_of(campaign.window)


def limits_of(inbox: Inbox) -> InboxLimits:
    return InboxLimits(
        daily_cap=int(inbox.daily_cap),
        min_gap_seconds=int(inbox.min_gap_seconds),
        jitter_seconds=int(inbox.jitter_seconds),
        tz=inbox.window.tz,
    )


def usage_of(inbox: Inbox, now: datetime) -> InboxUsage:
    stored = InboxUsage(
        day=date.fromisoformat(inbox.usage_day) if inbox.usage_day else date.min,
        sent_today=int(inbox.sent_today) if inbox.usage_day else 0,
        last_sent_at=inbox.last_sent_at,
    )
    return usage_for(now, stored, inbox.window.tz)


def jitter_for(key: str) -> float:
    """A stable pseudo-random fraction in [0, 1) per key, so retries compute the same slot."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
