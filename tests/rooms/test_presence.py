"""Presence (docs/protocol.md section 8): cursors, typing, colours and who is here."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import document, presence
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

create_room = database_sync_to_async(document.room_create)


@pytest.fixture
def room():
    return document.room_create(code="hello world")


def cursor_fields(cursor: dict) -> tuple[str, int, int, int]:
    return cursor["user"], cursor["anchor"], cursor["head"], cursor["version"]


async def connected(room_id: str, query: str = "?mode=ops") -> Client:
    client = Client(f"/ws/{room_id}{query}")
    await client.connect()
    return client


async def test_cursor_reaches_others_stamped_with_the_senders_user(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.send({"type": "cursor", "anchor": 2, "head": 5})
    cursor = await bob.receive_type("cursor")
    assert (
        cursor.items()
        >= {
            "type": "cursor",
            "user": alice.init["user_id"],
            "anchor": 2,
            "head": 5,
            "version": 0,
        }.items()
    )
    await alice.next_is_pong()  # no echo to the sender
    await alice.close()
    await bob.close()


async def test_a_cursor_sent_right_before_leaving_still_reaches_the_others(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.send({"type": "cursor", "anchor": 2, "head": 3})
    await alice.close()  # at once: the cursor and the disconnect wait in the queue together
    seen = [(await bob.receive_type("cursor", "leave"))["type"] for _ in range(2)]
    assert seen == ["cursor", "leave"]
    await bob.close()


async def test_cursor_on_an_old_version_is_moved_to_the_head(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await bob.submit({"type": "op", "version": 0, "seq": 1, "op": ["¡"]})
    await alice.receive_type("op")
    await bob.send({"type": "cursor", "anchor": 5, "head": 5, "version": 0})
    cursor = await alice.receive_type("cursor")
    assert (cursor["anchor"], cursor["head"], cursor["version"]) == (6, 6, 1)
    await alice.close()
    await bob.close()


async def test_an_insert_at_a_cursor_leaves_it_in_place_for_late_joiners(room):
    alice = await connected(room.id)
    await alice.send({"type": "cursor", "anchor": 5, "head": 5})
    await alice.next_is_pong()
    await alice.submit({"type": "op", "version": 0, "seq": 1, "op": [5, "!!"]})
    await alice.submit({"type": "op", "version": 1, "seq": 2, "op": ["> "]})
    late = await connected(room.id)
    assert [cursor_fields(c) for c in late.init["cursors"]] == [(alice.init["user_id"], 7, 7, 2)]
    await alice.close()
    await late.close()


async def test_cursor_inside_a_deleted_range_moves_to_its_start(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.send({"type": "cursor", "anchor": 8, "head": 9})
    await bob.receive_type("cursor")
    await bob.submit({"type": "op", "version": 0, "seq": 1, "op": [6, {"d": 5}]})
    late = await connected(room.id)
    assert [cursor_fields(c) for c in late.init["cursors"]] == [(alice.init["user_id"], 6, 6, 1)]
    await alice.close()
    await bob.close()
    await late.close()


async def test_init_cursors_hold_connected_users_only(room):
    alice = await connected(room.id)
    await alice.send({"type": "cursor", "anchor": 1, "head": 1})
    await alice.next_is_pong()
    await alice.close()
    late = await connected(room.id)
    assert late.init["cursors"] == []
    await late.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "cursor", "anchor": 12, "head": 0},
        {"type": "cursor", "anchor": 0, "head": -1},
        {"type": "cursor", "anchor": 0, "head": 0, "version": 1},
        {"type": "cursor", "anchor": 0, "head": 0, "version": -1},
        {"type": "cursor", "anchor": True, "head": 0},
        {"type": "cursor", "anchor": 1.0, "head": 0},
        {"type": "cursor", "head": 0},
        {"type": "cursor", "anchor": 0},
    ],
)
async def test_bad_cursor_is_bad_message_and_not_broadcast(room, message):
    alice = await connected(room.id)
    bob = await connected(room.id)
    error = await alice.request(message, "error")
    assert error["code"] == "bad_message"
    await bob.next_is_pong()
    await alice.close()
    await bob.close()


async def test_fast_cursor_moves_are_coalesced_to_the_latest(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    for position in range(11):
        await alice.send({"type": "cursor", "anchor": position, "head": position})
    seen = []
    while not seen or seen[-1] != 10:
        seen.append((await bob.receive_type("cursor"))["anchor"])
    assert seen[-1] == 10 and len(seen) < 11
    await alice.close()
    await bob.close()


async def test_typing_is_told_to_others_once_per_change(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.send({"type": "typing", "typing": True})
    await alice.send({"type": "typing", "typing": True})
    typing = await bob.receive_type("typing")
    assert typing.items() >= {"user": alice.init["user_id"], "typing": True}.items()
    await alice.send({"type": "typing", "typing": False})
    assert (await bob.receive_type("typing"))["typing"] is False
    await bob.next_is_pong()
    await alice.close()
    await bob.close()


async def test_typing_expires_without_an_edit(room, monkeypatch):
    monkeypatch.setattr(presence, "TYPING_TTL_S", 0.05)
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.send({"type": "typing", "typing": True})
    assert (await bob.receive_type("typing"))["typing"] is True
    assert (await bob.receive_type("typing"))["typing"] is False
    await alice.close()
    await bob.close()


async def test_leaving_ends_typing(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.send({"type": "typing", "typing": True})
    assert (await bob.receive_type("typing"))["typing"] is True
    await alice.close()
    stopped = await bob.receive()
    assert (
        stopped.items()
        >= {"type": "typing", "user": alice.init["user_id"], "typing": False}.items()
    )
    assert (await bob.receive_type("leave"))["user"]["id"] == alice.init["user_id"]
    await bob.close()


async def test_typing_must_be_a_boolean(room):
    alice = await connected(room.id)
    error = await alice.request({"type": "typing", "typing": "yes"}, "error")
    assert error["code"] == "bad_message"
    await alice.close()


async def test_colour_is_stable_per_client_id_across_reconnects(room):
    first = await connected(room.id, "?client=stable-client-1")
    colour = first.init["users"][0]["color"]
    await first.close()
    again = await connected(
        room.id, f"?client=stable-client-1&client_secret={first.init['client_secret']}"
    )
    assert again.init["users"][0]["color"] == colour
    assert colour == presence.color_for("stable-client-1")
    await again.close()


async def test_users_list_is_every_connected_user(room, async_client):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    body = (await async_client.get(f"/rooms/{room.id}")).json()
    assert sorted(u["name"] for u in body["users"]) == ["alice", "bob"]
    await alice.close()
    await bob.close()


async def test_presence_entries_expire_when_no_heartbeat_confirms_them(room, monkeypatch):
    """An entry whose connection stopped being seen (its process died) is removed."""
    alice = await connected(room.id, "?name=alice")
    # "ghost" was registered by a process that has since died: nobody heartbeats it.
    await presence.presence.enter(room.id, user_id="ghost", name="ghost", color="#000000")
    later = presence.time.time() + presence.PRESENCE_TTL_S + 1

    class Clock:
        @staticmethod
        def time() -> float:
            return later

    monkeypatch.setattr(presence, "time", Clock)
    await presence.presence.heartbeat(presence.keeper.local)  # this process confirms alice
    gone = await presence.presence.expired([room.id])
    assert [user["id"] for _, user, _ in gone] == ["ghost"]
    assert [u["id"] for u in await presence.presence.users(room.id)] == [alice.init["user_id"]]
    await alice.close()
