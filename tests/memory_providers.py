"""Providers in memory: a mailbox that delivers, keeps a Sent folder and receives mail, in a list.

For tests whose subject is not the provider (the fault harness, the causes of lost or duplicate
steps): the real adapters have their own tests against the sandbox, aiosmtpd and Dovecot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

from sendwell.adapters.credentials import CredentialStore
from sendwell.models import Inbox
from sendwell.ports.mailbox import InboundMessage, Mailbox, SentReceipt


@dataclass
class MemoryMailbox:
    """A mailbox at its provider: what it delivered, its Sent folder, and mail arriving in it.

    Like a custom inbox, its Sent copy is saved after delivery, and Sent can't prove a negative.
    """

    address: str
    delivered: list[EmailMessage] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    incoming: list[InboundMessage] = field(default_factory=list)
    confirms_by_sent = False

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        self.delivered.append(message)
        self.sent.add(str(message["Message-ID"]))
        return SentReceipt(provider_message_id=None, thread_id=None)

    def find_sent(self, message_id: str) -> SentReceipt | None:
        return SentReceipt(provider_message_id=None, thread_id=None) if message_id in self.sent else None

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        """After the cursor (a position in ``incoming``); with none, what is dated since ``since``."""
        if cursor is not None:
            return self.incoming[int(cursor) :], str(len(self.incoming))
        recent = [m for m in self.incoming if parsedate_to_datetime(str(m.message["Date"])) >= since]
        return recent, str(len(self.incoming))

    def deliveries(self, message_id: str) -> int:
        return sum(1 for message in self.delivered if message["Message-ID"] == message_id)


@dataclass
class MemoryMailboxes:
    """Opens an inbox's mailbox the way the real one does: its credentials are decrypted (KMS)."""

    store: CredentialStore
    boxes: dict[str, MemoryMailbox] = field(default_factory=dict)

    def open(self, inbox: Inbox) -> Mailbox:
        self.store.load(inbox)
        return self.boxes[inbox.inbox_id]
