"""Debian's Chromium, driven by Playwright, for tests of the pages people open (no browser download).

``chromium`` launches the system's Chromium once per session (a fresh, throwaway profile). ``browser``
gives each test its own context, the size of a phone, that records every request the browser makes
(URL and headers) and every document it receives, and saves a screenshot of a page on request under
``test-artifacts/screenshots/`` for review. ``server_logs`` collects everything the servers behind
those pages logged or printed during the test (they run in this process), to check what never
appears in a log line.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, Response, sync_playwright

SYSTEM_CHROMIUM = ("chromium", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    for candidate in SYSTEM_CHROMIUM:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError("Chromium is missing: run `make system-deps` (local/install-system-deps.sh)")


@dataclass(frozen=True, slots=True)
class SeenRequest:
    url: str
    headers: dict[str, str]
    navigation: bool


@dataclass(frozen=True, slots=True)
class SeenDocument:
    url: str
    status: int
    headers: dict[str, str]


@dataclass
class BrowserTab:
    page: Page
    test_name: str
    requests: list[SeenRequest] = field(default_factory=list)
    documents: list[SeenDocument] = field(default_factory=list)
    shots: int = 0

    def screenshot(self, label: str) -> Path:
        """Save the page as it looks now (the whole page) for a person to review."""
        self.shots += 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.test_name}-{self.shots:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def _request(self, request: Request) -> None:
        self.requests.append(SeenRequest(request.url, request.headers, request.is_navigation_request()))

    def _response(self, response: Response) -> None:
        if response.request.resource_type == "document":
            self.documents.append(SeenDocument(response.url, response.status, response.headers))


class ServerLogs:
    def __init__(self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
        self._caplog = caplog
        self._capfd = capfd

    def text(self) -> str:
        """Every log record (message and extra fields) and everything written to stdout and stderr."""
        records = [json.dumps(vars(record), default=str) for record in self._caplog.records]
        out, err = self._capfd.readouterr()
        return "\n".join([*records, out, err])


@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> ServerLogs:
    caplog.set_level(logging.INFO)
    # Powertools' logger keeps the stream it found when the first handler module was imported, which
    # may be an earlier test's capture, closed by now (so not setStream(), which flushes the old one).
    for handler in logging.getLogger("sendwell").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.stream = sys.stdout
    return ServerLogs(caplog, capfd)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserTab]:
    # The sandbox serves HTTPS with a throwaway CA that the browser is told to accept.
    context = chromium.new_context(ignore_https_errors=True, viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    tab = BrowserTab(page, re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:80])
    page.on("request", tab._request)
    page.on("response", tab._response)
    yield tab
    context.close()
