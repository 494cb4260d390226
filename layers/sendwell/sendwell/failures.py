"""The vocabulary every provider adapter uses to say *how* something failed.

Adapters never let a provider's own exception escape: they raise :class:`ProviderFailure`
carrying a :class:`Failure`, built by the table-driven classifier in ``sendwell.classify``.
Services then act on ``Failure.kind`` alone, so no service ever guesses from message text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class FailureKind(enum.StrEnum):
    AUTH_LOST = "auth_lost"  # the grant/password is gone: disconnect
    USER_ACTION = "user_action"  # the user or their admin must do something: disconnect, with the fix
    APP_CONFIG = "app_config"  # our OAuth app is misconfigured: ops alarm, inboxes untouched
    TRANSIENT = "transient"  # retry later; never a disconnect
    RATE_LIMITED = "rate_limited"  # the inbox hit a provider limit: pause it until retry_after
    RECIPIENT_REJECTED = "recipient_rejected"  # permanent for one recipient (e.g. 5.1.1): bounce it
    BAD_MESSAGE = "bad_message"  # our message was refused as malformed: fail the enrollment

    @property
    def disconnects(self) -> bool:
        return self in (FailureKind.AUTH_LOST, FailureKind.USER_ACTION)

    @property
    def is_auth_failure(self) -> bool:
        """Reported to the auth-failure handler: it disconnects the inbox or raises an ops alarm."""
        return self.disconnects or self is FailureKind.APP_CONFIG


class Provider(enum.StrEnum):
    GMAIL = "gmail"
    OUTLOOK = "outlook"
    CUSTOM = "custom"  # SMTP + IMAP with a password or app password


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    code: str  # stable, provider-specific code: "invalid_grant", "AADSTS50076", "smtp:535 5.7.8"...
    reason: str  # plain words for a person: "the password was changed or access was revoked"
    fix: str = ""  # what the owner or their admin should do; empty where there is nothing to do
    retry_after: float | None = None  # seconds, when the provider said how long to wait
    # The code can mean only one thing about this inbox (its grant revoked, its account deleted, its
    # password changed): a second attempt cannot say otherwise, so it disconnects without one.
    conclusive: bool = False


class ProviderFailure(Exception):
    """Raised by adapters; the message holds only the code, never provider text or secrets.

    ``delivery_unknown`` says a send failed after the message was handed over (the connection was
    lost after SMTP DATA, a timeout waiting for the answer): it may have been delivered.
    """

    def __init__(self, failure: Failure, *, delivery_unknown: bool = False) -> None:
        super().__init__(f"{failure.kind}: {failure.code}")
        self.failure = failure
        self.delivery_unknown = delivery_unknown


@contextmanager
def handed_over_if_transient() -> Iterator[None]:
    """Around a send call: a transient failure (a timeout, a reset, a 5xx) may come after the
    provider took the message, so its delivery is unknown; a refusal with a code is not."""
    try:
        yield
    except ProviderFailure as error:
        if error.failure.kind is not FailureKind.TRANSIENT or error.delivery_unknown:
            raise
        raise ProviderFailure(error.failure, delivery_unknown=True) from error
