"""Bad input over the WebSocket in text mode, through the ASGI app (docs/protocol.md, sections
2 and 11).

Every bad input gets one `{"type": "error", "code", "message"}`, changes nothing, and leaves the
connection usable; another client in the room is unaffected.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async

from rooms import document, limits, store
from rooms.limits import TokenBucket
from rooms.models import Op, Room
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

MAX_BYTES = 1_048_576
MAX_CODE_POINTS = 1_048_576
INITIAL_CODE = "print('hi')\n"

create_room = database_sync_to_async(document.room_create)


@pytest.fixture
def room() -> Room:
    return document.room_create(code=INITIAL_CODE, name="demo")


async def connected(room_id: str, query: str = "") -> Client:
    client = Client(f"/ws/{room_id}{query}")
    await client.connect()
    return client


async def stored(room_id: str) -> tuple[str, int, int]:
    row = await Room.objects.aget(id=room_id)
    code = await database_sync_to_async(store.room_code)(row)
    return code, row.version, await Op.objects.filter(room_id=room_id).acount()


def assert_error(message: dict, code: str) -> None:
    assert set(message) >= {"type", "code", "message"}, message
    assert message["type"] == "error"
    assert message["code"] == code, message
    assert isinstance(message["message"], str) and message["message"]


def frame_of_bytes(size: int, *, filler: str = "é") -> str:
    """A ping whose UTF-8 encoding is exactly `size` bytes, padded with multi-byte characters."""
    head, tail = '{"type":"ping","pad":"', '"}'
    room_left = size - len((head + tail).encode())
    width = len(filler.encode())
    pad = filler * (room_left // width) + "a" * (room_left % width)
    frame = head + pad + tail
    assert len(frame.encode()) == size
    return frame


async def assert_harmless(room: Room, send_bad, code: str) -> None:
    """Alice sends something bad; Bob is in the room. Check the whole promise of section 11."""
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    await alice.receive_type("join")
    before = await stored(room.id)

    await send_bad(alice)
    assert_error(await alice.receive_type("error"), code)
    assert await stored(room.id) == before
    await alice.next_is_pong()  # exactly one error, and the connection still answers
    await bob.next_is_pong()  # Bob heard nothing about it

    ack = await alice.request({"type": "sync_code", "code": "after = 1\n"}, "ack")
    assert ack.items() >= {"type": "ack", "version": before[1] + 1}.items()
    update = await bob.receive_type("sync_code")
    assert (
        update.items()
        >= {
            "type": "sync_code",
            "code": "after = 1\n",
            "version": before[1] + 1,
            "user": alice.init["user_id"],
        }.items()
    )
    await alice.close()
    await bob.close()


def raw_text(text: str):
    # The ASGI event daphne produces for a text frame (the communicator refuses empty frames).
    async def send(client: Client) -> None:
        await client.communicator.send_input({"type": "websocket.receive", "text": text})

    return send


def raw_bytes(data: bytes):
    async def send(client: Client) -> None:
        await client.communicator.send_input({"type": "websocket.receive", "bytes": data})

    return send


# -- bad_json -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{", id="truncated"),
        pytest.param("", id="empty-frame"),
        pytest.param("   ", id="whitespace-only"),
        pytest.param("{'type': 'ping'}", id="single-quotes"),
        pytest.param('{"type": "ping",}', id="trailing-comma"),
        pytest.param("ping", id="bare-word"),
        pytest.param('{"type":"ping","x":NaN}', id="nan"),
        pytest.param('{"type":"ping","x":Infinity}', id="infinity"),
        pytest.param('{"type":"ping","x":-Infinity}', id="minus-infinity"),
        pytest.param('{"type":"sync_code","code":"x","version":NaN}', id="nan-version"),
        pytest.param('{"type":"ping"} {"type":"ping"}', id="two-documents"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested-array"),
        pytest.param('{"type":"ping","x":' + "[" * 5_000 + "]" * 5_000 + "}", id="deep-field"),
    ],
)
async def test_unparseable_text_frame_is_bad_json(room, text):
    await assert_harmless(room, raw_text(text), "bad_json")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"type":"ping"}', id="valid-json-as-binary"),
        pytest.param(b'{"type":"sync_code","code":"hacked"}', id="sync-code-as-binary"),
        pytest.param(b"\x00\xff\x10", id="garbage"),
        pytest.param(b"", id="empty-binary"),
    ],
)
async def test_binary_frame_is_bad_json(room, data):
    await assert_harmless(room, raw_bytes(data), "bad_json")


# -- bad_message ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[]", id="array"),
        pytest.param('[{"type":"ping"}]', id="array-of-message"),
        pytest.param('"ping"', id="string"),
        pytest.param("42", id="number"),
        pytest.param("null", id="null"),
        pytest.param("true", id="bool"),
        pytest.param("{}", id="no-type"),
        pytest.param('{"kind":"ping"}', id="no-type-key"),
        pytest.param('{"type":1}', id="type-number"),
        pytest.param('{"type":null}', id="type-null"),
        pytest.param('{"type":true}', id="type-bool"),
        pytest.param('{"type":["ping"]}', id="type-array"),
        pytest.param('{"type":{"name":"ping"}}', id="type-object"),
    ],
)
async def test_frame_that_is_not_an_object_with_a_string_type_is_bad_message(room, text):
    await assert_harmless(room, raw_text(text), "bad_message")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"type":"sync_code"}', id="no-code"),
        pytest.param('{"type":"sync_code","code":1}', id="code-number"),
        pytest.param('{"type":"sync_code","code":null}', id="code-null"),
        pytest.param('{"type":"sync_code","code":["x"]}', id="code-array"),
        pytest.param('{"type":"sync_code","code":{"text":"x"}}', id="code-object"),
        pytest.param('{"type":"sync_code","code":"a\\u0000b"}', id="code-nul"),
        pytest.param('{"type":"sync_code","code":"a\\ud800b"}', id="code-lone-high-surrogate"),
        pytest.param('{"type":"sync_code","code":"a\\udc00b"}', id="code-lone-low-surrogate"),
        pytest.param('{"type":"sync_code","code":"\\ude00\\ud83d"}', id="code-reversed-pair"),
        pytest.param('{"type":"sync_code","code":"x","version":true}', id="version-true"),
        pytest.param('{"type":"sync_code","code":"x","version":false}', id="version-false"),
        pytest.param('{"type":"sync_code","code":"x","version":0.0}', id="version-float"),
        pytest.param('{"type":"sync_code","code":"x","version":1.5}', id="version-fraction"),
        pytest.param('{"type":"sync_code","code":"x","version":"0"}', id="version-string"),
        pytest.param('{"type":"sync_code","code":"x","version":[0]}', id="version-array"),
    ],
)
async def test_ill_typed_sync_code_is_bad_message(room, text):
    await assert_harmless(room, raw_text(text), "bad_message")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"type":"join","name":""}', id="empty"),
        pytest.param('{"type":"join","name":"' + "n" * 65 + '"}', id="65-chars"),
        pytest.param('{"type":"join","name":"' + "😀" * 65 + '"}', id="65-code-points"),
        pytest.param('{"type":"join","name":7}', id="number"),
        pytest.param('{"type":"join","name":null}', id="null"),
        pytest.param('{"type":"join","name":["alice"]}', id="array"),
        pytest.param('{"type":"join","name":"a\\u0000"}', id="nul"),
        pytest.param('{"type":"join","name":"a\\ud800"}', id="lone-surrogate"),
    ],
)
async def test_join_with_a_bad_name_is_bad_message(room, text):
    await assert_harmless(room, raw_text(text), "bad_message")


async def test_join_with_a_bad_name_keeps_the_old_name(room):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    await alice.receive_type("join")
    await bob.send({"type": "join", "name": "n" * 65})
    assert_error(await bob.receive_type("error"), "bad_message")
    await alice.next_is_pong()  # no join broadcast for a refused rename
    carol = await connected(room.id)
    assert {u["name"] for u in carol.init["users"]} >= {"alice", "bob"}
    await alice.close()
    await bob.close()
    await carol.close()


async def test_join_name_of_exactly_64_code_points_is_accepted(room):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    await alice.receive_type("join")
    await bob.send({"type": "join", "name": "😀" * 64})
    renamed = await alice.receive_type("join")
    assert renamed["user"]["name"] == "😀" * 64
    await bob.next_is_pong()
    await alice.close()
    await bob.close()


async def test_op_on_a_text_mode_connection_is_bad_message(room):
    await assert_harmless(
        room,
        raw_text('{"type":"op","version":0,"seq":1,"op":[{"d":3}]}'),
        "bad_message",
    )


async def test_surrogate_pair_escape_is_one_valid_character():
    room = await create_room(code="")
    alice = await connected(room.id)
    await alice.send_raw(text='{"type":"sync_code","code":"a\\ud83d\\ude00b"}')
    assert (await alice.receive_type("ack"))["version"] == 1
    assert await stored(room.id) == ("a😀b", 1, 1)
    await alice.close()


# -- unknown_type ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_type",
    ["init", "ack", "error", "pong", "Ping", "PING", "Sync_Code", "sync_code ", "", "nope"],
)
async def test_any_other_type_is_unknown_type(room, message_type):
    frame = json.dumps({"type": message_type, "code": "hacked", "name": "mallory"})
    await assert_harmless(room, raw_text(frame), "unknown_type")


# -- too_large ------------------------------------------------------------------------------------


async def test_text_frame_of_one_byte_over_a_mebibyte_is_too_large(room):
    frame = frame_of_bytes(MAX_BYTES + 1)
    assert len(frame) < MAX_BYTES  # over the limit in bytes, not in characters
    await assert_harmless(room, raw_text(frame), "too_large")


async def test_text_frame_over_a_mebibyte_in_four_byte_characters_is_too_large(room):
    frame = frame_of_bytes(MAX_BYTES + 1, filler="😀")
    assert len(frame) * 4 < MAX_BYTES + 100
    await assert_harmless(room, raw_text(frame), "too_large")


async def test_oversized_sync_code_frame_is_too_large_and_changes_nothing(room):
    code = "é" * (MAX_BYTES // 2)  # half a million code points, a mebibyte of UTF-8
    frame = json.dumps({"type": "sync_code", "code": code}, ensure_ascii=False)
    assert len(frame.encode()) > MAX_BYTES
    await assert_harmless(room, raw_text(frame), "too_large")


async def test_oversized_frame_is_too_large_before_it_is_parsed(room):
    await assert_harmless(room, raw_text("{" * (MAX_BYTES + 1)), "too_large")


async def test_binary_frame_over_a_mebibyte_is_too_large(room):
    await assert_harmless(room, raw_bytes(b"x" * (MAX_BYTES + 1)), "too_large")


async def test_binary_frame_of_exactly_one_mebibyte_is_bad_json_not_too_large(room):
    await assert_harmless(room, raw_bytes(b"x" * MAX_BYTES), "bad_json")


@pytest.mark.parametrize("filler", ["a", "é", "😀"], ids=["ascii", "2-byte", "4-byte"])
async def test_frame_of_exactly_one_mebibyte_is_accepted(room, filler):
    alice = await connected(room.id)
    await alice.send_raw(text=frame_of_bytes(MAX_BYTES, filler=filler))
    assert (await alice.receive_type("pong", "error"))["type"] == "pong"
    await alice.close()


async def test_sync_code_making_the_document_exceed_the_limit_is_too_large_and_changes_nothing():
    room = await create_room(code="")
    alice = await connected(room.id)
    bob = await connected(room.id)
    half = MAX_CODE_POINTS // 2 + 1
    await alice.request({"type": "sync_code", "code": "a" * half, "version": 0}, "ack")
    assert (await bob.receive_type("sync_code"))["version"] == 1
    before = await stored(room.id)

    # Bob's insert, made on version 0, merges after Alice's: one code point over the limit.
    await bob.send({"type": "sync_code", "code": "b" * half, "version": 0})
    assert_error(await bob.receive_type("error"), "too_large")
    assert await stored(room.id) == before
    await bob.next_is_pong()
    await alice.next_is_pong()  # nothing was broadcast

    ack = await bob.request({"type": "sync_code", "code": "small"}, "ack")
    assert ack["version"] == 2
    assert (await alice.receive_type("sync_code"))["code"] == "small"
    await alice.close()
    await bob.close()


async def test_sync_code_making_the_document_exactly_the_limit_is_accepted():
    room = await create_room(code="")
    alice = await connected(room.id)
    bob = await connected(room.id)
    half = MAX_CODE_POINTS // 2
    await alice.request({"type": "sync_code", "code": "a" * half, "version": 0}, "ack")
    assert (await bob.receive_type("sync_code"))["version"] == 1
    await bob.send({"type": "sync_code", "code": "b" * half, "version": 0})
    ack = await bob.receive_type("ack")
    assert ack["version"] == 2
    code, version, _ = await stored(room.id)
    assert version == 2 and len(code) == MAX_CODE_POINTS
    assert ack["code"] == code  # the merge differs from what Bob sent
    await alice.close()
    await bob.close()


# -- rate_limited ---------------------------------------------------------------------------------


@pytest.fixture
def tight_rate(settings):
    settings.COLLAB_RATE_BURST = 3
    settings.COLLAB_RATE_PER_S = 0.001


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """Replaces the clock the rate limiter reads, and only that one (not the event loop's)."""
    fake = FakeClock()
    monkeypatch.setattr(limits, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


async def test_message_after_the_burst_gets_one_rate_limited_error_each(room, tight_rate):
    alice = await connected(room.id, "?name=alice")
    bob = await connected(room.id, "?name=bob")
    await alice.receive_type("join")
    for _ in range(3):
        assert (await alice.request({"type": "ping"}, "pong", "error"))["type"] == "pong"
    await alice.send({"type": "ping"})
    await alice.send({"type": "sync_code", "code": "dropped"})
    await alice.send({"type": "ping"})
    for _ in range(3):
        assert_error(await alice.receive_type("error", "pong"), "rate_limited")
    assert await stored(room.id) == (INITIAL_CODE, 0, 0)

    # The connection stays open and the room works for everyone else.
    ack = await bob.request({"type": "sync_code", "code": "bob"}, "ack")
    assert ack.items() >= {"type": "ack", "version": 1}.items()
    update = await alice.receive_type("sync_code")
    assert update["code"] == "bob" and update["version"] == 1
    assert_error(await alice.request({"type": "ping"}, "error", "pong"), "rate_limited")
    await alice.close()
    await bob.close()


async def test_bad_messages_count_against_the_rate_limit(room, tight_rate):
    alice = await connected(room.id)
    for frame in ("{", "[]", '{"type":"nope"}'):
        await alice.send_raw(text=frame)
        assert (await alice.receive_type("error"))["code"] != "rate_limited"
    assert_error(await alice.request({"type": "ping"}, "error", "pong"), "rate_limited")
    await alice.close()


async def test_rate_limited_connection_is_served_again_once_the_bucket_refills(
    room, settings, clock
):
    settings.COLLAB_RATE_BURST = 2
    settings.COLLAB_RATE_PER_S = 1
    alice = await connected(room.id)
    for _ in range(2):
        assert (await alice.request({"type": "ping"}, "pong", "error"))["type"] == "pong"
    assert_error(await alice.request({"type": "ping"}, "error", "pong"), "rate_limited")
    clock.now += 0.5
    assert_error(await alice.request({"type": "ping"}, "error", "pong"), "rate_limited")
    clock.now += 0.5
    assert (await alice.request({"type": "ping"}, "pong", "error"))["type"] == "pong"
    assert_error(await alice.request({"type": "ping"}, "error", "pong"), "rate_limited")
    clock.now += 1
    ack = await alice.request({"type": "sync_code", "code": "refilled"}, "ack", "error")
    assert ack.items() >= {"type": "ack", "version": 1}.items()
    await alice.close()


def test_token_bucket_allows_the_burst_then_refills_at_the_rate(clock):
    bucket = TokenBucket(3, 2)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.25  # half a token
    assert bucket.take() is False
    clock.now += 0.25  # the first whole token
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 1.0  # two tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_token_bucket_never_holds_more_than_the_burst(clock):
    bucket = TokenBucket(3, 100)
    clock.now += 3600
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.01  # one token at 100/s
    assert [bucket.take(), bucket.take()] == [True, False]


def test_nesting_far_beyond_any_real_message_is_refused_before_parsing():
    from rooms.consumers import MAX_JSON_DEPTH, nested_too_deep

    assert not nested_too_deep('{"type": "op", "op": [1, {"d": 2}, "[[[[{{{{"]}')
    assert not nested_too_deep("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert nested_too_deep("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    assert nested_too_deep('{"a": ' * 100_000)
