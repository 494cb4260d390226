"""Open an inbox at its provider: decrypt its credentials and build the right client.

Gmail goes through google-auth, Outlook through msal + Microsoft Graph, custom inboxes through
SMTP (send) and IMAP (Sent folder, polling). Base URLs come from settings, so the same code talks
to the real services or to the local provider sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Literal

from sendwell.adapters.imap import ImapCursor, ImapMailbox
from sendwell.adapters.smtp import SmtpSender
from sendwell.config import Settings
from sendwell.credentials import CredentialStore
from sendwell.failures import Failure, FailureKind, Provider, ProviderFailure
from sendwell.inbound import InboundMessage
from sendwell.models import Inbox, Models
from sendwell.ports import Cipher, Mailbox, SentReceipt


@dataclass(frozen=True, slots=True)
class CustomMailbox:
    """SMTP to send; IMAP to find our messages in Sent (and to keep a copy there)."""

    smtp: SmtpSender
    imap: Callable[[], ImapMailbox]

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        self.smtp.send(message)
        # Keep a copy in Sent so a retry can reconcile; the message is already accepted, so a
        # failure here must not fail the send (that would resend it).
        try:
            with self.imap() as imap:
                imap.append_sent(message.as_bytes())
        except ProviderFailure:
            pass
        return SentReceipt(provider_message_id=None, thread_id=None)

    def find_sent(self, message_id: str) -> SentReceipt | None:
        with self.imap() as imap:
            found = imap.find_sent_by_message_id(message_id)
        return SentReceipt(provider_message_id=None, thread_id=None) if found else None

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        with self.imap() as imap:
            messages, new_cursor = imap.fetch_new(ImapCursor.from_str(cursor) if cursor else None, since=since)
        return messages, new_cursor.to_str()


class ProviderMailboxes:
    def __init__(self, settings: Settings, store: CredentialStore) -> None:
        self._settings = settings
        self._store = store

    @classmethod
    def from_settings(cls, settings: Settings, models: Models, cipher: Cipher) -> ProviderMailboxes:
        return cls(settings, CredentialStore(models, cipher))

    def open(self, inbox: Inbox) -> Mailbox:
        provider = Provider(inbox.provider)
        credentials = self._store.load(inbox)
        if provider is Provider.CUSTOM:
            return self._custom(inbox, credentials.get("password", ""))
        raise ProviderFailure(
            Failure(FailureKind.APP_CONFIG, f"{provider.value}:unsupported", f"{provider.value} is not configured")
        )

    def _custom(self, inbox: Inbox, password: str) -> CustomMailbox:
        if not password:
            raise ProviderFailure(
                Failure(FailureKind.AUTH_LOST, "custom:no_password", "no password is stored for this inbox")
            )
        username = inbox.username or inbox.address
        smtp = SmtpSender(
            inbox.smtp_host or "",
            int(inbox.smtp_port or 587),
            security=_security(inbox.smtp_security),
            username=username,
            password=password,
        )

        def imap() -> ImapMailbox:
            return ImapMailbox(
                inbox.imap_host or "",
                int(inbox.imap_port or 993),
                username,
                password,
                use_ssl=inbox.imap_security == "tls",
                starttls=inbox.imap_security == "starttls",
            )

        return CustomMailbox(smtp=smtp, imap=imap)


def _security(value: str | None) -> Literal["starttls", "tls", "none"]:
    if value == "tls":
        return "tls"
    return "none" if value == "none" else "starttls"
