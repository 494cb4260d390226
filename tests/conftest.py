"""The tests come in three tiers, each a folder with a conftest of its own:

- ``tests/unit``: nothing but Python (no AWS, no sockets, no servers); ``make unit`` runs it in seconds.
- ``tests/service``: template.yaml deployed on moto (``tests.deployment``).
- ``tests/e2e``: the provider sandbox, aiosmtpd, Dovecot, Chromium, the demo.

Each tier's conftest imports the fixtures it needs from the helper modules beside this file, so the
unit tier never imports moto, the servers or the browser. (``pytest_plugins`` would load them for
every tier: pytest only allows it here, in the top-level conftest.) The helper modules are
registered here, before any conftest imports them, so that pytest rewrites their asserts as it
would a plugin's.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite(
    "tests.deployment", "tests.smtp_server", "tests.dovecot", "tests.provider_sandbox", "tests.browser"
)
