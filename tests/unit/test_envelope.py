"""The envelope: data keys reused for a bounded time, decrypted once, and seals bound to their data.

A key service in memory stands in for KMS here (moto's KMS: tests/service/test_credentials.py).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from sendwell.adapters.envelope import KEY_REUSE_SECONDS, KmsEnvelope
from sendwell.ports.platform import SealBroken, Sealed


class KeyService:
    """GenerateDataKey and Decrypt as KMS answers them, context checked, calls counted."""

    def __init__(self) -> None:
        self.keys: dict[bytes, tuple[bytes, dict[str, str]]] = {}
        self.calls: Counter[str] = Counter()

    def generate_data_key(self, *, KeyId: str, KeySpec: str, EncryptionContext: dict[str, str]) -> dict[str, Any]:
        assert KeySpec == "AES_256"
        self.calls["generate_data_key"] += 1
        plaintext, blob = os.urandom(32), os.urandom(48)
        self.keys[blob] = (plaintext, dict(EncryptionContext))
        return {"Plaintext": plaintext, "CiphertextBlob": blob, "KeyId": KeyId}

    def decrypt(self, *, CiphertextBlob: bytes, KeyId: str, EncryptionContext: dict[str, str]) -> dict[str, Any]:
        self.calls["decrypt"] += 1
        plaintext, context = self.keys[CiphertextBlob]
        if context != EncryptionContext:
            raise ValueError("InvalidCiphertextException")
        return {"Plaintext": plaintext}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_data_key_seals_for_an_hour_then_a_new_one_is_asked_for() -> None:
    kms, clock = KeyService(), Clock()
    envelope = KmsEnvelope(kms, "key", clock=clock)
    first = envelope.seal(b"a", associated_data=b"x")
    second = envelope.seal(b"b", associated_data=b"x")
    assert first.encrypted_key == second.encrypted_key and first.nonce != second.nonce
    clock.now += KEY_REUSE_SECONDS
    third = envelope.seal(b"c", associated_data=b"x")
    assert third.encrypted_key != first.encrypted_key
    assert kms.calls == {"generate_data_key": 2}
    # What it sealed it opens without asking again.
    assert [envelope.open(s, associated_data=b"x") for s in (first, second, third)] == [b"a", b"b", b"c"]
    assert kms.calls == {"generate_data_key": 2}


def test_a_data_key_seals_a_bounded_number_of_values() -> None:
    kms = KeyService()
    envelope = KmsEnvelope(kms, "key", reuse_limit=2)
    keys = {envelope.seal(b"v", associated_data=b"").encrypted_key for _ in range(5)}
    assert len(keys) == 3 and kms.calls == {"generate_data_key": 3}


def test_another_container_decrypts_each_data_key_once() -> None:
    kms = KeyService()
    writer, reader = KmsEnvelope(kms, "key"), KmsEnvelope(kms, "key")
    sealed = [writer.seal(f"inbox {n}".encode(), associated_data=str(n).encode()) for n in range(20)]
    opened = [reader.open(s, associated_data=str(n).encode()) for n, s in enumerate(sealed)]
    assert opened == [f"inbox {n}".encode() for n in range(20)]
    assert kms.calls == {"generate_data_key": 1, "decrypt": 1}


def test_a_seal_opens_only_with_its_own_associated_data_and_bytes() -> None:
    envelope = KmsEnvelope(KeyService(), "key")
    sealed = envelope.seal(b"secret", associated_data=b'{"inbox_id":"ibx_a","version":3}')
    with pytest.raises(SealBroken):
        envelope.open(sealed, associated_data=b'{"inbox_id":"ibx_b","version":3}')
    with pytest.raises(SealBroken):
        envelope.open(sealed, associated_data=b'{"inbox_id":"ibx_a","version":4}')
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(SealBroken):
        envelope.open(Sealed(sealed.encrypted_key, sealed.nonce, flipped), associated_data=b"")
    with pytest.raises(SealBroken):
        envelope.open(Sealed(sealed.encrypted_key, sealed.nonce[:8], sealed.ciphertext), associated_data=b"")


def test_data_keys_are_asked_for_with_their_purpose_and_refused_for_another() -> None:
    kms = KeyService()
    sealed = KmsEnvelope(kms, "key").seal(b"secret", associated_data=b"")
    ((_, context),) = kms.keys.values()
    assert context == {"purpose": "inbox-credentials"}
    with pytest.raises(ValueError, match="InvalidCiphertext"):
        KmsEnvelope(kms, "key", purpose="something-else").open(sealed, associated_data=b"")
