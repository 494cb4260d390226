"""Time in one place: services take ``now`` as an argument so tests can set it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch(at: datetime) -> int:
    return int(at.timestamp())


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
