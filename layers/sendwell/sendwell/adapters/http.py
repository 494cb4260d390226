"""The HTTP session the provider adapters share: one per container, with a timeout on every call."""

from __future__ import annotations

from typing import Any

import requests

from sendwell.config import ProviderEndpoints

HTTP_TIMEOUT = 10.0  # seconds, unless a call says otherwise; the API Gateway request has 29 in all


class _TimeoutSession(requests.Session):
    """A session whose every request has a timeout (msal and google-auth don't always pass one)."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        return super().request(method, url, *args, **kwargs)


def http_session(endpoints: ProviderEndpoints) -> requests.Session:
    """One session per container. With a CA bundle configured it trusts that bundle alone:
    requests would otherwise let REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override ``verify``."""
    session = _TimeoutSession()
    if endpoints.ca_bundle:
        session.trust_env = False
        session.verify = endpoints.ca_bundle
    return session
