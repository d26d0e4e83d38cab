"""The editor page (rooms/pages.py, rooms/static/rooms/editor.js) in real Chromium against a real
server: two users editing one room, offline edits, presence, private and view-only links,
autocomplete, and what the page says when its scripts fail.

Every wait is bounded (Playwright's expect and wait_for_function, 10 s unless said otherwise);
convergence is read off the page's own status (connected, nothing unsent) and then compared with
the server's text from GET /rooms/<id>.
"""

from __future__ import annotations

import asyncio
import base64
import re
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, missing
from tests.e2e.server import LiveServer

try:
    from playwright.async_api import Page, expect
except ImportError:
    missing("the browser tests need the playwright package: `pip install -r requirements-dev.txt`")

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

WAIT_MS = 10_000
expect.set_options(timeout=WAIT_MS)
ROOM_URL = re.compile(r"/r/([A-Za-z0-9_-]+)$")  # also matched in the browser: no named group
# A handle on the page's CodeMirror view, found from its DOM through the page's own bundle:
# its text, its caret, and where it draws another user's caret (null while it draws none).
INSTALL_TEXT_PROBE = """async () => {
  const {EditorView} = await import("/static/rooms/vendor/codemirror.bundle.js");
  const view = EditorView.findFromDOM(document.querySelector(".cm-editor"));
  window.__editorText = () => view.state.doc.toString();
  window.__editorHead = () => view.state.selection.main.head;
  window.__peerCaret = (name) => {
    const label = [...document.querySelectorAll(".cm-peer-label")].find(
      (element) => element.textContent === name,
    );
    return label ? view.posAtDOM(label.parentElement) : null;
  };
}"""
# Records, from before the page's first script runs, whether the editor's content was editable
# when it first appeared and every text it ever showed.
WATCH_EDITOR = """
window.__firstEditable = null;
window.__shownTexts = [];
new MutationObserver(() => {
  const content = document.querySelector(".cm-content");
  if (!content) return;
  if (window.__firstEditable === null) {
    window.__firstEditable = content.getAttribute("contenteditable");
  }
  if (window.__shownTexts.at(-1) !== content.textContent) {
    window.__shownTexts.push(content.textContent);
  }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""
# Records the `completions` answers the page receives (SOCKET_TRACKER has wrapped WebSocket).
RECORD_COMPLETIONS = """
window.__completions = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "completions") window.__completions.push(message);
    });
  }
};
"""


async def create_room(server, **body) -> dict:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        response = await http.post("/rooms", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def server_code(server, room_id: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        response = await http.get(f"/rooms/{room_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["code"]


async def ready(page: Page) -> None:
    await expect(page.locator(".cm-content")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#status")).to_have_attribute("data-status", "connected")
    await page.evaluate(INSTALL_TEXT_PROBE)


async def editor_text(page: Page) -> str:
    return await page.evaluate("window.__editorText()")


async def settled(page: Page) -> None:
    """Connected, and the server has confirmed every local edit."""
    await page.wait_for_function(
        """() => {
          const status = document.querySelector("#status").dataset;
          return status.status === "connected" && status.pending === "0";
        }""",
        timeout=WAIT_MS,
    )


async def converged(server, room_id: str, *pages: Page, token: str | None = None) -> str:
    """Wait until every page shows exactly the server's text; return that text."""
    for page in pages:
        await settled(page)
    code = await server_code(server, room_id, token)
    for page in pages:
        await page.wait_for_function("(code) => window.__editorText() === code", arg=code)
    return code


async def type_at(page: Page, key: str, text: str) -> None:
    """Move the caret with `key` (e.g. Control+End), then type `text` key by key."""
    await page.keyboard.press(key)
    await page.keyboard.type(text, delay=15)


def is_subsequence(part: str, text: str) -> bool:
    """Concurrent inserts at one place may interleave, but each user's keys keep their order."""
    characters = iter(text)
    return all(character in characters for character in part)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


async def go_offline(page: Page) -> None:
    # Offline emulation refuses new connections but keeps open WebSockets: drop them too.
    await page.context.set_offline(True)
    await page.evaluate("window.__sockets.forEach((socket) => socket.close())")


