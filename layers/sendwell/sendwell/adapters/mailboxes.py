"""Open an inbox at its provider: decrypt its credentials and build the right client.

Gmail goes through google-auth, Outlook through msal + Microsoft Graph, custom inboxes through
SMTP (send) and IMAP (Sent folder, polling). Base URLs come from settings, so the same code talks
to the real services or to the local provider sandbox. Each provider's adapter (and with it
google-auth, msal and cryptography, or smtplib and imaplib, and the classifier) is loaded when the
first inbox of that provider is opened, not at a function's cold start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from sendwell.adapters.credentials import CredentialStore, StaleCredentials
from sendwell.adapters.http import http_session
from sendwell.config import OAuthClient, ProviderSettings
from sendwell.failures import Failure, FailureKind, Provider, ProviderFailure
from sendwell.models import Inbox
from sendwell.ports.mailbox import InboundMessage, Mailbox, SentReceipt
from sendwell.ports.platform import SecretSource

if TYPE_CHECKING:
    from sendwell.adapters.imap import ImapMailbox
    from sendwell.adapters.smtp import SmtpSender


@dataclass(frozen=True, slots=True)
class CustomMailbox:
    """SMTP to send; IMAP to find our messages in Sent (and to keep a copy there)."""

    smtp: SmtpSender
    imap: Callable[[], ImapMailbox]
    # The copy in Sent is saved after SMTP took the message: its absence proves nothing.
    confirms_by_sent = False

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
        from sendwell.adapters.imap import ImapCursor

        with self.imap() as imap:
            messages, new_cursor = imap.fetch_new(ImapCursor.from_str(cursor) if cursor else None, since=since)
        return messages, new_cursor.to_str()


class ProviderMailboxes:
    """Builds the ``Mailbox`` of an inbox; one per function, sharing one HTTP session (and pool)."""

    def __init__(
        self,
        settings: ProviderSettings,
        store: CredentialStore,
        *,
        secrets: SecretSource | None = None,
        timeout: float = 20.0,
    ) -> None:
        """``secrets`` holds the OAuth client secrets; without it only custom inboxes can be opened."""
        self._settings = settings
        self._store = store
        self._secrets: SecretSource = secrets if secrets is not None else {}
        self._timeout = timeout
        self._http = http_session(settings.endpoints)

    def open(self, inbox: Inbox, *, fresh_token: bool = False) -> Mailbox:
        """``fresh_token``: ignore the stored access token and get a new one first (a second look)."""
        provider = Provider(inbox.provider)
        stored = self._store.current(inbox)
        credentials = dict(stored.values)
        if fresh_token:
            credentials = {k: v for k, v in credentials.items() if k not in ("access_token", "expires_at")}
        if provider is Provider.CUSTOM:
            return self._custom(inbox, credentials.get("password", ""))
        if not credentials.get("refresh_token"):
            failure = Failure(FailureKind.AUTH_LOST, f"{provider.value}:no_refresh_token", "no sign-in is stored")
            raise ProviderFailure(failure)
        save = _CredentialSaver(self._store, inbox, stored.version)
        endpoints = self._settings.endpoints
        if provider is Provider.GMAIL:
            from sendwell.adapters.gmail import GmailMailbox

            client_id, secret = self._client(provider, self._settings.google)
            return GmailMailbox(
                credentials,
                client_id=client_id,
                client_secret=secret,
                token_url=endpoints.google_token_url,
                api_url=endpoints.gmail_api_url,
                session=self._http,
                save=save,
                timeout=self._timeout,
            )
        from sendwell.adapters.graph import GraphMailbox, MicrosoftTokens

        client_id, secret = self._client(provider, self._settings.microsoft)
        tokens = MicrosoftTokens(
            credentials,
            client_id=client_id,
            client_secret=secret,
            authority=endpoints.microsoft_authority,
            session=self._http,
            save=save,
            timeout=self._timeout,
        )
        return GraphMailbox(tokens, api_url=endpoints.graph_api_url, session=self._http, timeout=self._timeout)

    def _custom(self, inbox: Inbox, password: str) -> CustomMailbox:
        if not password:
            raise ProviderFailure(
                Failure(FailureKind.AUTH_LOST, "custom:no_password", "no password is stored for this inbox")
            )
        smtp, imap = custom_connections(inbox, password, timeout=self._timeout)
        return CustomMailbox(smtp=smtp, imap=imap)

    def _client(self, provider: Provider, client: OAuthClient) -> tuple[str, str]:
        secret = self._secrets.get(client.secret_parameter) if client.client_id else None
        if not secret:
            raise ProviderFailure(
                Failure(
                    FailureKind.APP_CONFIG,
                    f"{provider.value}:not_configured",
                    f"the {provider.value} OAuth client ID or secret is not configured",
                )
            )
        return client.client_id, secret


def custom_connections(inbox: Inbox, password: str, *, timeout: float) -> tuple[SmtpSender, Callable[[], ImapMailbox]]:
    """A custom inbox's SMTP sender and a way to open its IMAP connection, with ``password``."""
    from sendwell.adapters.imap import ImapMailbox
    from sendwell.adapters.smtp import SmtpSender

    username = inbox.username or inbox.address
    smtp = SmtpSender(
        inbox.smtp_host or "",
        int(inbox.smtp_port or 587),
        security=_security(inbox.smtp_security),
        username=username,
        password=password,
        timeout=timeout,
    )

    def imap() -> ImapMailbox:
        return ImapMailbox(
            inbox.imap_host or "",
            int(inbox.imap_port or 993),
            username,
            password,
            use_ssl=inbox.imap_security == "tls",
            starttls=inbox.imap_security == "starttls",
            timeout=timeout,
        )

    return smtp, imap


def _security(value: str | None) -> Literal["starttls", "tls", "none"]:
    if value == "tls":
        return "tls"
    return "none" if value == "none" else "starttls"


class _CredentialSaver:
    """Saves refreshed tokens at once, conditioned on the version they were loaded at.

    When another process saved first (Microsoft rotates refresh tokens, so a slower concurrent
    refresh must not write an older chain over a newer one), its credentials are reloaded and
    returned instead: the caller continues with those.

    The version is the stored item's, kept here rather than read off the row: after a function
    died between a refresh's two writes the row is one behind, and the item is what a save races.
    """

    def __init__(self, store: CredentialStore, inbox: Inbox, version: int) -> None:
        self._store = store
        self._inbox = inbox
        self._version = version

    def __call__(self, credentials: dict[str, Any]) -> dict[str, Any]:
        try:
            # Also moves the inbox (the caller's copy) to the saved version.
            self._version = self._store.save(self._inbox, credentials, over=self._version)
        except StaleCredentials:
            self._inbox, stored = self._store.reload(self._inbox)
            self._version = stored.version
            return dict(stored.values)
        return credentials


class ParameterStoreSecrets:
    """OAuth client secrets from SSM Parameter Store (SecureString), cached by Powertools."""

    def __init__(self, max_age_seconds: int = 300) -> None:
        self._max_age = max_age_seconds

    def get(self, name: str, /) -> str | None:
        try:
            value: str = parameters.get_parameter(name, decrypt=True, max_age=self._max_age)
        except GetParameterError as error:
            # Powertools wraps every error; only a parameter that does not exist means "not configured".
            cause = error.__context__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise
        return value or None
