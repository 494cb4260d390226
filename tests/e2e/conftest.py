"""End-to-end tier: moto plus real servers on 127.0.0.1 (the provider sandbox, aiosmtpd, Dovecot)
and Debian's Chromium.

A test that uses Dovecot or Chromium is marked ``dovecot`` or ``browser`` here, whether or not its
module says so, so that ``make fast`` (``-m "not browser and not dovecot"``) never needs them.
"""

from __future__ import annotations

import pytest

from tests.browser import browser, chromium, server_logs
from tests.deployment import atomic_dynamodb, aws, sample_event
from tests.dovecot import dovecot
from tests.provider_sandbox import providers, sandbox, saved
from tests.smtp_server import smtp_server_fixture, starttls_smtp_server_fixture, tls_smtp_server_fixture

__all__ = [  # fixtures: pytest finds them here
    "atomic_dynamodb",
    "aws",
    "browser",
    "chromium",
    "dovecot",
    "providers",
    "sample_event",
    "sandbox",
    "saved",
    "server_logs",
    "smtp_server_fixture",
    "starttls_smtp_server_fixture",
    "tls_smtp_server_fixture",
]

NEEDS = {"dovecot": pytest.mark.dovecot, "chromium": pytest.mark.browser}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, mark in NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)
