"""A second look before a permission loss is believed: the same call again, with fresh credentials.

Real refreshes fail once and succeed on retry; a token cached a moment too long is refused where a
fresh one works. So a send or poll that the provider answers with a permission loss is tried once
more, after a short bounded wait, with the inbox's credentials read again from the table and a
new access token, and only a second refusal goes on to the auth-failure handler. Codes that can mean
nothing else (``Failure.conclusive``: revoked, deleted, password changed) go on at once, and so
does a send that may have been handed over (trying again could send it twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol, TypeVar

from pynamodb.exceptions import DoesNotExist

from sendwell.failures import ProviderFailure
from sendwell.models import Inbox, Models
from sendwell.ports.mailbox import InboundMessage, Mailbox, SentReceipt

T = TypeVar("T")

MAX_WAIT_SECONDS = 10.0  # a send or poll Lambda waits this at most before its second attempt


class FreshMailboxes(Protocol):
    def open(self, inbox: Inbox, *, fresh_token: bool = False) -> Mailbox: ...


def worth_confirming(error: ProviderFailure) -> bool:
    failure = error.failure
    return failure.kind.disconnects and not failure.conclusive and not error.delivery_unknown


class ConfirmingMailboxes:
    """``Mailboxes`` whose permission losses are confirmed once before they are raised."""

    def __init__(
        self,
        inner: FreshMailboxes,
        models: Models,
        *,
        wait_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._inner = inner
        self._models = models
        self._wait = min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
        self._sleep = sleep

    def open(self, inbox: Inbox) -> Mailbox:
        try:
            return _Confirming(self, inbox, self._inner.open(inbox))
        except ProviderFailure as error:
            return self.again(inbox, error, lambda mailbox: _Confirming(self, inbox, mailbox))

    def again(self, inbox: Inbox, error: ProviderFailure, call: Callable[[Mailbox], T]) -> T:
        """``call`` once more on a freshly opened mailbox, or ``error`` when it needs no second look.
        Whatever the second attempt raises is what the caller sees: the confirmation, or a newer answer."""
        if not worth_confirming(error):
            raise error
        self._sleep(self._wait)
        try:
            current = self._models.inbox.get(inbox.inbox_id, consistent_read=True)
        except DoesNotExist:
            raise error from None
        return call(self._inner.open(current, fresh_token=True))


class _Confirming:
    def __init__(self, owner: ConfirmingMailboxes, inbox: Inbox, mailbox: Mailbox) -> None:
        self._owner, self._inbox, self._mailbox = owner, inbox, mailbox

    @property
    def confirms_by_sent(self) -> bool:
        return self._mailbox.confirms_by_sent

    def send(self, message: EmailMessage, *, thread_id: str | None) -> SentReceipt:
        try:
            return self._mailbox.send(message, thread_id=thread_id)
        except ProviderFailure as error:
            return self._owner.again(self._inbox, error, lambda box: box.send(message, thread_id=thread_id))

    def find_sent(self, message_id: str) -> SentReceipt | None:
        try:
            return self._mailbox.find_sent(message_id)
        except ProviderFailure as error:
            return self._owner.again(self._inbox, error, lambda box: box.find_sent(message_id))

    def poll(self, cursor: str | None, *, since: datetime) -> tuple[list[InboundMessage], str]:
        try:
            return self._mailbox.poll(cursor, since=since)
        except ProviderFailure as error:
            return self._owner.again(self._inbox, error, lambda box: box.poll(cursor, since=since))
