"""Ops mode over the WebSocket (docs/protocol.md sections 5 and 7), through the real ASGI app."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import document, store
from rooms.models import Op, Room
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

create_room = database_sync_to_async(document.room_create)


@pytest.fixture
def room() -> Room:
    return document.room_create(code="hello")


async def connected(room_id: str, query: str = "?mode=ops") -> Client:
    client = Client(f"/ws/{room_id}{query}")
    await client.connect()
    return client


async def room_state(room_id: str) -> tuple[str, int]:
    stored = await Room.objects.aget(id=room_id)
    return await database_sync_to_async(store.room_code)(stored), stored.version


async def test_op_is_acked_with_its_seq_and_sent_to_other_ops_clients(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    ack = await alice.request({"type": "op", "version": 0, "seq": 1, "op": [5, " world"]}, "ack")
    assert ack.items() >= {"type": "ack", "version": 1, "seq": 1}.items()
    assert "duplicate" not in ack
    update = await bob.receive_type("op")
    assert (
        update.items()
        >= {
            "type": "op",
            "version": 1,
            "op": [5, " world"],
            "user": alice.init["user_id"],
            "client": alice.init["user_id"],
            "seq": 1,
        }.items()
    )
    assert await room_state(room.id) == ("hello world", 1)
    await alice.next_is_pong()
    await alice.close()
    await bob.close()


async def test_client_id_from_the_query_is_stamped_on_ops(room):
    alice = await connected(room.id, "?mode=ops&client=alice-laptop")
    bob = await connected(room.id)
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": ["> "]}, "ack")
    update = await bob.receive_type("op")
    assert update["client"] == "alice-laptop" and update["user"] == alice.init["user_id"]
    await alice.close()
    await bob.close()


async def test_text_clients_get_the_full_text_after_an_op(room):
    alice = await connected(room.id)
    reader = await connected(room.id, "?mode=text")
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": [{"d": 1}, "H"]}, "ack")
    update = await reader.receive_type("sync_code")
    assert (
        update.items()
        >= {
            "type": "sync_code",
            "code": "Hello",
            "version": 1,
            "user": alice.init["user_id"],
        }.items()
    )
    await alice.close()
    await reader.close()


async def test_ops_clients_get_a_text_change_as_its_diff_op_with_null_seq(room):
    writer = await connected(room.id, "?mode=text")
    bob = await connected(room.id)
    await writer.request({"type": "sync_code", "code": "help"}, "ack")
    update = await bob.receive_type("op")
    # "hello" -> "help": one region replaced, its delete and insert in either order.
    assert update["op"] in ([3, {"d": 2}, "p"], [3, "p", {"d": 2}]) and update["seq"] is None
    assert update["version"] == 1
    await writer.close()
    await bob.close()


async def test_an_op_on_an_old_base_is_transformed_past_later_changes(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": ["A"]}, "ack")
    ack = await bob.submit({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})
    assert ack["version"] == 2
    update = await alice.receive_type("op")
    assert update["op"] == [6, "!"]  # moved past alice's insert
    assert await room_state(room.id) == ("Ahello!", 2)
    await alice.close()
    await bob.close()


async def test_concurrent_inserts_at_one_position_end_in_reverse_commit_order(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": [5, "1"]}, "ack")
    await bob.submit({"type": "op", "version": 0, "seq": 1, "op": [5, "2"]})
    assert (await room_state(room.id))[0] == "hello21"
    await alice.close()
    await bob.close()


async def test_duplicate_seq_is_acked_without_applying(room):
    alice = await connected(room.id, "?mode=ops&client=alice-client")
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "ack")
    await alice.request({"type": "op", "version": 1, "seq": 2, "op": ["y"]}, "ack")
    again = await alice.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "ack")
    assert again.items() >= {"type": "ack", "version": 1, "seq": 1, "duplicate": True}.items()
    assert await room_state(room.id) == ("yxhello", 2)
    await alice.close()


async def test_duplicate_seq_is_found_after_a_reconnect(room):
    first = await connected(room.id, "?mode=ops&client=alice-client")
    await first.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "ack")
    await first.close()
    document.live_rooms_reset()  # a fresh process knows nothing of earlier seqs
    secret = first.init["client_secret"]
    second = await connected(
        room.id, f"?mode=ops&client=alice-client&client_secret={secret}&version=0"
    )
    again = await second.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "ack")
    assert again["duplicate"] is True and again["version"] == 1
    assert await room_state(room.id) == ("xhello", 1)
    await second.close()


async def test_incoming_ops_are_normalized_before_storing_and_sending(room):
    alice = await connected(room.id)
    bob = await connected(room.id)
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": [1, 1, "a", "b", 3]}, "ack")
    assert (await bob.receive_type("op"))["op"] == [2, "ab"]
    stored = await Op.objects.aget(room_id=room.id, version=1)
    assert stored.op == [2, "ab"]
    await alice.close()
    await bob.close()


@pytest.mark.parametrize(
    ("op", "version"),
    [
        ([{"d": "text"}], 0),
        ([1.0, "x"], 0),
        ([True, "x"], 0),
        ([{"d": 1.5}], 0),
        ([{"d": True}], 0),
        ([6, "x"], 0),
        ([3, {"d": 3}], 0),
        (["x"], 1),
        (["x"], -1),
        (["a\u0000b"], 0),
        (["\ud800"], 0),
        ("not a list", 0),
        (None, 0),
        (5, 0),
        ({"d": 1}, 0),
        ([0, "x"], 0),
        ([""], 0),
        ([{"d": 0}], 0),
        ([{"x": 1}], 0),
        ([{"d": 1, "e": 2}], 0),
        ([None], 0),
        ([[1]], 0),
        ([-1, "x"], 0),
    ],
)
async def test_bad_op_changes_nothing(room, op, version):
    alice = await connected(room.id)
    error = await alice.request({"type": "op", "version": version, "seq": 1, "op": op}, "error")
    assert error["code"] == "bad_op", error
    assert set(error) >= {"type", "code", "message"}
    assert await room_state(room.id) == ("hello", 0)
    ack = await alice.request({"type": "op", "version": 0, "seq": 1, "op": ["ok "]}, "ack")
    assert ack["version"] == 1  # the connection still works, and seq 1 was not consumed
    await alice.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "op", "seq": 1, "op": []},
        {"type": "op", "version": 0, "op": []},
        {"type": "op", "version": 0, "seq": 1},
        {"type": "op", "version": True, "seq": 1, "op": []},
        {"type": "op", "version": 0.0, "seq": 1, "op": []},
        {"type": "op", "version": 0, "seq": "1", "op": []},
        {"type": "op", "version": 0, "seq": False, "op": []},
        {"type": "op", "version": 0, "seq": 0, "op": []},
        {"type": "op", "version": 0, "seq": 2**63, "op": []},
        {"type": "op", "version": 0, "seq": -(2**63), "op": []},
    ],
)
async def test_op_with_missing_or_ill_typed_field_is_bad_message(room, message):
    alice = await connected(room.id)
    error = await alice.request(message, "error")
    assert error["code"] == "bad_message", error
    assert await room_state(room.id) == ("hello", 0)
    await alice.close()


async def test_op_on_a_text_mode_connection_is_bad_message(room):
    alice = await connected(room.id, "?mode=text")
    error = await alice.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "error")
    assert error["code"] == "bad_message"
    assert await room_state(room.id) == ("hello", 0)
    await alice.close()


async def test_null_op_after_a_used_seq_is_bad_op_not_a_duplicate(room):
    alice = await connected(room.id, "?mode=ops&client=alice-client")
    await alice.submit({"type": "op", "version": 0, "seq": 1, "op": ["x"]})
    error = await alice.request({"type": "op", "version": 1, "seq": 1, "op": None}, "error")
    assert error["code"] == "bad_op"
    await alice.close()


async def test_empty_op_is_a_change_that_adds_a_version(room):
    alice = await connected(room.id)
    ack = await alice.request({"type": "op", "version": 0, "seq": 1, "op": []}, "ack")
    assert ack["version"] == 1
    assert await room_state(room.id) == ("hello", 1)
    await alice.close()


async def test_code_points_count_emoji_as_one():
    room = await create_room(code="a😀b")
    alice = await connected(room.id)
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": [2, "x"]}, "ack")
    assert (await room_state(room.id))[0] == "a😀xb"
    await alice.close()


async def test_resume_sends_every_op_after_the_clients_version(room):
    alice = await connected(room.id, "?mode=ops&client=alice-client")
    for seq in (1, 2, 3):
        await alice.request({"type": "op", "version": seq - 1, "seq": seq, "op": [str(seq)]}, "ack")
    await alice.close()
    secret = alice.init["client_secret"]
    again = await connected(
        room.id, f"?mode=ops&client=alice-client&client_secret={secret}&version=1"
    )
    assert again.init["version"] == 3
    assert [(e["version"], e["op"], e["client"], e["seq"]) for e in again.init["ops"]] == [
        (2, ["2"], "alice-client", 2),
        (3, ["3"], "alice-client", 3),
    ]
    await again.close()


async def test_resume_at_head_carries_an_empty_ops_list(room):
    alice = await connected(room.id, "?mode=ops&client=alice-client&version=0")
    assert alice.init["ops"] == []
    await alice.close()


async def test_ops_mode_without_version_has_no_ops_in_init(room):
    alice = await connected(room.id)
    assert "ops" not in alice.init
    await alice.close()


async def test_each_connection_sees_every_version_once_in_order(room):
    clients = [await connected(room.id, f"?mode=ops&client=client-{i:04d}") for i in range(3)]
    for seq in range(1, 6):
        for client in clients:
            await client.send({"type": "op", "version": 0, "seq": seq, "op": [f"<{seq}>"]})
    for client in clients:
        version, acks = client.init["version"], 0
        while version < 15:
            message = await client.receive_type("op", "ack")
            assert message["version"] == version + 1  # every version once, in order
            version = message["version"]
            acks += message["type"] == "ack"
        assert acks == 5
    code, version = await room_state(room.id)
    assert version == 15 and len(code) == len("hello") + 15 * 3
    for client in clients:
        await client.close()
