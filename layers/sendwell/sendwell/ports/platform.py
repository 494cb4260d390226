"""The platform services use: a queue, an events topic, a mailer, a cipher, secrets, run-once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from sendwell.models import Inbox, Models
from sendwell.ports.messages import AuthFailureReport, QueuedMessage


class MessageQueue(Protocol):
    def send_batch(self, messages: Sequence[QueuedMessage]) -> None:
        """Enqueue messages; raises on any message the queue did not accept."""


class RetryScheduler(Protocol):
    def retry_in(self, receipt_handle: str, seconds: int) -> None:
        """Make a received message visible again in ``seconds`` (instead of the visibility timeout)."""


class AuthFailureReporter(Protocol):
    def report(self, report: AuthFailureReport, *, delay_seconds: int | None = None) -> None: ...


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


class DeliveryUnknown(Exception):
    """The mail service may have taken the notice (its answer was lost): sending it again could
    deliver it twice, so it is not retried."""


class Mailer(Protocol):
    def send(self, email: Email) -> str:
        """Send a notice; returns the provider's message id. Raises ``DeliveryUnknown`` when the
        request went out and its answer was lost."""


class Cipher(Protocol):
    """KMS itself: at most 4,096 bytes, one paid request per call. For small, rarely read secrets
    (a reconnect page's OAuth flow) and for reading credentials stored before they were sealed."""

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes: ...

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Sealed:
    """Plaintext sealed under a data key: AES-256-GCM ``ciphertext`` (with its tag) and ``nonce``,
    and ``encrypted_key``, the data key as the key service encrypted it."""

    encrypted_key: bytes
    nonce: bytes
    ciphertext: bytes


class SealBroken(Exception):
    """A sealed value, or the associated data it was sealed with, is not what was sealed (a corrupt
    item, or one copied to another inbox or version): nothing was decrypted."""


class Sealer(Protocol):
    """Envelope encryption: any size, the data key's own decryption cached, so most opens cost no
    request. ``associated_data`` is authenticated, not stored: opening needs the same bytes."""

    def seal(self, plaintext: bytes, *, associated_data: bytes) -> Sealed: ...

    def open(self, sealed: Sealed, *, associated_data: bytes) -> bytes:
        """The plaintext; raises ``SealBroken`` when the seal or ``associated_data`` differ."""


class CredentialVault(Protocol):
    """Where an inbox's sign-in is kept (its own item, next to the inbox row)."""

    def replace(
        self, inbox: Inbox, credentials: Mapping[str, Any], *, actions: Sequence[Action], condition: Condition | None
    ) -> bool:
        """Store ``credentials`` as the inbox's new sign-in under a new ``credentials_version``, in
        one transaction with ``actions`` on the inbox row under ``condition``; ``inbox`` is read
        again after. False when ``condition`` did not hold: nothing was stored. The new version
        makes a slower refresh of the old sign-in lose instead of overwriting this one."""


class SecretSource(Protocol):
    """Named secrets of the app itself (OAuth client secrets), fetched with caching; a dict in tests."""

    def get(self, name: str, /) -> str | None:
        """The secret's value, or None when no secret of that name exists."""


class Once(Protocol):
    def run(self, key: str, action: Callable[[], str]) -> str:
        """Run ``action`` at most once per ``key`` (a failed run may be retried)."""


class NoticeContext(Protocol):
    """What sending a notice needs; the reconnect and incident contexts both fit."""

    @property
    def models(self) -> Models: ...

    @property
    def mailer(self) -> Mailer: ...

    @property
    def once(self) -> Once: ...

    @property
    def workspace_name(self) -> str: ...

    @property
    def admin_emails(self) -> tuple[str, ...]: ...

    @property
    def events(self) -> EventPublisher: ...
