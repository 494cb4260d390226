"""pytest fixtures around the real SMTP server in ``local.mailserver`` (aiosmtpd, AUTH required)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.mailserver import (  # noqa: F401 - re-exported for the tests that import them from here
    AUTH_REQUIRED,
    BAD_CREDENTIALS,
    HOST,
    TEST_PASSWORD,
    TEST_TOKEN,
    TEST_USER,
    XOAUTH2_ERROR,
    Command,
    ReceivedMessage,
    Security,
    SelfSignedCert,
    SmtpTestServer,
)


def _server(security: Security) -> Iterator[SmtpTestServer]:
    users, tokens = {TEST_USER: TEST_PASSWORD}, {TEST_USER: TEST_TOKEN}
    with SmtpTestServer(users=users, tokens=tokens, security=security) as server:
        yield server


# Named apart from their fixture names so that a test module can import them without its test
# parameters shadowing the import.


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpTestServer]:
    """AUTH required, no TLS."""
    yield from _server("plain")


@pytest.fixture(name="starttls_smtp_server")
def starttls_smtp_server_fixture() -> Iterator[SmtpTestServer]:
    """STARTTLS required before AUTH (port 587 style)."""
    yield from _server("starttls")


@pytest.fixture(name="tls_smtp_server")
def tls_smtp_server_fixture() -> Iterator[SmtpTestServer]:
    """TLS from the first byte (port 465 style)."""
    yield from _server("tls")
