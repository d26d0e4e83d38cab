"""Accounts in real Chromium against a real server: people sign up, an owner shares a private
room from its share dialog, and every change of access reaches the others' open pages at once:
a viewer becomes an editor without reloading, a removed member's page is disconnected, the link
opens what its access says, and a new link shuts the old one out.

Every wait is bounded (Playwright's expect and wait_for_function, 10 s).
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.browser.conftest import missing
from tests.browser.test_editor_page import (
    WAIT_MS,
    converged,
    editor_text,
    ready,
    type_at,
)

try:
    from playwright.async_api import Page, expect
except ImportError:
    missing("the browser tests need the playwright package: `pip install -r requirements.txt`")

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
PRIVATE_ROOM_URL = re.compile(r"/r/([A-Za-z0-9_-]+)#token=([A-Za-z0-9_-]+)$")


async def sign_up(open_page, username: str) -> Page:
    """A new person: their own browser, signed up through the sign-up page."""
    page = await open_page("/accounts/signup/", name=username)
    await page.locator("#id_username").fill(username)
    await page.locator("#id_email").fill(f"{username}@example.com")
    await page.locator("#id_password1").fill(PASSWORD)
    await page.locator("#id_password2").fill(PASSWORD)
    await page.locator("#signup-form button[type=submit]").click()
    await expect(page).to_have_url(re.compile(r"/my-rooms/$"))
    await expect(page.locator("#account-link")).to_have_text(username)
    return page


async def new_private_room(page: Page) -> tuple[str, str]:
    """The owner creates a private room from the start page: (room id, its edit token)."""
    await page.goto("/")
    await page.locator("#create-private-room").click()
    await expect(page).to_have_url(PRIVATE_ROOM_URL)
    await ready(page)
    room_id, token = PRIVATE_ROOM_URL.search(page.url).groups()
    return room_id, token


async def open_share(page: Page) -> None:
    dialog = page.locator("#share-dialog")
    if not await dialog.is_visible():
        await page.locator("#share").click()
    await expect(dialog).to_be_visible()


async def invite(owner: Page, username: str, role: str) -> None:
    await open_share(owner)
    await owner.locator("#share-invitee").fill(username)
    await owner.locator("#share-invite-role").select_option(role)
    await owner.locator("#share-invite button[type=submit]").click()
    member = owner.locator(f'#share-members li[data-username="{username}"]')
    await expect(member.locator("select")).to_have_value(role)


async def editable(page: Page, yes: bool) -> None:
    await expect(page.locator(".cm-content")).to_have_attribute(
        "contenteditable", "true" if yes else "false"
    )


async def disconnected(page: Page) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-status", "closed")


async def test_an_owner_shares_with_named_people_and_changes_reach_them_live(open_page, site):
    alice = await sign_up(open_page, "alice")
    bob = await sign_up(open_page, "bob")
    carol = await sign_up(open_page, "carol")
    await alice.goto("/")
    await expect(alice.locator("#name-input")).to_be_hidden()  # the account's name is shown
    room_id, token = await new_private_room(alice)

    # Bob, invited as a viewer, opens the room from "My rooms": read-only from the first frame.
    await invite(alice, "bob", "viewer")
    await bob.goto("/my-rooms/")
    await bob.locator(f'#my-rooms a[href="/r/{room_id}"]').click()
    await ready(bob)
    await editable(bob, False)
    await expect(bob.locator("#room-badges")).to_contain_text("View only")
    await expect(bob.locator("#share")).to_have_count(0)  # only owners get the dialog

    # Alice types; Bob sees it live, and cannot type himself.
    await alice.locator("#share-close").click()
    await alice.locator(".cm-content").click()
    await type_at(alice, "Control+End", "total = 1\n")
    await bob.wait_for_function("() => window.__editorText() === 'total = 1\\n'", timeout=WAIT_MS)
    await bob.locator(".cm-content").click()
    await bob.keyboard.type("nope", delay=15)
    assert await editor_text(bob) == "total = 1\n"

    # Promoted while connected, Bob can type without reloading.
    await open_share(alice)
    await alice.locator('#share-members li[data-username="bob"] select').select_option("editor")
    await editable(bob, True)
    await expect(bob.locator("#room-badges")).not_to_contain_text("View only")
    await bob.locator(".cm-content").click()
    await type_at(bob, "Control+End", "bob = 2\n")
    assert await converged(site, room_id, alice, bob, token=token) == "total = 1\nbob = 2\n"

    # Carol, an editor, is removed while connected: her page is disconnected at once.
    await invite(alice, "carol", "editor")
    await carol.goto(f"/r/{room_id}")
    await ready(carol)
    await editable(carol, True)
    await alice.locator('#share-members li[data-username="carol"] .share-remove').click()
    await expect(alice.locator('#share-members li[data-username="carol"]')).to_have_count(0)
    await disconnected(carol)
    await editable(carol, False)
    await carol.reload()
    await expect(carol.locator("#start-error")).to_contain_text("have no access")

    # A stranger, signed in or not, is refused.
    dave = await sign_up(open_page, "dave")
    await dave.goto(f"/r/{room_id}")
    await expect(dave.locator("#start-error")).to_contain_text("have no access")
    anonymous = await open_page(f"/r/{room_id}", name="Anonymous")
    await expect(anonymous.locator("#start-error")).to_contain_text("This room is private")


async def test_the_link_opens_what_its_access_says_and_a_new_link_shuts_the_old_one_out(
    open_page, site
):
    owner = await sign_up(open_page, "olivia")
    room_id, token = await new_private_room(owner)
    link = f"/r/{room_id}#token={token}"

    # "can edit" (the default): the link edits.
    guest = await open_page(link, name="Guest")
    await ready(guest)
    await editable(guest, True)

    # "can view": the open page turns read-only at once.
    await open_share(owner)
    await owner.locator("#share-link-access").select_option("view")
    await editable(guest, False)
    await expect(guest.locator("#room-badges")).to_contain_text("View only")

    # "no access": the open page is disconnected, and the link opens nothing.
    await owner.locator("#share-link-access").select_option("none")
    await disconnected(guest)
    refused = await open_page(link, name="Late guest")
    await expect(refused.locator("#start-error")).to_contain_text("This room is private")

    # "can edit" again: the same link edits again.
    await owner.locator("#share-link-access").select_option("edit")
    await expect(owner.locator("#share-link-access")).to_have_value("edit")
    again = await open_page(link, name="Guest again")
    await ready(again)
    await editable(again, True)

    # A new link: pages on the old one are disconnected, the old link is refused, the new works.
    await owner.locator("#share-rotate").click()
    await expect(owner.locator("#share-link-note")).to_contain_text("New link made")
    new_link = await owner.locator("#share-link-url").input_value()
    assert new_link.startswith(f"{site.http_url}/r/{room_id}#token=") and token not in new_link
    assert owner.url == new_link  # the owner's own page carries the new link
    await disconnected(again)
    old = await open_page(link, name="Old link")
    await expect(old.locator("#start-error")).to_contain_text("This room is private")
    fresh = await open_page(new_link.removeprefix(site.http_url), name="New link")
    await ready(fresh)
    await editable(fresh, True)
    async with httpx.AsyncClient(base_url=site.http_url, timeout=5) as http:
        assert (await http.get(f"/rooms/{room_id}", params={"token": token})).status_code == 403
