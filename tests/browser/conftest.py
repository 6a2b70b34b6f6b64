"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright, against real nodes.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``make
system-deps`` installs it). Every wait is bounded; a page's uncaught errors fail its test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.support.live import LiveServer, live_server

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
# Fast, deterministic demo workers: 4 stages of 0.3 s.
DEMO = {"TANDEM_DEMO": "true", "TANDEM_DEMO_STEP_S": "0.3"}


# Module scope, not session: while Playwright's sync driver is alive its event loop counts as
# running in this thread, and the asyncio tests of later modules could not run their own.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True, timeout=TIMEOUT_MS
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A node whose demo payments always succeed (short history, for the resync test)."""
    env = {**DEMO, "TANDEM_DEMO_FAILURE_RATE": "0", "TANDEM_HISTORY_SIZE": "20"}
    with live_server(tmp_path_factory.mktemp("shop"), env) as node:
        yield node


@pytest.fixture(scope="module")
def declining_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A node whose demo payments are always declined."""
    env = {**DEMO, "TANDEM_DEMO_FAILURE_RATE": "1"}
    with live_server(tmp_path_factory.mktemp("declining-shop"), env) as node:
        yield node