async def save_side_by_side(browser, shots: dict[str, bytes], path) -> None:
    """One picture of several pages' screenshots, composed in the browser itself."""
    figures = "".join(
        f"<figure><figcaption>{name}</figcaption>"
        f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'></figure>"
        for name, png in shots.items()
    )
    page = await browser.new_page(viewport={"width": 800, "height": 400})
    await page.set_content(
        "<style>body{margin:0;display:flex;gap:16px;padding:16px;background:#d0d7de;"
        "width:max-content;font:600 16px system-ui}figure{margin:0}figcaption{margin-bottom:8px}"
        f"img{{display:block;border:1px solid #8c959f}}</style>{figures}"
    )
    path.parent.mkdir(exist_ok=True)
    await page.screenshot(path=path, full_page=True)
    await page.close()


async def test_two_users_edit_concurrently_and_converge_after_going_offline(
    open_page, site, browser
):
    start = "def greet(name):\n    return name\n"
    room_id = (await create_room(site, code=start))["room_id"]
    alice = await open_page(f"/r/{room_id}", name="Alice")
    bob = await open_page(f"/r/{room_id}", name="Bob")
    await ready(alice)
    await ready(bob)

    # The users list: both names, each with a colour.
    for page in (alice, bob):
        await expect(page.locator("#users .user")).to_have_count(2)
        await expect(page.locator("#users")).to_contain_text("Alice")
        await expect(page.locator("#users")).to_contain_text("Bob")
        await expect(page.locator("#users .avatar").first).to_have_attribute(
            "style", re.compile(r"background: (#[0-9a-f]{6}|rgb)")
        )
    await expect(alice.locator("#users .user", has_text="Alice")).to_contain_text("you")

    # The same place, at the same time, emoji included; Alice sees Bob typing meanwhile.
    for page in (alice, bob):
        await page.locator(".cm-content").click()
    alice_same, bob_same = "# alice 😀 here", "# bob 🎉 there"
    await asyncio.gather(
        type_at(alice, "Control+End", alice_same),
        type_at(bob, "Control+End", bob_same),
        expect(alice.locator("#typing")).to_have_text("Bob is typing…", timeout=WAIT_MS),
    )
    text = await converged(site, room_id, alice, bob)
    assert text.startswith(start)
    assert is_subsequence(alice_same, text[len(start) :])
    assert is_subsequence(bob_same, text[len(start) :])

    # Different places, at the same time.
    alice_top, bob_bottom = "import os  # 🐍\n", "\nprint(greet('wörld 🌍'))"
    await asyncio.gather(
        type_at(alice, "Control+Home", alice_top),
        type_at(bob, "Control+End", bob_bottom),
    )
    text = await converged(site, room_id, alice, bob)
    assert text.startswith(alice_top + start)
    assert text.endswith(bob_bottom)

    # Bob's cursor and selection, in his colour with his name, on Alice's screen.
    await bob.keyboard.press("Shift+Home")
    await expect(alice.locator(".cm-peer-label", has_text="Bob")).to_be_visible()
    await expect(alice.locator(".cm-peer-selection")).to_contain_text("print(greet")
    await expect(bob.locator(".cm-peer-label", has_text="Alice")).to_be_visible()

    # Bob goes offline and keeps editing; Alice edits meanwhile.
    await go_offline(bob)
    await expect(alice.locator("#users .user")).to_have_count(1)
    bob_offline = "# written offline 🛫\n"
    await type_at(bob, "Control+Home", bob_offline)
    await expect(bob.locator("#status-text")).to_have_text(
        re.compile(r"^(Offline|Reconnecting) · \d+ unsent edits?$")
    )
    assert int(await bob.locator("#status").get_attribute("data-pending")) > 0
    alice_online = "\n# alice stayed online ✅"
    await type_at(alice, "Control+End", alice_online)
    await settled(alice)
    assert bob_offline not in await server_code(site, room_id)

    # Back online: Bob's edits go out, Alice's come in, everyone agrees with the server.
    await bob.context.set_offline(False)
    text = await converged(site, room_id, alice, bob)
    assert text.startswith(bob_offline + alice_top)
    assert text.endswith(bob_bottom + alice_online)
    await expect(alice.locator("#users .user")).to_have_count(2)
    # He resumed under his client id, which only its secret (from his first init) opens.
    queries = [query_of(url) for url in await bob.evaluate("window.__sockets.map((s) => s.url)")]
    first, resumed = queries[0], queries[-1]
    assert len(queries) > 1 and "client_secret" not in first
    assert resumed["client"] == first["client"] and len(resumed["client_secret"]) == 43

    await bob.keyboard.press("Shift+ArrowUp")  # his caret is at the start of the next line
    await expect(alice.locator(".cm-peer-selection")).to_contain_text("# written offline")
    await expect(bob.locator(".cm-peer-label", has_text="Alice")).to_be_visible()
    await save_side_by_side(
        browser,
        {"Alice": await alice.screenshot(), "Bob": await bob.screenshot()},
        ARTIFACTS / "two-users.png",
    )


