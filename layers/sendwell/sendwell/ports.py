"""The interfaces services depend on; adapters implement them and handlers wire them in.

Imports go one way: handlers -> services -> ports <- adapters. A service never imports boto3,
requests, smtplib or imaplib; it receives objects that satisfy these protocols.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Protocol

from sendwell.failures import Failure
from sendwell.inbound import InboundMessage
from sendwell.models import Inbox


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    body: str
    group_id: str | None = None  # FIFO queues: ordering scope (the inbox)
    deduplication_id: str | None = None  # FIFO queues: the same step enqueued twice is one message


class MessageQueue(Protocol):
    def send_batch(self, messages: Sequence[QueuedMessage]) -> None:
        """Enqueue messages; raises on any message the queue did not accept."""


class EventPublisher(Protocol):
    def publish(self, event_type: str, detail: Mapping[str, Any], *, dedup_key: str) -> None:
        """Publish one inbox event (``inbox.disconnected``...) for integrations."""


@dataclass(frozen=True, slots=True)
class Email:
    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    reply_to: tuple[str, ...] = ()


class Mailer(Protocol):
    def send(self, email: Email) -> str:
        """Send a notice; returns the provider's message id."""


class Cipher(Protocol):
    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes: ...

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SentReceipt:
    provider_message_id: str | None  # Gmail message id, Graph message id; None over SMTP
    thread_id: str | None  # Gmail threadId, Graph conversationId; None over SMTP


class Mailbox(Protocol):
    """One connected inbox at its provider. Every failure is a ``ProviderFailure``."""

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt: ...

    def find_sent(self, message_id: str) -> SentReceipt | None:
        """Look in the Sent folder for our Message-ID (reconcile after a lost acknowledgement)."""

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        """New messages after ``cursor`` (or since ``since`` when there is none), and the next cursor."""


class SecretSource(Protocol):
    """Named secrets of the app itself (OAuth client secrets), fetched with caching; a dict in tests."""

    def get(self, name: str, /) -> str | None:
        """The secret's value, or None when no secret of that name exists."""


class Mailboxes(Protocol):
    def open(self, inbox: Inbox) -> Mailbox:
        """Decrypt the inbox's credentials (refreshing and persisting tokens as needed)."""


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
        )

    @classmethod
    def from_json(cls, body: str) -> AuthFailureReport:
        data = json.loads(body)
        return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__})


class AuthFailureReporter(Protocol):
    def report(self, report: AuthFailureReport) -> None: ...
