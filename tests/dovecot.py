"""pytest fixture around the real Dovecot IMAP server in ``local.imapserver``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.imapserver import (  # noqa: F401 - re-exported for the tests that import them from here
    HOST,
    DovecotServer,
    dovecot_binary,
    ensure_dovecot,
)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """One Dovecot for the whole test session; tests isolate themselves by adding their own users."""
    with DovecotServer() as server:
        yield server