async def test_private_room_opens_from_its_fragment_link_and_keeps_the_token_out_of_logs(
    open_page, site
):
    room = await create_room(site, private=True, code="secret = 42\n")
    room_id, token = room["room_id"], room["token"]

    carol = await open_page(f"/r/{room_id}#token={token}", name="Carol")
    await ready(carol)
    await expect(carol.locator("#room-badges")).to_contain_text("Private")
    assert await editor_text(carol) == "secret = 42\n"
    await carol.locator(".cm-content").click()
    await type_at(carol, "Control+End", "print(secret)  # 🔒\n")
    text = await converged(site, room_id, carol, token=token)
    assert text == "secret = 42\nprint(secret)  # 🔒\n"

    # The copy-link button copies the link with its fragment.
    await carol.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await carol.locator("#copy-link").click()
    await expect(carol.locator("#toast")).to_contain_text("Link copied")
    copied = await carol.evaluate("navigator.clipboard.readText()")
    assert copied == f"{site.http_url}/r/{room_id}#token={token}"

    # A view token: the text shows, edits are refused and the editor says so.
    viewer = await open_page(f"/r/{room_id}#token={room['view_token']}", name="Viewer")
    await ready(viewer)
    await expect(viewer.locator("#room-badges")).to_contain_text("View only")
    await expect(viewer.locator(".cm-content")).to_have_attribute("contenteditable", "false")
    assert await editor_text(viewer) == text

    # Without the token: the start card says why.
    stranger = await open_page(f"/r/{room_id}", name="Stranger")
    await expect(stranger.locator("#start-error")).to_contain_text("This room is private")

    log = "".join(site.log)
    assert f"/ws/{room_id}" in log  # the WebSocket connections were logged...
    assert token not in log and room["view_token"] not in log  # ...without their tokens


async def test_autocomplete_offers_the_servers_completions(open_page, site):
    room_id = (await create_room(site, code="import os\n"))["room_id"]
    page = await open_page(f"/r/{room_id}", name="Dana")
    await ready(page)
    await page.locator(".cm-content").click()
    await type_at(page, "Control+End", "pri")
    await page.keyboard.press("Control+Space")
    # The first completion may wait for the server's Jedi warm-up.
    option = page.locator(".cm-tooltip-autocomplete li", has_text="print").first
    await expect(option).to_be_visible(timeout=20_000)
    await option.click()
    assert await converged(site, room_id, page) == "import os\nprint"


async def test_start_page_creates_and_opens_rooms_from_this_server_only(open_page, site):
    page = await open_page("/", name="Erin")
    origins = set()
    page.on("request", lambda request: origins.add(re.match(r"\w+://[^/]+", request.url)[0]))
    await expect(page.locator("#start")).to_be_visible()
    await expect(page.locator("#name-input")).to_have_value("Erin")
    await page.locator("#create-room").click()
    await expect(page).to_have_url(ROOM_URL)
    await ready(page)
    room_id = ROOM_URL.search(page.url)[1]
    await expect(page.locator("#room-id")).to_have_text(room_id)
    host = site.http_url.removeprefix("http://")
    assert origins <= {f"http://{host}", f"ws://{host}"}, origins

    # /?room=<id> opens the room under its canonical link.
    other = await open_page(f"/?room={room_id}", name="Finn")
    await ready(other)
    await expect(other).to_have_url(f"{site.http_url}/r/{room_id}")
    await expect(other.locator("#users .user")).to_have_count(2)

    # The open form takes an id or a link.
    await page.goto("/")
    await page.locator("#open-input").fill(f"{site.http_url}/r/{room_id}")
    await page.locator("#open-form button").click()
    await expect(page).to_have_url(f"{site.http_url}/r/{room_id}")
    await ready(page)

    # Unknown and malformed rooms are explained on the start card.
    await page.goto("/r/no-such-room")
    await expect(page.locator("#start-error")).to_contain_text("There is no room")
    response = await page.goto("/r/not%20a%20room")
    assert response.status == 400
    await expect(page.locator("#start-error")).to_contain_text("malformed")


