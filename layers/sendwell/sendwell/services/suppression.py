"""The suppression list: addresses nothing is sent to again, from any campaign or inbox.

Hard bounces, unsubscribes and complaints add to it by themselves; admins add and remove by hand.
Imports skip suppressed rows, dispatch stops a suppressed address's enrollment instead of queueing
it, and the send refuses one that was suppressed after it was queued.

An entry is keyed by the address, lower-cased. The first entry stands: a later bounce or
unsubscribe of an address already suppressed changes nothing, so its reason says why it was
suppressed first. Removing an entry lets the address be imported again; enrollments already
stopped stay stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sendwell import writes
from sendwell.models import Models, Suppression, SuppressionReason

__all__ = [
    "Page",
    "SuppressionError",
    "SuppressionReason",
    "describe",
    "is_suppressed",
    "list_entries",
    "normalise",
    "remove",
    "suppress",
    "suppressed_among",
]

# One @, no spaces, a dot in the domain: what an import accepts as a prospect's address, too.
_ADDRESS = re.compile(r"[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]{1,255}\.[^@\s<>,;\"]{2,63}")
_BATCH = 100  # BatchGetItem's limit


class SuppressionError(ValueError):
    """A bad address or request: nothing was stored."""


def normalise(email: str) -> str:
    address = str(email).strip().lower()
    if len(address) > 320 or not _ADDRESS.fullmatch(address):
        raise SuppressionError(f"not an email address: {str(email)[:80]!r}")
    return address


def suppress(
    models: Models,
    email: str,
    *,
    reason: SuppressionReason,
    now: datetime,
    source: str,
    note: str | None = None,
    campaign_id: str | None = None,
    enrollment_id: str | None = None,
    inbox_id: str | None = None,
) -> bool:
    """Add ``email``; True when this call added it, False when it was already there.

    A put conditional on the address being absent: its failed condition means an entry exists
    (ours, from a retry whose answer was lost, or an earlier one), which is what was asked. A
    throttle or an outage raises ``WriteNotDone``: never read as "already suppressed".
    """
    entry = models.suppression(
        normalise(email),
        reason=SuppressionReason(reason).value,
        source=source,
        created_at=now,
        note=(note or None) and note[:500],
        campaign_id=campaign_id,
        enrollment_id=enrollment_id,
        inbox_id=inbox_id,
    )
    return writes.save(entry, condition=models.suppression.email.does_not_exist())


def is_suppressed(models: Models, email: str) -> bool:
    return bool(suppressed_among(models, [email]))


def suppressed_among(models: Models, emails: Iterable[str]) -> set[str]:
    """Which of ``emails`` (lower-cased) are suppressed: one BatchGetItem per hundred addresses."""
    wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
    found: set[str] = set()
    for start in range(0, len(wanted), _BATCH):
        chunk = wanted[start : start + _BATCH]
        found.update(e.email for e in models.suppression.batch_get(chunk, attributes_to_get=["email"]))
    return found


def get(models: Models, email: str) -> Suppression | None:
    try:
        return models.suppression.get(normalise(email), consistent_read=True)
    except DoesNotExist:
        return None


def remove(models: Models, email: str) -> bool:
    """Take ``email`` off the list; False when it was not on it."""
    address = normalise(email)
    return writes.delete(models.suppression(address), condition=models.suppression.email.exists())


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Suppression]
    cursor: str | None  # pass back for the next page; None: this was the last


def list_entries(
    models: Models, *, reason: SuppressionReason | None = None, limit: int = 100, cursor: str | None = None
) -> Page:
    """A page of entries, in no particular order (a scan: the list is read by people, rarely)."""
    table = models.suppression
    condition = table.reason == SuppressionReason(reason).value if reason else None
    start = {"email": {"S": cursor}} if cursor else None
    scan = table.scan(condition, limit=None, last_evaluated_key=start, page_size=limit)
    entries: list[Suppression] = []
    for entry in scan:
        entries.append(entry)
        if len(entries) == limit:
            break
    return Page(entries, entries[-1].email if len(entries) == limit else None)


def describe(entry: Suppression) -> dict[str, Any]:
    return {
        "email": entry.email,
        "reason": entry.reason,
        "source": entry.source,
        "created_at": entry.created_at.isoformat(),
        "note": entry.note,
        "campaign_id": entry.campaign_id,
        "enrollment_id": entry.enrollment_id,
        "inbox_id": entry.inbox_id,
    }
