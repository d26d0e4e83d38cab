"""rooms/access.py: who may read and who may edit a room (docs/protocol.md, "Accounts and
sharing"). The decisions alone, on rooms in memory; the REST and WebSocket tests check that
every way in asks here."""

from __future__ import annotations

import pytest

from rooms import access, accounts
from rooms.models import Room

EDIT_TOKEN, VIEW_TOKEN = accounts.token_new(), accounts.token_new()


def private_room(link_access: str = "edit") -> Room:
    return Room(
        id="r",
        private=True,
        link_access=link_access,
        edit_token_hash=accounts.token_hash(EDIT_TOKEN),
        view_token_hash=accounts.token_hash(VIEW_TOKEN),
    )


@pytest.mark.parametrize("role", [None, "owner", "editor", "viewer"])
@pytest.mark.parametrize("token", [None, "", "wrong", EDIT_TOKEN, VIEW_TOKEN])
def test_a_public_room_lets_everyone_edit(role, token):
    assert access.room_access(Room(id="r"), role=role, token=token) == "edit"


@pytest.mark.parametrize(
    ("role", "expected"), [("owner", "edit"), ("editor", "edit"), ("viewer", "view"), (None, None)]
)
def test_a_private_room_gives_each_role_its_access(role, expected):
    for link_access in ("edit", "view", "none"):
        assert access.room_access(private_room(link_access), role=role) == expected


@pytest.mark.parametrize(
    ("link_access", "edit_link", "view_link"),
    [("edit", "edit", "view"), ("view", "view", "view"), ("none", None, None)],
)
def test_the_link_access_decides_what_each_link_gives(link_access, edit_link, view_link):
    room = private_room(link_access)
    assert access.room_access(room, token=EDIT_TOKEN) == edit_link
    assert access.room_access(room, token=VIEW_TOKEN) == view_link
    for wrong in (None, "", "wrong", EDIT_TOKEN[:-1]):
        assert access.room_access(room, token=wrong) is None


def test_someone_with_a_role_and_a_link_gets_the_better_of_both():
    assert access.room_access(private_room(), role="viewer", token=EDIT_TOKEN) == "edit"
    assert access.room_access(private_room("none"), role="viewer", token=EDIT_TOKEN) == "view"
    assert access.room_access(private_room(), role="editor", token=VIEW_TOKEN) == "edit"
    assert access.room_access(private_room(), role="viewer", token="wrong") == "view"


def test_only_owners_may_manage_sharing():
    assert access.may_manage("owner")
    assert not any(access.may_manage(role) for role in ("editor", "viewer", None))


def test_api_tokens_and_link_tokens_cannot_be_taken_for_each_other():
    assert len(accounts.token_new()) == 43  # link tokens: exactly 43 characters
    assert all(not accounts.is_api_token(accounts.token_new()) for _ in range(200))
    assert not accounts.is_api_token("pat_" + accounts.token_new()[:39])  # 43 long: a link token
    assert accounts.is_api_token("pat_" + accounts.token_new())
