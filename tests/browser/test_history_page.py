"""The editor page's history (history-panel.js) and who wrote what (authorship-view.js), in real
Chromium against a real server: the slider shows old text, playback runs to now, the diff
against now, restore reaching the other browser, downloads, author colours and the gutter.

Every wait is bounded (Playwright's expect and wait_for_function, 10 s unless said otherwise).
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from tests.browser.conftest import missing
from tests.browser.test_editor_page import (
    WAIT_MS,
    converged,
    create_room,
    ready,
    settled,
    type_at,
)

try:
    from playwright.async_api import Page, expect
except ImportError:
    missing("the browser tests need the playwright package: `pip install -r requirements.txt`")

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

START = "def greet(name):\n    return name\n"
# The read-only view of the history panel, found through the page's own bundle.
INSTALL_PAST_PROBE = """async () => {
  const {EditorView} = await import("/static/rooms/vendor/codemirror.bundle.js");
  window.__pastText = () =>
    EditorView.findFromDOM(document.querySelector("#history-view .cm-editor")).state.doc.toString();
}"""


async def rest(site, path: str) -> dict:
    async with httpx.AsyncClient(base_url=site.http_url, timeout=5) as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def type_versions(page: Page, site, room_id: str, lines: list[str]) -> list[str]:
    """Type each line at the end, waiting for each to be saved; the room's text after each."""
    await page.locator(".cm-content").click()
    texts = []
    for line in lines:
        await type_at(page, "Control+End", line)
        texts.append(await converged(site, room_id, page))
    return texts


async def open_history(page: Page) -> None:
    await page.locator("#history-toggle").click()
    await expect(page.locator("#history")).to_be_visible()
    await expect(page.locator("#editor")).to_be_hidden()
    await page.evaluate(INSTALL_PAST_PROBE)


async def past_text(page: Page) -> str:
    return await page.evaluate("window.__pastText()")


async def test_the_slider_shows_old_text_and_playback_runs_to_now(open_page, site):
    room_id = (await create_room(site, code=START))["room_id"]
    alice = await open_page(f"/r/{room_id}", name="Alice")
    await ready(alice)
    await type_versions(alice, site, room_id, ["print(1)\n", "print(2)\n", "print(3)\n"])
    head = (await rest(site, f"/rooms/{room_id}"))["version"]
    assert head >= 3

    await open_history(alice)
    history = alice.locator("#history")
    await expect(history).to_have_attribute("data-version", str(head))
    for version in (0, 1, head - 1):
        await alice.locator("#history-slider").fill(str(version))
        await expect(history).to_have_attribute("data-version", str(version))
        expected = (await rest(site, f"/rooms/{room_id}?version={version}"))["code"]
        await alice.wait_for_function("(code) => window.__pastText() === code", arg=expected)
        await expect(alice.locator("#history-position")).to_contain_text(
            f"Version {version} of {head}"
        )

    # Playback from version 0 at the highest speed: the versions go by, one after the other,
    # until now, and the text is then the room's.
    await alice.locator("#history-slider").fill("0")
    await expect(history).to_have_attribute("data-version", "0")
    await alice.evaluate(
        """() => {
          window.__played = [];
          new MutationObserver(() => window.__played.push(
            Number(document.querySelector("#history").dataset.version))
          ).observe(document.querySelector("#history"), {attributes: true});
        }"""
    )
    await alice.locator("#history-speed").select_option("64")
    await alice.locator("#history-play").click()
    await expect(alice.locator("#history-play")).to_have_text("Play", timeout=WAIT_MS)
    await expect(history).to_have_attribute("data-version", str(head))
    played = [v for v in await alice.evaluate("window.__played") if v]
    assert played == sorted(played) and played[-1] == head and len(set(played)) > 1
    now = (await rest(site, f"/rooms/{room_id}"))["code"]
    assert await past_text(alice) == now

    # Back to live: the editor again.
    await alice.locator("#history-close").click()
    await expect(alice.locator("#editor")).to_be_visible()
    await expect(history).to_be_hidden()


