"""Presence as rooms grow and connect at once (docs/protocol.md section 8): a join reaches only
those who were in the room before the joiner; above COLLAB_PRESENCE_FULL_LIST_MAX users the room
hears `presence` deltas instead of whole lists; a room takes at most
COLLAB_ROOM_MAX_CONNECTIONS connections (close 4429)."""

from __future__ import annotations

import asyncio

import pytest

from rooms import document, presence
from rooms.protocol import CLOSE_ROOM_FULL
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

# Enough tries for two connections opened together to interleave badly: before the fix about
# one pair in three got a join for the other one listed in its init.
RACE_TRIES = 30


@pytest.fixture
def room():
    return document.room_create(code="")


async def connected(room_id: str, name: str) -> Client:
    client = Client(f"/ws/{room_id}?mode=ops&name={name}")
    await client.connect()
    return client


async def until_pong(client: Client) -> list[dict]:
    """Everything the server queued for `client` before it answers a ping (it answers one
    connection's messages in order)."""
    await client.send({"type": "ping"})
    received = []
    while (message := await client.receive())["type"] != "pong":
        received.append(message)
    return received


def ids(users: list[dict]) -> set[str]:
    return {user["id"] for user in users}


async def test_connections_opened_at_once_never_hear_of_a_user_listed_in_their_init(room):
    first = await connected(room.id, "first")
    for attempt in range(RACE_TRIES):
        pair = [Client(f"/ws/{room.id}?mode=ops&name=p{attempt}{n}") for n in (0, 1)]
        await asyncio.gather(*(client.connect() for client in pair))
        # Everything about the pair has reached the first user once it heard both joins.
        for client in pair:
            listed = ids(client.init["users"])
            for message in await until_pong(client):
                assert message["type"] == "join", message
                assert message["user"]["id"] not in listed, (
                    f"attempt {attempt}: a join for {message['user']['name']}, already in this "
                    f"connection's init.users"
                )
                listed.add(message["user"]["id"])
            # Each one knows the other exactly once: from its init or from one join.
            assert ids(pair[0].init["users"]) | ids(pair[1].init["users"]) <= listed
        for client in pair:
            await client.close()
        await until_pong(first)
    await first.close()


async def test_a_rename_reaches_the_room_but_not_a_newcomer_who_was_listed_with_the_new_name(
    room,
):
    alice = await connected(room.id, "alice")
    await alice.send({"type": "join", "name": "alicia"})
    await alice.next_is_pong()
    bob = await connected(room.id, "bob")
    assert "alicia" in {user["name"] for user in bob.init["users"]}
    assert await until_pong(bob) == []
    await alice.close()
    await bob.close()


async def test_a_small_room_keeps_whole_lists_in_join_and_leave(room, settings):
    settings.COLLAB_PRESENCE_FULL_LIST_MAX = 3
    alice = await connected(room.id, "alice")
    bob = await connected(room.id, "bob")
    carol = await connected(room.id, "carol")
    for client, others in ((alice, 2), (bob, 1)):
        joins = await until_pong(client)
        assert [m["type"] for m in joins] == ["join"] * others
        assert ids(joins[-1]["users"]) == ids(carol.init["users"])
    await carol.close()
    leave = await alice.receive_type("leave")
    assert ids(leave["users"]) == {alice.init["user_id"], bob.init["user_id"]}
    await alice.close()
    await bob.close()


async def test_above_the_full_list_size_the_room_hears_deltas(room, settings):
    settings.COLLAB_PRESENCE_FULL_LIST_MAX = 2
    alice = await connected(room.id, "alice")
    bob = await connected(room.id, "bob")
    await until_pong(alice)  # bob's join, with the whole list: the room has two users
    carol = await connected(room.id, "carol")
    assert len(carol.init["users"]) == 3  # init always lists everyone
    delta = await alice.receive_type("presence")
    (carol_entry,) = [u for u in carol.init["users"] if u["id"] == carol.init["user_id"]]
    assert delta == {"type": "presence", "joined": [carol_entry], "left": [], "count": 3}
    assert (await bob.receive_type("presence"))["joined"] == delta["joined"]
    await carol.send({"type": "join", "name": "caroline"})
    renamed = await alice.receive_type("presence")
    assert [user["name"] for user in renamed["joined"]] == ["caroline"]
    assert await until_pong(carol) == []  # nobody hears of themselves
    dave = await connected(room.id, "dave")
    await alice.receive_type("presence")
    await dave.close()
    left = await alice.receive_type("presence")
    assert (left["joined"], ids(left["left"]), left["count"]) == ([], {dave.init["user_id"]}, 3)
    # Back at the full-list size: whole lists again.
    await carol.close()
    leave = await alice.receive_type("leave")
    assert ids(leave["users"]) == {alice.init["user_id"], bob.init["user_id"]}
    await alice.close()
    await bob.close()


async def test_a_burst_of_arrivals_reaches_the_room_as_few_deltas_listing_each_once(room, settings):
    settings.COLLAB_PRESENCE_FULL_LIST_MAX = 1
    watcher = await connected(room.id, "watcher")
    arrivals = [Client(f"/ws/{room.id}?mode=ops&name=n{n}") for n in range(12)]
    await asyncio.gather(*(client.connect() for client in arrivals))
    heard: list[str] = []
    async with asyncio.timeout(5):
        while len(heard) < len(arrivals):
            delta = await watcher.receive_type("presence")
            assert delta["left"] == []
            heard += [user["id"] for user in delta["joined"]]
    assert sorted(heard) == sorted(client.init["user_id"] for client in arrivals)
    for client in arrivals:
        await client.close()
    await watcher.close()


async def test_a_full_room_refuses_the_next_connection_with_4429(room, settings):
    settings.COLLAB_ROOM_MAX_CONNECTIONS = 2
    alice = await connected(room.id, "alice")
    bob = await connected(room.id, "bob")
    refused = Client(f"/ws/{room.id}?mode=ops&name=carol")
    connected_, _ = await refused.communicator.connect(timeout=3)
    assert connected_
    error = await refused.receive()
    assert (error["type"], error["code"]) == ("error", "room_full")
    assert await refused.closed_with() == CLOSE_ROOM_FULL
    assert ids(await presence.presence.users(room.id)) == {
        alice.init["user_id"],
        bob.init["user_id"],
    }
    # The room heard of bob, never of the refused connection.
    assert [m["user"]["name"] for m in await until_pong(alice)] == ["bob"]
    await bob.close()
    carol = await connected(room.id, "carol")
    assert len(carol.init["users"]) == 2
    await alice.close()
    await carol.close()
