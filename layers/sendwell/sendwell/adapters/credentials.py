"""Inbox credentials: stored encrypted (KMS, encryption context = inbox id), never logged.

Microsoft rotates refresh tokens on every refresh, so a refreshed token must be saved at once,
and a slower concurrent refresh must never overwrite a newer one: every save is conditioned on
the version it started from.
"""

from __future__ import annotations

import json
from typing import Any

from sendwell import writes
from sendwell.models import Inbox, Models
from sendwell.ports.platform import Cipher


class StaleCredentials(Exception):
    """Another process saved newer credentials first; reload them instead of overwriting."""


class CredentialStore:
    def __init__(self, models: Models, cipher: Cipher) -> None:
        self._models = models
        self._cipher = cipher

    def load(self, inbox: Inbox) -> dict[str, Any]:
        if inbox.credentials is None:
            return {}
        plaintext = self._cipher.decrypt(bytes(inbox.credentials), context={"inbox_id": inbox.inbox_id})
        loaded: dict[str, Any] = json.loads(plaintext)
        return loaded

    def encrypt(self, inbox_id: str, credentials: dict[str, Any]) -> bytes:
        return self._cipher.encrypt(json.dumps(credentials).encode(), context={"inbox_id": inbox_id})

    def save(self, inbox: Inbox, credentials: dict[str, Any]) -> None:
        """Save over the version ``inbox`` was loaded at; raise StaleCredentials if it moved on."""
        table = self._models.inbox
        version = int(inbox.credentials_version)
        if not writes.update(
            inbox,
            actions=[
                table.credentials.set(self.encrypt(inbox.inbox_id, credentials)),
                table.credentials_version.set(version + 1),
            ],
            condition=table.credentials_version == version,
        ):
            raise StaleCredentials(inbox.inbox_id)

    def reload(self, inbox: Inbox) -> tuple[Inbox, dict[str, Any]]:
        fresh = self._models.inbox.get(inbox.inbox_id, consistent_read=True)
        return fresh, self.load(fresh)
