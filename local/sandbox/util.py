"""Small encoders several modules share: account keys, timestamps, URL-safe base64."""

import base64
import binascii
import datetime as dt
import re


def account_key(email: str) -> str:
    """How the sandbox files an account: the address trimmed and lower-cased."""
    return email.strip().lower()


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def b64url_unpadded(data: bytes) -> str:
    """The JOSE form (at_hash, PKCE, client_info): URL-safe base64 without the ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding; binascii.Error on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise binascii.Error("not URL-safe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