async def test_a_remote_caret_ends_where_its_owner_stopped_typing(open_page, site):
    room_id = (await create_room(site, code="x = 1\n"))["room_id"]
    alice = await open_page(f"/r/{room_id}", name="Alice")
    bob = await open_page(f"/r/{room_id}", name="Bob")
    await ready(alice)
    await ready(bob)
    await alice.locator(".cm-content").click()
    # Slow keys: each edit is confirmed long before the next one, as when someone types
    # thoughtfully; the caret must not stay behind the last of them on Bob's screen.
    await alice.keyboard.press("Control+End")
    await alice.keyboard.type("total", delay=200)
    await settled(alice)
    head = await alice.evaluate("window.__editorHead()")
    assert head == len("x = 1\ntotal")
    await bob.wait_for_function("(head) => window.__peerCaret('Alice') === head", arg=head)


async def test_a_view_link_is_read_only_from_the_first_frame(open_page, site):
    room = await create_room(site, private=True, code="secret = 42\n")
    room_id = room["room_id"]

    async def watch_editor(context) -> None:
        await context.add_init_script(WATCH_EDITOR)

    viewer = await open_page(
        f"/r/{room_id}#token={room['view_token']}", name="Viewer", prepare=watch_editor
    )
    await ready(viewer)
    assert await viewer.evaluate("window.__firstEditable") == "false"
    await expect(viewer.locator("#room-badges")).to_contain_text("View only")
    await viewer.locator(".cm-content").click()
    await viewer.keyboard.type("typed", delay=15)
    await viewer.keyboard.press("Enter")
    # The page never showed another text, not even for a moment, and the server has none.
    assert await viewer.evaluate("window.__shownTexts") == ["secret = 42"]
    assert await editor_text(viewer) == "secret = 42\n"
    assert await server_code(site, room_id, room["token"]) == "secret = 42\n"
    await expect(viewer.locator("#toast")).to_be_hidden()  # nothing was refused

    # The edit link of the same room is editable from its first frame too.
    editor = await open_page(f"/r/{room_id}#token={room['token']}", name="Editor")
    await ready(editor)
    await expect(editor.locator(".cm-content")).to_have_attribute("contenteditable", "true")
    await expect(editor.locator("#room-badges")).not_to_contain_text("View only")


@pytest.fixture
async def impatient_site(tmp_path):
    """A server that gives Jedi no time at all: every first answer at a position is the
    incomplete fallback, and Jedi's own answer reaches the server's cache a moment later."""
    server = LiveServer(tmp_path / "impatient", env={"AUTOCOMPLETE_BUDGET_S": "0"})
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


async def test_an_incomplete_completion_answer_is_asked_again(open_page, impatient_site):
    room_id = (await create_room(impatient_site, code="import os\n"))["room_id"]

    async def record_completions(context) -> None:
        await context.add_init_script(RECORD_COMPLETIONS)

    page = await open_page(
        f"{impatient_site.http_url}/r/{room_id}", name="Hana", prepare=record_completions
    )
    await ready(page)
    await page.locator(".cm-content").click()
    await type_at(page, "Control+End", "os.pa")
    # The fallback knows no attribute of `os`: only Jedi's answer, asked for again, has `path`.
    option = page.locator(".cm-tooltip-autocomplete li", has_text="path").first
    await expect(option).to_be_visible(timeout=20_000)
    answers = await page.evaluate("window.__completions")
    assert answers[0].get("incomplete") is True
    assert not answers[-1].get("incomplete")
    await option.click()
    assert await converged(impatient_site, room_id, page) == "import os\nos.path"


async def test_a_script_that_fails_to_load_is_reported_in_the_page(open_page, site):
    room_id = (await create_room(site, code="x = 1\n"))["room_id"]
    page = await open_page(f"/r/{room_id}", name="Ivan")
    await ready(page)
    await expect(page.locator("#page-error")).to_be_hidden()
    await expect(page.locator("#boot")).to_have_count(0)  # the script took the fallback away

    async def block_bundle(context) -> None:
        await context.route("**/codemirror.bundle.js", lambda route: route.abort())

    broken = await open_page(f"/r/{room_id}", name="Ivan", prepare=block_bundle)
    error = broken.locator("#page-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("codemirror.bundle.js")
    await expect(error).to_contain_text("reload")

    # No script at all (not even the one that reports errors): the page's own HTML and CSS say
    # so after a few seconds.
    async def block_scripts(context) -> None:
        await context.route(re.compile(r"\.js$"), lambda route: route.abort())

    bare = await open_page(f"/r/{room_id}", name="Ivan", prepare=block_scripts)
    await expect(bare.locator("#boot")).to_contain_text("Loading")
    await expect(bare.locator("#boot .boot-late")).to_be_visible()
    await expect(bare.locator("#boot .boot-late")).to_contain_text("reload")
