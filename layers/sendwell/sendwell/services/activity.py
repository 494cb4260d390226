"""The activity log: what happened to an inbox or a campaign, newest first."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sendwell.models import Activity, Models


def inbox_key(inbox_id: str) -> str:
    return f"inbox#{inbox_id}"


def campaign_key(campaign_id: str) -> str:
    return f"campaign#{campaign_id}"


@dataclass(frozen=True, slots=True)
class Entry:
    at: str
    kind: str
    message: str
    details: dict[str, Any]


def record(
    models: Models,
    *,
    now: datetime,
    kind: str,
    message: str,
    inbox_id: str | None = None,
    campaign_ids: Iterable[str] = (),
    details: Mapping[str, Any] | None = None,
    dedup: str | None = None,
) -> None:
    """Write one entry under the inbox and one under each campaign.

    ``dedup`` makes the entry idempotent: the same event processed twice (a poll replayed after a
    crash) overwrites its own entry instead of adding a second one.
    """
    suffix = dedup or secrets.token_hex(6)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    keys = ([inbox_key(inbox_id)] if inbox_id else []) + [campaign_key(c) for c in campaign_ids]
    with models.activity.batch_write() as batch:
        for key in keys:
            batch.save(
                models.activity(
                    log_key=key,
                    at_id=f"{stamp}#{suffix}",
                    kind=kind,
                    message=message,
                    details=dict(details or {}),
                )
            )


def recent(models: Models, log_key: str, *, limit: int = 50) -> list[Entry]:
    entries: list[Activity] = list(models.activity.query(log_key, scan_index_forward=False, limit=limit))
    return [
        Entry(at=e.at_id.split("#", 1)[0], kind=e.kind, message=e.message, details=e.details.as_dict()) for e in entries
    ]
