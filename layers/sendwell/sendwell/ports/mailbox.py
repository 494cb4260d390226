"""One connected inbox at its provider (Gmail, Graph, SMTP + IMAP), as services use it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Protocol

from sendwell.models import Inbox


@dataclass(frozen=True, slots=True)
class SentReceipt:
    provider_message_id: str | None  # Gmail message id, Graph message id; None over SMTP
    thread_id: str | None  # Gmail threadId, Graph conversationId; None over SMTP


@dataclass(frozen=True, slots=True)
class InboundMessage:
    provider_id: str  # IMAP UID, Gmail message id, Graph message id
    raw: bytes
    message: EmailMessage
    thread_id: str | None = None  # provider thread id where there is one (Gmail threadId...)

    @classmethod
    def parse(cls, provider_id: str, raw: bytes, *, thread_id: str | None = None) -> InboundMessage:
        message = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(raw)
        return cls(provider_id=provider_id, raw=raw, message=message, thread_id=thread_id)


class Mailbox(Protocol):
    """One connected inbox at its provider. Every failure is a ``ProviderFailure``."""

    @property
    def confirms_by_sent(self) -> bool:
        """Whether ``find_sent`` finding nothing proves an earlier attempt did not send."""

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt: ...

    def find_sent(self, message_id: str) -> SentReceipt | None:
        """Look in the Sent folder for our Message-ID (reconcile after a lost acknowledgement)."""

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        """New messages after ``cursor`` (or since ``since`` when there is none), and the next cursor."""


class Mailboxes(Protocol):
    def open(self, inbox: Inbox) -> Mailbox:
        """Decrypt the inbox's credentials (refreshing and persisting tokens as needed)."""
