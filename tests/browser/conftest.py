"""Real Chromium, driven by Playwright, against a real server (tests/e2e/server.py).

Chromium comes from Debian (`apt-get install chromium`: /usr/bin/chromium); Playwright's own
browser download is not used. Without Chromium or the playwright package the browser tests are
skipped locally and fail in CI (CI=true), where a quiet skip would hide an untested page.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.e2e.server import PROJECT_ROOT, LiveServer


def missing(what: str) -> None:
    """Skip locally, fail in CI: a quiet skip there would hide a page nobody tested."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
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
VIEWPORT = {"width": 1100, "height": 640}
# Records the page's WebSockets, so that a test can drop them: Chromium's offline emulation
# refuses new connections but leaves open ones alone.
SOCKET_TRACKER = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
  };
})();
"""


def chromium_executable() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing("Chromium is needed for the browser tests: `apt-get install -y chromium`")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> LiveServer:
    chromium_executable()  # no server for a skip
    server = LiveServer(tmp_path_factory.mktemp("browser-server"))
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(site: LiveServer):
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield browser
        await browser.close()


OpenPage = Callable[..., Awaitable["Page"]]


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser, site: LiveServer) -> AsyncIterator[OpenPage]:
    """open_page(path, name=..., prepare=None): a page in a fresh browser context (its own
    storage and network), with the display name stored as the page expects it; `prepare(context)`
    runs before the page loads (routes, init scripts). Uncaught errors and Content Security
    Policy violations in any page fail the test."""
    contexts = []
    errors: list[str] = []

    def watch(page, name: str) -> None:
        page.on("pageerror", lambda error: errors.append(f"{name}: {error}"))

        def on_console(message) -> None:
            if "Content Security Policy" in message.text:
                errors.append(f"{name}: {message.text}")

        page.on("console", on_console)

    async def open_(
        path: str,
        *,
        name: str,
        prepare: Callable[[BrowserContext], Awaitable[None]] | None = None,
    ):
        context = await browser.new_context(viewport=VIEWPORT, base_url=site.http_url)
        context.set_default_timeout(10_000)
        contexts.append(context)
        await context.add_init_script(SOCKET_TRACKER)
        await context.add_init_script(
            f"localStorage.setItem('collabsite.name', {json.dumps(name)});"
        )
        if prepare is not None:
            await prepare(context)
        page = await context.new_page()
        watch(page, name)
        await page.goto(path)
        return page

    yield open_
    for context in contexts:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
