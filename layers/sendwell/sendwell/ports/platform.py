"""The platform services use: a queue, an events topic, a mailer, a cipher, secrets, run-once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sendwell.models import Models
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
    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes: ...

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes: ...


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
