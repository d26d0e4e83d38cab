"""Accounts on the WebSocket (docs/protocol.md, "Accounts and sharing"): the session cookie says
who connects, access comes from the role or the link, presence shows the account's name, and
changes of access reach open connections at once: `access` messages, or `forbidden` and 4403.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from tests.rooms.support_accounts import Browser, user_new
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

OP = {"type": "op", "version": 0, "seq": 1, "op": ["x"]}


@sync_to_async
def browser(username: str) -> Browser:
    return Browser(user_new(username))


@sync_to_async
def call(who: Browser, method: str, path: str, body=None):
    return who.call(method, path, body)


async def connect(room_id: str, who: Browser | None = None, query: str = "mode=ops") -> Client:
    headers = [(b"cookie", f"sessionid={who.session_cookie}".encode())] if who else []
    client = Client(f"/ws/{room_id}?{query}", headers=headers)
    await client.connect()
    return client


@pytest.fixture
async def team():
    """alice owns a private room; bob and carol have accounts."""
    alice, bob, carol = await browser("alice"), await browser("bob"), await browser("carol")
    room = (await call(alice, "POST", "/rooms", {"private": True, "code": "hi"})).json()
    return alice, bob, carol, room


async def set_role(owner: Browser, room: dict, username: str, role: str | None) -> None:
    base = f"/rooms/{room['room_id']}/members"
    if role is None:
        response = await call(owner, "DELETE", f"{base}/{username}")
    else:
        response = await call(owner, "PATCH", f"{base}/{username}", {"role": role})
    assert response.status_code in (200, 204), response.content


async def invite(owner: Browser, room: dict, username: str, role: str) -> None:
    body = {"user": username, "role": role}
    response = await call(owner, "POST", f"/rooms/{room['room_id']}/members", body)
    assert response.status_code == 201, response.content


async def test_a_member_connects_by_session_with_the_access_of_their_role(team):
    alice, bob, carol, room = team
    await invite(alice, room, "bob", "viewer")
    await invite(alice, room, "carol", "editor")
    viewer = await connect(room["room_id"], bob)
    editor = await connect(room["room_id"], carol)
    owner = await connect(room["room_id"], alice)
    assert (viewer.init["access"], editor.init["access"], owner.init["access"]) == (
        "view",
        "edit",
        "edit",
    )
    assert (await viewer.submit(OP))["code"] == "forbidden"
    assert (await editor.submit(OP))["type"] == "ack"
    for client in (viewer, editor, owner):
        await client.close()


async def test_without_a_session_or_a_token_a_private_room_is_closed_4403(team):
    _alice, bob, _, room = team
    for who in (None, bob):  # nobody, and an account without a role
        client = Client(
            f"/ws/{room['room_id']}",
            headers=[(b"cookie", f"sessionid={who.session_cookie}".encode())] if who else [],
        )
        connected, _ = await client.communicator.connect(timeout=3)
        assert connected
        assert await client.closed_with() == 4403
    stale = Client(f"/ws/{room['room_id']}", headers=[(b"cookie", b"sessionid=not-a-session")])
    await stale.communicator.connect(timeout=3)
    assert await stale.closed_with() == 4403


async def test_presence_shows_the_accounts_name_whatever_the_client_asks(team):
    alice, _, _, room = team
    guest = await connect(room["room_id"], query=f"token={room['token']}&name=guest")
    owner = await connect(room["room_id"], alice, query="name=impostor")
    assert owner.init["name"] == "alice"
    joined = await guest.receive_type("join")
    assert joined["user"]["name"] == "alice"
    await owner.send({"type": "join", "name": "someone else"})
    await owner.next_is_pong()  # the join is handled
    await guest.send({"type": "ping"})
    assert await guest.receive() == {"type": "pong"}  # and no join broadcast came of it
    assert await call(alice, "GET", f"/rooms/{room['room_id']}") and sorted(
        user["name"]
        for user in (await call(alice, "GET", f"/rooms/{room['room_id']}")).json()["users"]
    ) == ["alice", "guest"]
    await owner.close()
    assert (await guest.receive_type("leave"))["user"]["name"] == "alice"
    await guest.close()


async def test_a_promotion_reaches_the_open_connection_which_may_then_edit(team):
    alice, bob, _, room = team
    await invite(alice, room, "bob", "viewer")
    viewer = await connect(room["room_id"], bob)
    assert (await viewer.submit(OP))["code"] == "forbidden"
    await set_role(alice, room, "bob", "editor")
    assert await viewer.receive_type("access") == {"type": "access", "access": "edit"}
    assert (await viewer.submit(OP))["type"] == "ack"
    await set_role(alice, room, "bob", "viewer")
    assert await viewer.receive_type("access") == {"type": "access", "access": "view"}
    assert (await viewer.submit({**OP, "version": 1, "seq": 2}))["code"] == "forbidden"
    await viewer.close()


async def test_a_removed_member_is_told_and_disconnected_with_4403(team):
    alice, bob, _, room = team
    await invite(alice, room, "bob", "editor")
    member = await connect(room["room_id"], bob)
    watcher = await connect(room["room_id"], alice)
    await set_role(alice, room, "bob", None)
    error = await member.receive_type("error")
    assert error["code"] == "forbidden" and "removed" in error["message"]
    assert await member.closed_with() == 4403
    await member.close()  # the transport's disconnect, which a real server sends by itself
    assert (await watcher.receive_type("leave"))["user"]["name"] == "bob"
    refused = Client(
        f"/ws/{room['room_id']}", headers=[(b"cookie", f"sessionid={bob.session_cookie}".encode())]
    )
    await refused.communicator.connect(timeout=3)
    assert await refused.closed_with() == 4403
    await watcher.close()


async def test_link_access_changes_reach_connections_opened_by_a_link(team):
    alice, bob, _, room = team
    await invite(alice, room, "bob", "viewer")
    by_link = await connect(room["room_id"], query=f"mode=ops&token={room['token']}")
    member_with_link = await connect(room["room_id"], bob, query=f"mode=ops&token={room['token']}")
    assert by_link.init["access"] == member_with_link.init["access"] == "edit"
    await call(alice, "PUT", f"/rooms/{room['room_id']}/link", {"access": "view"})
    assert await by_link.receive_type("access") == {"type": "access", "access": "view"}
    assert await member_with_link.receive_type("access") == {"type": "access", "access": "view"}
    await call(alice, "PUT", f"/rooms/{room['room_id']}/link", {"access": "none"})
    assert (await by_link.receive_type("error"))["code"] == "forbidden"
    assert await by_link.closed_with() == 4403
    await member_with_link.next_is_pong()  # still in, as a viewer by role
    await call(alice, "PUT", f"/rooms/{room['room_id']}/link", {"access": "edit"})
    assert await member_with_link.receive_type("access") == {"type": "access", "access": "edit"}
    await member_with_link.close()


async def test_a_new_link_disconnects_the_old_links_connections_but_not_the_members(team):
    alice, bob, _, room = team
    await invite(alice, room, "bob", "editor")
    edit_link = await connect(room["room_id"], query=f"token={room['token']}")
    view_link = await connect(room["room_id"], query=f"token={room['view_token']}")
    member = await connect(room["room_id"], bob, query=f"token={room['view_token']}")
    fresh = (await call(alice, "POST", f"/rooms/{room['room_id']}/link/rotate")).json()
    for old in (edit_link, view_link):
        assert (await old.receive_type("error"))["code"] == "forbidden"
        assert await old.closed_with() == 4403
    await member.next_is_pong()
    again = Client(f"/ws/{room['room_id']}?token={room['token']}")
    await again.communicator.connect(timeout=3)
    assert await again.closed_with() == 4403
    new = await connect(room["room_id"], query=f"token={fresh['view_token']}")
    assert new.init["access"] == "view"
    await new.close()
    await member.close()


async def test_a_public_room_is_unchanged_for_signed_in_users(team):
    alice, bob, _, _ = team
    room = (await call(alice, "POST", "/rooms", {})).json()
    anonymous = await connect(room["room_id"], query="name=anon")
    signed_in = await connect(room["room_id"], bob)
    assert anonymous.init["access"] == signed_in.init["access"] == "edit"
    assert anonymous.init["name"] == "anon" and signed_in.init["name"] == "bob"
    await anonymous.close()
    await signed_in.close()
