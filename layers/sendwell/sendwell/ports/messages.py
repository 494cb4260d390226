"""What travels on the queues: the body of a send-queue message and of an auth-failure report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sendwell.failures import Failure
from sendwell.models import Inbox


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    body: str
    group_id: str | None = None  # FIFO queues: ordering scope (the inbox)
    deduplication_id: str | None = None  # FIFO queues: the same step enqueued twice is one message
    delay_seconds: int | None = None  # standard queues: delivered no sooner than this (at most 900)


class MalformedMessage(ValueError):
    """A queue message that is not what its queue carries (bad JSON, missing or mistyped fields)."""


@dataclass(frozen=True, slots=True)
class SendRequest:
    """The body of one send-queue message."""

    enrollment_id: str
    step_index: int
    inbox_id: str
    # The inbox's pacing as dispatch saw it, so the send function's claim needs no read.
    local_day: str  # the inbox's local date (its daily cap counts per local day)
    min_gap_seconds: int
    # For the send function's logs (campaign, and the Message-ID derived from the inbox's address);
    # empty in messages enqueued before they were added.
    campaign_id: str = ""
    inbox_address: str = ""
    # The inbox's time zone: the send function counts the cap in the local day *it* claims in,
    # which is a later one than dispatch saw when the message waited across local midnight.
    timezone: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, body: str) -> SendRequest:
        try:
            data = json.loads(body)
            return cls._of(data)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise MalformedMessage(f"not a send request: {type(error).__name__}") from error

    @classmethod
    def _of(cls, data: dict[str, Any]) -> SendRequest:
        return cls(
            enrollment_id=str(data["enrollment_id"]),
            step_index=int(data["step_index"]),
            inbox_id=str(data["inbox_id"]),
            local_day=str(data["local_day"]),
            min_gap_seconds=int(data["min_gap_seconds"]),
            campaign_id=str(data.get("campaign_id", "")),
            inbox_address=str(data.get("inbox_address", "")),
            timezone=str(data.get("timezone", "")),
        )

    def to_message(self) -> QueuedMessage:
        return QueuedMessage(
            body=self.to_json(),
            group_id=self.inbox_id,
            deduplication_id=f"{self.enrollment_id}-{self.step_index}",
        )


@dataclass(frozen=True, slots=True)
class AuthFailureReport:
    inbox_id: str
    provider: str
    kind: str  # FailureKind value
    code: str
    reason: str
    fix: str
    at: str  # ISO-8601 UTC
    source: str  # send | poll | reconnect
    # The inbox's credentials version the failing call used: a report about credentials that were
    # replaced since (renewed, reconnected) says nothing about the current ones. -1: not known.
    credentials_version: int = -1
    conclusive: bool = False  # Failure.conclusive: disconnect without weighing it against other inboxes

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def of(cls, inbox: Inbox, failure: Failure, *, at: datetime, source: str) -> AuthFailureReport:
        return cls(
            inbox_id=inbox.inbox_id,
            provider=inbox.provider,
            kind=failure.kind.value,
            code=failure.code,
            reason=failure.reason,
            fix=failure.fix,
            at=at.isoformat(),
            source=source,
            credentials_version=int(inbox.credentials_version),
            conclusive=failure.conclusive,
        )

    @classmethod
    def from_json(cls, body: str) -> AuthFailureReport:
        data = json.loads(body)
        typed = ("credentials_version", "conclusive")
        text = {name: str(data[name]) for name in cls.__dataclass_fields__ if name not in typed}
        return cls(
            **text,
            credentials_version=int(data.get("credentials_version", -1)),
            conclusive=data.get("conclusive") is True,
        )


@dataclass(frozen=True, slots=True)
class ReconnectTask:
    """The body of one reconnect-queue message: finish the reconnect made with this link.

    The owner's page answers as soon as the new credentials are stored; the catch-up poll, the
    backlog release and the notices run in the reconnect worker, from what the inbox records
    (``Inbox.reconnect_link``), so a task delivered twice, late or after a newer reconnect is
    harmless.
    """

    inbox_id: str
    link_hash: str  # the token hash of the link the owner used (the link table's key)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, body: str) -> ReconnectTask:
        try:
            data = json.loads(body)
            return cls(inbox_id=str(data["inbox_id"]), link_hash=str(data["link_hash"]))
        except (ValueError, KeyError, TypeError) as error:
            raise MalformedMessage(f"not a reconnect task: {type(error).__name__}") from error

    def to_message(self) -> QueuedMessage:
        return QueuedMessage(body=self.to_json())
