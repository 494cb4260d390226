"""Inbox credentials: sealed in an item of their own, cached by version, never logged.

Where they are. An inbox's sign-in is a ``Credentials`` item: its JSON sealed with AES-256-GCM
under a KMS data key (``sendwell.adapters.envelope``), the inbox id and version as associated
data, so an item copied to another inbox, or given another version, does not open. The inbox row
keeps only ``credentials_version``: DynamoDB bills a write by the larger of the item's sizes, and
a few KB of Outlook tokens in the row made each send claim and poll cost four or five units.

Versions. The item's ``version`` is never behind the row's ``credentials_version``:

- a refresh (``save``; Microsoft rotates refresh tokens, so each one is saved at once) writes the
  item first, conditioned on the version it started from, so a slower concurrent refresh loses and
  reloads; then it moves the row's number up to the new one (``<``: a retry of this very write, or
  a sign-in since, already did). A function that dies in between leaves the row one behind: the
  item is the truth, readers take it, and the next refresh moves the row on.
- a sign-in (``replace``) writes the item and the row in one transaction, with the caller's
  conditions on the row: a refused one stores nothing, and a refresh of the old grant that comes
  after it finds a newer version and loses.

Reading. ``current`` caches what it opened by (inbox id, row version). A hit reads nothing and asks
KMS nothing; every write moves the version, so a change is seen as soon as the row is read again.
A miss reads the item strongly consistent: an older item read under a newer number would be cached
as that number's.

Rows from before the item existed keep the credentials in the row (``Inbox.credentials``: KMS
ciphertext, encryption context = inbox id). They are read the old way and moved into an item on
the first miss (best effort: a move that fails is tried again on the next one), and every write
above removes the old attribute.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from sendwell import writes
from sendwell.adapters.aws import KmsCipher
from sendwell.adapters.envelope import CREDENTIALS_PURPOSE, KmsEnvelope
from sendwell.cache import TtlCache
from sendwell.models import Credentials, Inbox, Models
from sendwell.ports.platform import Cipher, Sealed, Sealer

# The version is in the cache key, so nothing here waits for an entry to expire to see a change;
# the hour bounds how long the secrets of an inbox this container no longer serves stay in memory.
# A miss costs one read of the item (the data key stays cached): a longer time would save little.
CACHE_SECONDS = 3600.0
CACHE_ENTRIES = 4096
# A sign-in tries again when a refresh moved the item on between its read and its transaction.
REPLACE_ATTEMPTS = 5


class StaleCredentials(Exception):
    """Another process saved newer credentials first; reload them instead of overwriting."""


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    values: Mapping[str, Any]  # read-only: the cached copy is shared
    version: int  # what a save of newer ones is conditioned on


def associated_data(inbox_id: str, version: int) -> bytes:
    """What a sealed sign-in is bound to: opened under another inbox or version, it fails."""
    bound = {"inbox_id": inbox_id, "purpose": CREDENTIALS_PURPOSE, "version": version}
    return json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()


class CredentialStore:
    """Reads and writes inbox credentials (and is the reconnect's ``CredentialVault``)."""

    def __init__(
        self,
        models: Models,
        sealer: Sealer,
        *,
        legacy: Cipher,
        cache_seconds: float = CACHE_SECONDS,
        max_entries: int = CACHE_ENTRIES,
    ) -> None:
        """``legacy`` reads credentials that rows still hold from before they were sealed."""
        self._models = models
        self._sealer = sealer
        self._legacy = legacy
        self._cache: TtlCache[tuple[str, int], StoredCredentials] = TtlCache(ttl=cache_seconds, max_entries=max_entries)
        meta = models.inbox.Meta
        self._connection = Connection(region=getattr(meta, "region", None), host=getattr(meta, "host", None))

    @classmethod
    def with_kms(cls, models: Models, client: Any, key_id: str) -> CredentialStore:
        """Sealed under ``key_id``'s data keys; old rows decrypted by the same key."""
        return cls(models, KmsEnvelope(client, key_id), legacy=KmsCipher(client, key_id))

    # -----------------------------------------------------------------------------------------
    # Reading

    def load(self, inbox: Inbox) -> dict[str, Any]:
        return dict(self.current(inbox).values)

    def current(self, inbox: Inbox) -> StoredCredentials:
        """The inbox's credentials as of its row's version, from this container's cache if it can."""
        return self._cache.get((inbox.inbox_id, int(inbox.credentials_version)), lambda: self._read(inbox))

    def reload(self, inbox: Inbox) -> tuple[Inbox, StoredCredentials]:
        """The row and the credentials as stored now, past the cache (after losing a save)."""
        fresh = self._models.inbox.get(inbox.inbox_id, consistent_read=True)
        stored = self._read(fresh)
        self._cache.put((fresh.inbox_id, int(fresh.credentials_version)), stored)
        return fresh, stored

    def _read(self, inbox: Inbox) -> StoredCredentials:
        item = self._item(inbox.inbox_id)
        row_version = int(inbox.credentials_version)
        if inbox.credentials is not None:
            if item is None or int(item.version) < row_version:
                return self._migrate(inbox, item)
            self._drop_old_copy(inbox)  # moved already, and the row's copy left behind
        if item is None:
            return StoredCredentials(MappingProxyType({}), row_version)
        return StoredCredentials(MappingProxyType(self._opened(inbox.inbox_id, item)), int(item.version))

    def _item(self, inbox_id: str) -> Credentials | None:
        try:
            return self._models.credentials.get(inbox_id, consistent_read=True)
        except DoesNotExist:
            return None

    def _opened(self, inbox_id: str, item: Credentials) -> dict[str, Any]:
        sealed = Sealed(encrypted_key=bytes(item.data_key), nonce=bytes(item.nonce), ciphertext=bytes(item.ciphertext))
        plaintext = self._sealer.open(sealed, associated_data=associated_data(inbox_id, int(item.version)))
        opened: dict[str, Any] = json.loads(plaintext)
        return opened

    def _migrate(self, inbox: Inbox, item: Credentials | None) -> StoredCredentials:
        """Credentials the row holds from before: decrypted the old way, then moved to an item."""
        assert inbox.credentials is not None
        plaintext = self._legacy.decrypt(bytes(inbox.credentials), context={"inbox_id": inbox.inbox_id})
        values: dict[str, Any] = json.loads(plaintext)
        version = int(inbox.credentials_version)
        model = self._models.credentials
        moved = self._sealed(inbox.inbox_id, version, values)
        # Only over no item (or an older one): a refresh that got there first keeps its newer item.
        older = model.inbox_id.does_not_exist() if item is None else model.version == int(item.version)
        try:
            if writes.save(moved, condition=older):
                self._drop_old_copy(inbox)
        except writes.WriteNotDone:
            pass  # the row still holds them, so the next miss moves them
        return StoredCredentials(MappingProxyType(values), version)

    def _drop_old_copy(self, inbox: Inbox) -> None:
        """Remove the row's own copy once an item at its version or later exists (best effort)."""
        table = self._models.inbox
        try:
            writes.update(inbox, actions=[table.credentials.remove()], condition=table.credentials.exists())
        except writes.WriteNotDone:
            pass  # harmless: readers take the item; the next miss or write removes it

    # -----------------------------------------------------------------------------------------
    # Writing

    def save(self, inbox: Inbox, credentials: Mapping[str, Any], *, over: int | None = None) -> int:
        """Save refreshed credentials over version ``over`` (by default the row's); returns the
        new version. Raises StaleCredentials when another writer moved the item on first."""
        base = int(inbox.credentials_version) if over is None else over
        version = base + 1
        values = dict(credentials)
        item = self._sealed(inbox.inbox_id, version, values)
        model = self._models.credentials
        # No item yet: the row still holds them (from before), or there were none.
        expected = model.inbox_id.does_not_exist() | (model.version == base)
        if not writes.save(item, condition=expected) and not self._is_ours(item):
            raise StaleCredentials(inbox.inbox_id)
        table = self._models.inbox
        if not writes.update(
            inbox,
            actions=[table.credentials_version.set(version), table.credentials.remove()],
            condition=table.credentials_version < version,
        ):
            # At this version already (this write, retried after its answer was lost) or past it (a
            # sign-in since): the item leads either way. The copy in hand says which these are.
            inbox.credentials_version = version
        self._cache.put((inbox.inbox_id, version), StoredCredentials(MappingProxyType(values), version))
        return version

    def _is_ours(self, item: Credentials) -> bool:
        """Whether the stored item is ``item`` itself: a put retried after its answer was lost finds
        its own write as a failed condition. Its random nonce tells it from anyone else's."""
        stored = self._item(item.inbox_id)
        return stored is not None and int(stored.version) == int(item.version) and bytes(stored.nonce) == item.nonce

    def replace(
        self, inbox: Inbox, credentials: Mapping[str, Any], *, actions: Sequence[Action], condition: Condition | None
    ) -> bool:
        """A new sign-in: the item and the row (``actions`` under ``condition``) in one transaction,
        at a version past both. False when ``condition`` failed; ``inbox`` is read again after."""
        model, table = self._models.credentials, self._models.inbox
        values = dict(credentials)
        for _ in range(REPLACE_ATTEMPTS):
            before = self._version_of(inbox.inbox_id)
            version = max(int(inbox.credentials_version), before if before is not None else 0) + 1
            item = self._sealed(inbox.inbox_id, version, values)
            expected = model.inbox_id.does_not_exist() if before is None else model.version == before
            row_actions = [*actions, table.credentials_version.set(version), table.credentials.remove()]
            # The retries of one request share its token: DynamoDB applies it once, however often sent.
            commit = partial(self._transact, item, expected, inbox, row_actions, condition, secrets.token_hex(16))
            if writes.attempt(commit):
                inbox.refresh(consistent_read=True)  # as an update would have returned it
                self._cache.put((inbox.inbox_id, version), StoredCredentials(MappingProxyType(values), version))
                return True
            if self._version_of(inbox.inbox_id) == before:
                return False  # the item is as it was: the row's condition failed
            # The item moved on between the read and the transaction (a refresh then, or this very
            # transaction, retried after its answer was lost): again, past it.
        raise writes.WriteNotDone(f"the credentials of {inbox.inbox_id} kept changing")

    def _transact(
        self,
        item: Credentials,
        expected: Condition,
        inbox: Inbox,
        actions: list[Action],
        condition: Condition | None,
        token: str,
    ) -> None:
        with TransactWrite(connection=self._connection, client_request_token=token) as transaction:
            transaction.save(item, condition=expected)
            transaction.update(inbox, actions=actions, condition=condition)

    def seed(self, inbox: Inbox, credentials: Mapping[str, Any]) -> None:
        """Store ``credentials`` at the row's version, unconditionally: for inboxes set up outside
        the running system (tests, benchmarks), which itself stores through ``save`` and ``replace``."""
        self._sealed(inbox.inbox_id, int(inbox.credentials_version), dict(credentials)).save()

    def _version_of(self, inbox_id: str) -> int | None:
        item = self._item(inbox_id)
        return None if item is None else int(item.version)

    def _sealed(self, inbox_id: str, version: int, values: Mapping[str, Any]) -> Credentials:
        plaintext = json.dumps(values, sort_keys=True).encode()
        sealed = self._sealer.seal(plaintext, associated_data=associated_data(inbox_id, version))
        return self._models.credentials(
            inbox_id=inbox_id,
            version=version,
            data_key=sealed.encrypted_key,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
        )
