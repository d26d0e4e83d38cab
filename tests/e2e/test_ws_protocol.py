"""The WebSocket protocol (docs/protocol.md sections 2, 4, 5, 6 and 11) against the real server
(daphne)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

WAIT_S = 5
MAX_BYTES = 1_048_576
PRESENCE = {"join", "leave"}


def create_room(server: LiveServer, code: str = "", name: str = "") -> str:
    response = httpx.post(f"{server.http_url}/rooms", json={"code": code, "name": name}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["room_id"]


def room_state(server: LiveServer, room_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.http_url}/rooms/{room_id}", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def connect(server: LiveServer, path: str, **kwargs):
    return websockets.connect(f"{server.ws_base}{path}", max_size=None, open_timeout=5, **kwargs)


async def recv_json(ws) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        return json.loads(await ws.recv())


async def next_of(ws, *types: str) -> dict[str, Any]:
    """The next message of one of `types`, skipping only presence (join/leave)."""
    while True:
        message = await recv_json(ws)
        if message["type"] in types:
            return message
        assert message["type"] in PRESENCE, message


async def send(ws, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def next_is_pong(ws) -> None:
    """Proves nothing else was queued for this socket: the server answers in order."""
    await send(ws, {"type": "ping"})
    assert (await next_of(ws, "pong", "error", "sync_code", "ack"))["type"] == "pong"


async def close_code(ws) -> int:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT_S):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return closed.value.rcvd.code


def assert_error(message: dict[str, Any], code: str) -> None:
    assert set(message) >= {"type", "code", "message"}, message
    assert message["type"] == "error" and message["code"] == code, message
    assert isinstance(message["message"], str)


def ping_of_bytes(size: int) -> str:
    head, tail = '{"type":"ping","pad":"', '"}'
    left = size - len((head + tail).encode())
    frame = head + "é" * (left // 2) + "a" * (left % 2) + tail
    assert len(frame.encode()) == size
    return frame


# -- connecting -----------------------------------------------------------------------------------


async def test_init_describes_the_room_and_the_new_user(shared_server):
    room_id = create_room(shared_server, code="x = 'a😀b'\n", name="demo")
    async with connect(shared_server, f"/ws/{room_id}?name=alice") as ws:
        init = await recv_json(ws)
    assert init["type"] == "init"
    assert init["room_id"] == room_id
    assert isinstance(init["user_id"], str) and init["user_id"]
    assert init["name"] == "alice"
    assert init["code"] == "x = 'a😀b'\n"
    assert init["version"] == 0
    assert init["cursors"] == []
    assert [(u["id"], u["name"]) for u in init["users"]] == [(init["user_id"], "alice")]


async def test_trailing_slash_ws_path_connects(shared_server):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}/") as ws:
        assert (await recv_json(ws))["room_id"] == room_id


@pytest.mark.parametrize("room_id", ["no-such-room", "a" * 65, "bad%20id", "semi;colon"])
async def test_unknown_or_malformed_room_is_accepted_then_closed_4404(shared_server, room_id):
    # Not an HTTP 403 at the handshake: connect() succeeds and the close frame carries 4404.
    async with connect(shared_server, f"/ws/{room_id}") as ws:
        assert await close_code(ws) == 4404


@pytest.mark.parametrize(
    "query", ["?mode=bad", "?mode=", "?name=", "?name=" + "n" * 65, "?client=short", "?version=x"]
)
async def test_bad_query_parameters_get_bad_message_then_close_4400(shared_server, query):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}{query}") as ws:
        assert_error(await recv_json(ws), "bad_message")
        assert await close_code(ws) == 4400


async def test_connection_without_origin_header_is_allowed(shared_server):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}") as ws:
        assert ws.request.headers.get("Origin") is None
        assert (await recv_json(ws))["type"] == "init"


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "http://127.0.0.1:8080", "https://localhost"]
)
async def test_origin_of_an_allowed_host_is_allowed(shared_server, origin):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}", origin=origin) as ws:
        assert (await recv_json(ws))["type"] == "init"


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://localhost.evil.example", "file://"]
)
async def test_origin_not_allowed_is_refused_at_the_handshake_with_403(shared_server, origin):
    room_id = create_room(shared_server)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(shared_server, f"/ws/{room_id}", origin=origin):
            pass
    assert refused.value.response.status_code == 403


async def test_bad_origin_is_refused_before_the_room_is_looked_up(shared_server):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(shared_server, "/ws/no-such-room", origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


# -- size limits and the transport cap ------------------------------------------------------------


async def test_frame_of_one_byte_over_a_mebibyte_is_too_large_and_the_connection_keeps_working(
    shared_server,
):
    room_id = create_room(shared_server, code="keep")
    async with connect(shared_server, f"/ws/{room_id}") as ws:
        await recv_json(ws)
        await ws.send(ping_of_bytes(MAX_BYTES + 1))
        assert_error(await next_of(ws, "error", "pong"), "too_large")
        await next_is_pong(ws)
        await send(ws, {"type": "sync_code", "code": "after"})
        ack = await next_of(ws, "ack", "error")
        assert ack.items() >= {"type": "ack", "version": 1}.items()
    assert room_state(shared_server, room_id)["code"] == "after"


async def test_binary_frame_over_a_mebibyte_is_too_large(shared_server):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}") as ws:
        await recv_json(ws)
        await ws.send(b"x" * (MAX_BYTES + 1))
        assert_error(await next_of(ws, "error", "pong"), "too_large")
        await next_is_pong(ws)


async def test_frame_of_exactly_one_mebibyte_is_accepted(shared_server):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}") as ws:
        await recv_json(ws)
        await ws.send(ping_of_bytes(MAX_BYTES))
        assert (await next_of(ws, "pong", "error"))["type"] == "pong"


async def test_frame_above_the_transport_cap_closes_1009_and_others_are_unaffected(shared_server):
    room_id = create_room(shared_server)
    async with (
        connect(shared_server, f"/ws/{room_id}") as alice,
        connect(shared_server, f"/ws/{room_id}") as bob,
    ):
        await recv_json(alice)
        await recv_json(bob)
        # The server may close while the frame is still being written; the close frame counts.
        with contextlib.suppress(ConnectionClosed):
            await alice.send("x" * (5 * MAX_BYTES))
        assert await close_code(alice) == 1009
        await send(bob, {"type": "sync_code", "code": "still here"})
        ack = await next_of(bob, "ack", "error")
        assert ack.items() >= {"type": "ack", "version": 1}.items()


# -- editing together -----------------------------------------------------------------------------


async def test_sync_code_is_acked_to_the_sender_and_broadcast_to_the_others(shared_server):
    room_id = create_room(shared_server, code="old")
    async with (
        connect(shared_server, f"/ws/{room_id}?name=alice") as alice,
        connect(shared_server, f"/ws/{room_id}?name=bob") as bob,
    ):
        alice_init = await recv_json(alice)
        await recv_json(bob)
        await send(alice, {"type": "sync_code", "code": "new 😀"})
        ack = await next_of(alice, "ack", "error", "sync_code")
        assert ack.items() >= {"type": "ack", "version": 1}.items()
        update = await next_of(bob, "sync_code", "error", "ack")
        assert (
            update.items()
            >= {
                "type": "sync_code",
                "code": "new 😀",
                "version": 1,
                "user": alice_init["user_id"],
            }.items()
        )
        await next_is_pong(alice)  # no echo of its own change
        await next_is_pong(bob)
    state = room_state(shared_server, room_id)
    assert (state["code"], state["version"]) == ("new 😀", 1)


async def test_every_connection_sees_every_version_once_in_order_during_a_burst(shared_server):
    room_id = create_room(shared_server)
    edits = {"a": 17, "b": 17, "c": 16}
    total = sum(edits.values())
    async with (
        connect(shared_server, f"/ws/{room_id}") as a,
        connect(shared_server, f"/ws/{room_id}") as b,
        connect(shared_server, f"/ws/{room_id}") as c,
    ):
        sockets = {"a": a, "b": b, "c": c}
        for ws in sockets.values():
            assert (await recv_json(ws))["version"] == 0

        async def edit(name: str) -> None:
            for i in range(edits[name]):
                await send(sockets[name], {"type": "sync_code", "code": f"{name}{i}\n"})

        async def observe(name: str) -> tuple[list[int], int, str]:
            versions, acks, last_text = [], 0, ""
            while not versions or versions[-1] < total:
                message = await next_of(sockets[name], "sync_code", "ack", "error")
                assert message["type"] != "error", message
                versions.append(message["version"])
                if message["type"] == "ack":
                    acks += 1
                    last_text = message.get("code", last_text)
                else:
                    last_text = message["code"]
            return versions, acks, last_text

        results = await asyncio.gather(
            *(edit(name) for name in sockets), *(observe(name) for name in sockets)
        )
        for name, (versions, acks, _) in zip(sockets, results[3:], strict=True):
            assert versions == list(range(1, total + 1)), name
            assert acks == edits[name], name
        for ws in sockets.values():
            await next_is_pong(ws)
    state = room_state(shared_server, room_id)
    assert state["version"] == total


async def test_leave_closes_1000_and_the_others_get_leave(shared_server):
    room_id = create_room(shared_server)
    async with (
        connect(shared_server, f"/ws/{room_id}?name=alice") as alice,
        connect(shared_server, f"/ws/{room_id}?name=bob") as bob,
    ):
        alice_init = await recv_json(alice)
        bob_init = await recv_json(bob)
        assert (await next_of(alice, "join"))["user"]["id"] == bob_init["user_id"]
        await send(bob, {"type": "leave"})
        assert await close_code(bob) == 1000
        left = await next_of(alice, "leave")
        assert left["user"]["id"] == bob_init["user_id"] and left["user"]["name"] == "bob"
        assert [u["id"] for u in left["users"]] == [alice_init["user_id"]]


async def test_abrupt_disconnect_tells_the_others_leave(shared_server):
    room_id = create_room(shared_server)
    async with connect(shared_server, f"/ws/{room_id}?name=alice") as alice:
        await recv_json(alice)
        bob = await connect(shared_server, f"/ws/{room_id}?name=bob")
        bob_init = await recv_json(bob)
        assert (await next_of(alice, "join"))["user"]["id"] == bob_init["user_id"]
        bob.transport.abort()  # no close frame: the TCP connection just drops
        left = await next_of(alice, "leave")
        assert left["user"]["id"] == bob_init["user_id"]
        assert bob_init["user_id"] not in {u["id"] for u in left["users"]}
        await next_is_pong(alice)


async def test_bad_input_never_kills_the_server(shared_server):
    room_id = create_room(shared_server, code="start")
    garbage: list[str | bytes] = [
        "",
        "{",
        "null",
        "[1,2,3]",
        '{"type":"sync_code","code":"a\\u0000"}',
        '{"type":"sync_code","code":"\\ud800"}',
        '{"type":"sync_code","code":"x","version":1e308}',
        '{"type":"sync_code","code":"x","version":-99999999999999999999999}',
        '{"type":"sync_code","code":"x","version":99999999999999999999999999}',
        '{"type":"ping","x":NaN}',
        '{"type":"init"}',
        '{"type":"join","name":' + '"x"' * 3 + "}",
        b"\x00\x01\x02",
        b"\xff" * 1000,
        ping_of_bytes(MAX_BYTES + 1),
    ]
    async with (
        connect(shared_server, f"/ws/{room_id}") as mallory,
        connect(shared_server, f"/ws/{room_id}") as alice,
    ):
        await recv_json(mallory)
        await recv_json(alice)
        for frame in garbage:
            await mallory.send(frame)
        for _ in garbage:
            assert (await next_of(mallory, "error"))["type"] == "error"
        await next_is_pong(mallory)

        # Neither does a socket that sends pathological JSON and vanishes without a close.
        async with connect(shared_server, f"/ws/{room_id}") as vanishing:
            await recv_json(vanishing)
            await vanishing.send("[" * 100_000 + "]" * 100_000)
            await vanishing.send('{"type":{"a":' + "[" * 10_000 + "]" * 10_000 + "}}")
            await vanishing.send('{"type":"sync_code","code":"half')
            vanishing.transport.abort()

        await send(alice, {"type": "sync_code", "code": "alive"})
        ack = await next_of(alice, "ack", "error")
        assert ack.items() >= {"type": "ack", "version": 1}.items()
        assert (await next_of(mallory, "sync_code"))["code"] == "alive"
    assert room_state(shared_server, room_id)["code"] == "alive"
    fresh = httpx.get(f"{shared_server.http_url}/rooms/create", timeout=5)
    assert fresh.status_code == 200


# -- rate limiting --------------------------------------------------------------------------------


@pytest.fixture
def limited_server(tmp_path):
    server = LiveServer(tmp_path, env={"COLLAB_RATE_BURST": "5", "COLLAB_RATE_PER_S": "1"})
    server.start()
    yield server
    server.stop()


async def test_message_after_the_burst_is_rate_limited_and_the_connection_stays_open(
    limited_server,
):
    room_id = create_room(limited_server)
    async with (
        connect(limited_server, f"/ws/{room_id}") as alice,
        connect(limited_server, f"/ws/{room_id}") as bob,
    ):
        await recv_json(alice)
        await recv_json(bob)
        for _ in range(6):
            await send(alice, {"type": "ping"})
        replies = [await next_of(alice, "pong", "error") for _ in range(6)]
        assert [reply["type"] for reply in replies[:5]] == ["pong"] * 5
        assert_error(replies[5], "rate_limited")

        # Still open: a change by someone else is delivered to it.
        await send(bob, {"type": "sync_code", "code": "from bob"})
        assert (await next_of(bob, "ack", "error"))["version"] == 1
        update = await next_of(alice, "sync_code", "error", "pong")
        assert update["code"] == "from bob" and update["version"] == 1


# -- persistence ----------------------------------------------------------------------------------


async def test_text_and_version_survive_a_restart(server):
    room_id = create_room(server, code="", name="keep")
    async with connect(server, f"/ws/{room_id}") as ws:
        await recv_json(ws)
        for i, text in enumerate(["one", "one 😀 two", "ünïcode\nthree\n"], start=1):
            await send(ws, {"type": "sync_code", "code": text})
            ack = await next_of(ws, "ack", "error")
            assert ack.items() >= {"type": "ack", "version": i}.items()
    server.restart()
    state = room_state(server, room_id)
    assert (state["code"], state["version"], state["name"]) == ("ünïcode\nthree\n", 3, "keep")
    async with connect(server, f"/ws/{room_id}") as ws:
        init = await recv_json(ws)
        assert (init["code"], init["version"]) == ("ünïcode\nthree\n", 3)
        await send(ws, {"type": "sync_code", "code": "four"})
        ack = await next_of(ws, "ack", "error")
        assert ack.items() >= {"type": "ack", "version": 4}.items()