async def test_the_diff_against_now_and_the_downloads(open_page, site):
    room_id = (await create_room(site, code=START))["room_id"]
    alice = await open_page(f"/r/{room_id}", name="Alice")
    await ready(alice)
    await type_versions(alice, site, room_id, ["# added\n"])
    await open_history(alice)
    await alice.locator("#history-slider").fill("0")
    await expect(alice.locator("#history")).to_have_attribute("data-version", "0")
    await alice.locator("#history-diff").click()
    diff = alice.locator("#history-diff-view")
    await expect(diff).to_be_visible()
    await expect(diff.locator(".history-line-add")).to_have_text(["+# added"])

    async with alice.expect_download() as code_download:
        await alice.locator("#history-download-code").click()
    code = await code_download.value
    assert code.suggested_filename == f"{room_id}-v0.py"
    assert (await code.path()).read_text() == START

    async with alice.expect_download() as json_download:
        await alice.locator("#history-download-json").click()
    saved = await json_download.value
    assert saved.suggested_filename == f"{room_id}-history.json"
    body = json.loads((await saved.path()).read_text())
    assert body == await rest(site, f"/rooms/{room_id}/history")


async def test_restore_works_and_reaches_the_other_browser(open_page, site):
    room_id = (await create_room(site, code=START))["room_id"]
    alice = await open_page(f"/r/{room_id}", name="Alice")
    bob = await open_page(f"/r/{room_id}", name="Bob")
    await ready(alice)
    await ready(bob)
    texts = await type_versions(alice, site, room_id, ["x = 1\n", "y = 2\n"])
    await bob.wait_for_function("(code) => window.__editorText() === code", arg=texts[-1])
    version_one = (await rest(site, f"/rooms/{room_id}?version=1"))["code"]

    await open_history(alice)
    await alice.locator("#history-slider").fill("1")
    await expect(alice.locator("#history")).to_have_attribute("data-version", "1")
    alice.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await alice.locator("#history-restore").click()
    await expect(alice.locator("#toast")).to_contain_text("Version 1 restored as version")
    await expect(alice.locator("#editor")).to_be_visible()  # back to live

    # Bob sees it without doing anything; both show the server's text, which is version 1's.
    await bob.wait_for_function("(code) => window.__editorText() === code", arg=version_one)
    assert await converged(site, room_id, alice, bob) == version_one
    history = await rest(site, f"/rooms/{room_id}/history")
    assert [entry["version"] for entry in history["ops"]][-1] == history["version"]
    assert len(history["ops"]) == history["version"] >= 3


async def test_author_colours_match_the_presence_list(open_page, site):
    room_id = (await create_room(site, code=START))["room_id"]
    alice = await open_page(f"/r/{room_id}", name="Alice")
    bob = await open_page(f"/r/{room_id}", name="Bob")
    await ready(alice)
    await ready(bob)
    await type_versions(alice, site, room_id, ["alice_was_here = 1\n"])
    await bob.locator(".cm-content").click()
    await type_at(bob, "Control+Home", "bob_too = 2\n")
    await converged(site, room_id, alice, bob)

    await bob.locator("#authors-toggle").click()
    await expect(bob.locator("#authors-toggle")).to_have_attribute("aria-pressed", "true")
    await alice.locator("#authors-toggle").click()
    for page in (alice, bob):
        for name, text in (("Alice", "alice_was_here"), ("Bob", "bob_too")):
            avatar = page.locator("#users .user", has_text=name).locator(".avatar")
            presence = await avatar.evaluate(
                "(element) => getComputedStyle(element).backgroundColor"
            )
            mark = page.locator(".cm-author", has_text=text).first
            await expect(mark).to_be_visible()
            tint = await mark.evaluate("(element) => getComputedStyle(element).backgroundColor")
            # The same colour, as a light tint: rgb(r, g, b) against rgba(r, g, b, 0.2).
            assert re.sub(r"rgba?\(([^,]+, [^,]+, [^,)]+).*", r"\1", tint) == re.sub(
                r"rgba?\(([^,]+, [^,]+, [^,)]+).*", r"\1", presence
            ), (page, name, tint, presence)
            assert tint.startswith("rgba(") and tint.endswith(", 0.2)")

    # The gutter: who last touched each line, in the same colour, live.
    lines = await bob.locator(".cm-blame-gutter .cm-gutterElement").all_text_contents()
    assert "you" in lines and "Alice" in lines
    await alice.locator(".cm-content").click()
    await type_at(alice, "Control+Home", "# top\n")
    await settled(alice)
    # (The gutter's first element is CodeMirror's invisible width spacer: it has no title.)
    first_line = bob.locator(".cm-blame-gutter .cm-blame-marker:not([title=''])").first
    await expect(first_line).to_have_text("Alice")
    await expect(first_line).to_have_attribute("title", re.compile(r"^Alice · version \d+ · "))
