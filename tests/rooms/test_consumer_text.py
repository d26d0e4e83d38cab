"""Text mode over the WebSocket (docs/protocol.md sections 4 to 6), through the real ASGI app."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import document, store
from rooms.models import Op, Room
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room() -> Room:
    return document.room_create(code="print('hi')\n", name="demo")


create_room = database_sync_to_async(document.room_create)


async def connected(room_id: str, query: str = "") -> Client:
    client = Client(f"/ws/{room_id}{query}")
    await client.connect()
    return client


async def test_init_describes_room_and_new_user(room):
    alice = await connected(room.id, "?name=alice")
    init = alice.init
    assert init["room_id"] == room.id
    assert init["name"] == "alice"
    assert init["code"] == "print('hi')\n"
    assert init["version"] == 0
    assert init["cursors"] == []
    assert [u["id"] for u in init["users"]] == [init["user_id"]]
    assert init["users"][0]["name"] == "alice"
    assert init["users"][0]["color"].startswith("#") and len(init["users"][0]["color"]) == 7
    await alice.close()


async def test_trailing_slash_path_connects(room):
    client = Client(f"/ws/{room.id}/")
    init = await client.connect()
    assert init["room_id"] == room.id
    await client.close()


@pytest.mark.parametrize("room_id", ["does-not-exist", "bad%20id", "a" * 65, "white space"])
async def test_unknown_or_malformed_room_is_accepted_then_closed_4404(room_id):
    client = Client(f"/ws/{room_id}")
    connected_ok, _ = await client.communicator.connect(timeout=3)
    assert connected_ok
    assert await client.closed_with() == 4404


@pytest.mark.parametrize(
    "query",
    [
        "?mode=bad",
        "?mode=",
        "?name=",
        "?name=" + "n" * 65,
        "?client=short",
        "?client=has%20space1",
        "?version=",
        "?version=-1",
        "?version=1.5",
        "?version=99",
    ],
)
async def test_invalid_query_parameters_get_bad_message_then_close_4400(room, query):
    client = Client(f"/ws/{room.id}{query}")
    connected_ok, _ = await client.communicator.connect(timeout=3)
    assert connected_ok
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == "bad_message"
    assert await client.closed_with() == 4400


async def test_others_get_join_when_a_user_connects(room):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    joined = await alice.receive_type("join")
    assert joined["user"]["id"] == bob.init["user_id"]
    assert joined["user"]["name"] == "bob"
    assert {u["id"] for u in joined["users"]} == {alice.init["user_id"], bob.init["user_id"]}
    await bob.next_is_pong()  # the newcomer does not hear about itself
    await alice.close()
    await bob.close()


async def test_join_message_renames_and_tells_everyone_else(room):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    await alice.receive_type("join")
    await bob.send({"type": "join", "name": "robert"})
    renamed = await alice.receive_type("join")
    assert renamed["user"].items() >= {"id": bob.init["user_id"], "name": "robert"}.items()
    assert "robert" in {u["name"] for u in renamed["users"]}
    await bob.next_is_pong()
    await alice.close()
    await bob.close()


async def test_join_without_name_is_bad_message(room):
    alice = await connected(room.id)
    error = await alice.request({"type": "join"}, "error")
    assert error["code"] == "bad_message"
    await alice.close()


async def test_sync_code_is_acked_and_broadcast_to_others(room):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    ack = await alice.request({"type": "sync_code", "code": "x = 1\n"}, "ack")
    assert ack.items() >= {"type": "ack", "version": 1}.items()
    update = await bob.receive_type("sync_code")
    assert (
        update.items()
        >= {
            "type": "sync_code",
            "code": "x = 1\n",
            "version": 1,
            "user": alice.init["user_id"],
        }.items()
    )
    await alice.next_is_pong()  # the sender gets no echo of its own change
    await alice.close()
    await bob.close()


async def test_acked_change_is_in_the_database(room):
    alice = await connected(room.id)
    await alice.request({"type": "sync_code", "code": "saved"}, "ack")
    stored = await Room.objects.aget(id=room.id)
    assert (await database_sync_to_async(store.room_code)(stored), stored.version) == (
        "saved",
        1,
    )
    op = await Op.objects.aget(room_id=room.id)
    assert op.version == 1 and op.seq is None and op.client == alice.init["user_id"]
    # One region replaced; the protocol leaves the order of its delete and insert open.
    assert op.op in ([{"d": 12}, "saved"], ["saved", {"d": 12}])
    await alice.close()


async def test_every_change_adds_one_version_even_a_no_op(room):
    alice = await connected(room.id)
    first = await alice.request({"type": "sync_code", "code": room.code}, "ack")
    second = await alice.request({"type": "sync_code", "code": room.code}, "ack")
    assert (first["version"], second["version"]) == (1, 2)
    await alice.close()


async def test_sync_code_on_an_old_version_is_merged_and_ack_carries_the_merge():
    room = await create_room(code="hello world")
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.request({"type": "sync_code", "code": "hello brave world", "version": 0}, "ack")
    await bob.send({"type": "sync_code", "code": "hello world!", "version": 0})
    earlier = await bob.receive_type("sync_code")
    assert earlier["version"] == 1 and earlier["code"] == "hello brave world"
    ack = await bob.receive_type("ack")
    assert ack.items() >= {"type": "ack", "version": 2, "code": "hello brave world!"}.items()
    update = await alice.receive_type("sync_code")
    assert update["code"] == "hello brave world!" and update["version"] == 2
    await alice.close()
    await bob.close()


async def test_broadcasts_before_an_ack_arrive_in_version_order(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    for i in range(5):
        await alice.request({"type": "sync_code", "code": f"v{i}"}, "ack")
    await bob.send({"type": "sync_code", "code": "bob"})
    versions = []
    while True:
        message = await bob.receive_type("sync_code", "ack")
        versions.append(message["version"])
        if message["type"] == "ack":
            break
    assert versions == [1, 2, 3, 4, 5, 6]
    await alice.close()
    await bob.close()


async def test_sync_code_version_outside_history_is_bad_op(room):
    alice = await connected(room.id)
    for version in (5, -1):
        error = await alice.request({"type": "sync_code", "code": "x", "version": version}, "error")
        assert error["code"] == "bad_op"
    assert (await Room.objects.aget(id=room.id)).version == 0
    await alice.close()


async def test_ping_gets_pong(room):
    alice = await connected(room.id)
    assert (await alice.request({"type": "ping"}, "pong"))["type"] == "pong"
    await alice.close()


async def test_leave_message_closes_with_1000_and_others_get_leave(room):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    await alice.receive_type("join")
    await bob.send({"type": "leave"})
    assert await bob.closed_with() == 1000
    await bob.close()
    left = await alice.receive_type("leave")
    assert left["user"]["id"] == bob.init["user_id"] and left["user"]["name"] == "bob"
    assert [u["id"] for u in left["users"]] == [alice.init["user_id"]]
    await alice.close()


async def test_disconnect_without_leave_tells_others(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.receive_type("join")
    await bob.close()
    left = await alice.receive_type("leave")
    assert left["user"]["id"] == bob.init["user_id"]
    await alice.close()
