"""The local stack (``make run``): the HTTP API on 127.0.0.1 over an embedded AWS starts, answers and stops."""

from __future__ import annotations

import json
import urllib.request

import pytest

from local.stack import LocalStack


def test_local_stack_starts_serves_health_and_stops() -> None:
    stack = LocalStack(api_port=0, run_schedules=False, log=lambda _: None)
    stack.start()
    try:
        with urllib.request.urlopen(f"{stack.api_url}/health", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{stack.api_url}/no-such-route", timeout=10)
        assert missing.value.code == 404
    finally:
        stack.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{stack.api_url}/health", timeout=2)
