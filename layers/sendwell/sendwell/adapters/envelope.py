"""Envelope encryption under one KMS key: AES-256-GCM here, the data keys from KMS.

Why not KMS ``Encrypt`` itself: it takes at most 4,096 bytes of plaintext, and a Microsoft access
token with its refresh token comes close (4,354 bytes already fail); and every ``Decrypt`` is a
paid request, one per poll of every inbox. Sealing locally lifts the size limit, and a data key is
decrypted once per container and then cached, so opening credentials costs no request at all
once a container has met the key they were sealed with.

Data keys are asked for with an encryption context naming their purpose (the template's policy
allows ``GenerateDataKey`` for that purpose only), so an encrypted data key can't be decrypted as
anything else. What binds a sealed value to its owner is the AES-GCM associated data the caller
gives (``sendwell.adapters.credentials``: the inbox id and version).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sendwell.cache import TtlCache
from sendwell.ports.platform import SealBroken, Sealed

CREDENTIALS_PURPOSE = "inbox-credentials"
NONCE_BYTES = 12  # AES-GCM's standard nonce; random, so a key is never reused anywhere near 2**32 times
# A generated data key seals new values for an hour, then a new one is asked for. Reusing it keeps
# GenerateDataKey to about one request a container-hour, and, because every other container pays
# one Decrypt the first time it meets a key, keeps the keys in use (and so those Decrypts) few: an
# hour's refreshes of all of a container's inboxes share one. The bound limits what one data key
# opens, how long it sits in memory as the key for new items, and how soon a rotation of the KMS
# key reaches new items.
KEY_REUSE_SECONDS = 3600.0
KEY_REUSE_LIMIT = 100_000  # seals per data key, far below AES-GCM's limit for random nonces
# Decrypted data keys stay this long: longer than a Lambda container usually lives, so in practice
# one Decrypt per container per key, while a key disabled in KMS stops working here within a day.
DATA_KEY_CACHE_SECONDS = 12 * 3600.0
DATA_KEY_CACHE_ENTRIES = 4096  # 32 bytes each, keyed by their encrypted form: a few hundred KB at most


@dataclass(slots=True)
class _CurrentKey:
    plaintext: bytes
    encrypted: bytes
    until: float
    uses: int = 0


class KmsEnvelope:
    """A ``Sealer`` over one KMS key, with the data keys it met cached for the container."""

    def __init__(
        self,
        client: Any,
        key_id: str,
        *,
        purpose: str = CREDENTIALS_PURPOSE,
        reuse_seconds: float = KEY_REUSE_SECONDS,
        reuse_limit: int = KEY_REUSE_LIMIT,
        cache_seconds: float = DATA_KEY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._key_id = key_id
        self._context = {"purpose": purpose}
        self._reuse_seconds = reuse_seconds
        self._reuse_limit = reuse_limit
        self._clock = clock
        self._keys: TtlCache[bytes, bytes] = TtlCache(
            ttl=cache_seconds, max_entries=DATA_KEY_CACHE_ENTRIES, clock=clock
        )
        self._current: _CurrentKey | None = None
        self._lock = threading.Lock()

    def seal(self, plaintext: bytes, *, associated_data: bytes) -> Sealed:
        # Imported here, not at the top: most cold starts of a function never seal or open anything.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key, encrypted_key = self._key_for_sealing()
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, associated_data)
        return Sealed(encrypted_key=encrypted_key, nonce=nonce, ciphertext=ciphertext)

    def open(self, sealed: Sealed, *, associated_data: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._keys.get(sealed.encrypted_key, lambda: self._decrypt_key(sealed.encrypted_key))
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, associated_data)
        except (InvalidTag, ValueError) as error:  # ValueError: a nonce of the wrong length
            raise SealBroken("the sealed value or its associated data changed") from error

    def _key_for_sealing(self) -> tuple[bytes, bytes]:
        with self._lock:
            current, now = self._current, self._clock()
            if current is None or current.until <= now or current.uses >= self._reuse_limit:
                response = self._client.generate_data_key(
                    KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=self._context
                )
                current = _CurrentKey(
                    plaintext=response["Plaintext"],
                    encrypted=response["CiphertextBlob"],
                    until=now + self._reuse_seconds,
                )
                self._current = current
                # What this container seals it can open again without asking KMS.
                self._keys.put(current.encrypted, current.plaintext)
            current.uses += 1
            return current.plaintext, current.encrypted

    def _decrypt_key(self, encrypted_key: bytes) -> bytes:
        # KeyId too: KMS refuses a blob that another key encrypted instead of trying it.
        response = self._client.decrypt(
            CiphertextBlob=encrypted_key, KeyId=self._key_id, EncryptionContext=self._context
        )
        plaintext: bytes = response["Plaintext"]
        return plaintext
