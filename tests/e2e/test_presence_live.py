"""Presence against the real server (docs/protocol.md sections 4 and 8): users with names and
colours, join and leave broadcasts, live cursors moved through ops, typing state and its
server-side expiry.

Every wait is bounded. "Nothing else arrived" is proved by a ping answered by the very next
message (the server answers one connection's messages in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import httpx
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

WAIT_S = 5
# docs/protocol.md section 8: typing expires about 5 s after the last typing:true or accepted
# edit; 2.5-10 s is the bound these tests hold the server to.
TYPING_MIN_S = 2.5
TYPING_MAX_S = 10
COLOR = re.compile(r"#[0-9a-f]{6}")
PRESENCE = {"join", "leave", "cursor", "typing"}


def create_room(server: LiveServer, code: str = "") -> str:
    response = httpx.post(f"{server.http_url}/rooms", json={"code": code}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["room_id"]


def connect(server: LiveServer, room_id: str, query: str = ""):
    url = f"{server.ws_base}/ws/{room_id}" + (f"?{query}" if query else "")
    return websockets.connect(url, max_size=None, open_timeout=WAIT_S, close_timeout=WAIT_S)


async def open_user(server: LiveServer, room_id: str, query: str = "") -> tuple[Any, dict]:
    """A connected user whose arrival the server has fully announced: its init came, and a ping
    sent after it was answered (the server handles a connection's connect and messages in
    order), so its join broadcast went out before anyone connects after it. (Without this, a
    user connecting right after may get the earlier user's join as well.) Users enter one at a
    time, so nothing but the pong may come: in particular no echo of the user's own join."""
    ws = await connect(server, room_id, query)
    init = await recv_json(ws)
    assert init["type"] == "init", init
    await next_is_pong(ws)
    return ws, init


@contextlib.asynccontextmanager
async def entered(server: LiveServer, room_id: str, query: str = ""):
    ws, init = await open_user(server, room_id, query)
    try:
        yield ws, init
    finally:
        await ws.close()


async def recv_json(ws, timeout: float = WAIT_S) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def send(ws, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def next_of(ws, kind: str, *, skip: set[str], timeout: float = WAIT_S) -> dict[str, Any]:
    """The next message of type `kind`, skipping only the types in `skip`; bounded."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message
            assert message["type"] in skip, f"expected {kind}, got {message}"


async def next_is_pong(ws, *, skip: set[str] = frozenset()) -> None:
    """Nothing but `skip` messages was queued for this socket before a ping's pong."""
    await send(ws, {"type": "ping"})
    assert (await next_of(ws, "pong", skip=set(skip)))["type"] == "pong"


async def joined(ws, user_id: str) -> dict[str, Any]:
    """The join broadcast announcing `user_id` (earlier presence messages skipped)."""
    while True:
        message = await next_of(ws, "join", skip=PRESENCE)
        if message["user"]["id"] == user_id:
            return message


def by_id(users: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {user["id"]: user for user in users}


def cursor_fields(cursor: dict[str, Any]) -> tuple[str, int, int, int]:
    return cursor["user"], cursor["anchor"], cursor["head"], cursor["version"]


def assert_user(user: dict[str, Any], user_id: str, name: str, color: str | None = None) -> None:
    assert user["id"] == user_id and user["name"] == name, user
    assert isinstance(user.get("color"), str) and COLOR.fullmatch(user["color"]), user
    if color is not None:
        assert user["color"] == color, user


class SlowCloser:
    """A client on websockets' sans-I/O protocol that can hold back its reply to the server's
    close frame, as a client on a slow network does: the server's close handshake stays open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: list[Any] = []

    async def open(self) -> dict[str, Any]:
        uri = parse_uri(self.url)
        self.reader, self.writer = await asyncio.open_connection(uri.host, uri.port)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        response = await self._next_event()
        assert isinstance(response, Response) and response.status_code == 101, response
        return json.loads((await self.next_frame()).data)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    async def _next_event(self) -> Any:
        async with asyncio.timeout(WAIT_S):
            while not self.events:
                data = await self.reader.read(65536)
                assert data, "the server closed the TCP connection"
                self.protocol.receive_data(data)
                self.events.extend(self.protocol.events_received())
        return self.events.pop(0)

    async def next_frame(self) -> Frame:
        return await self._next_event()

    async def send_json(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()
        await self.writer.drain()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


# -- users, names, colours ----------------------------------------------------------------------


async def test_two_users_see_each_others_names_and_colours(shared_server):
    room_id = create_room(shared_server)
    async with entered(shared_server, room_id, "name=alice&client=alice-client-1") as (
        alice,
        a_init,
    ):
        a_id = a_init["user_id"]
        assert a_init["name"] == "alice"
        assert len(a_init["users"]) == 1
        assert_user(a_init["users"][0], a_id, "alice")
        a_color = a_init["users"][0]["color"]

        async with entered(shared_server, room_id, "name=bob&client=bob-client-1") as (bob, b_init):
            b_id = b_init["user_id"]
            assert b_id != a_id
            users = by_id(b_init["users"])
            assert set(users) == {a_id, b_id}
            assert_user(users[a_id], a_id, "alice", a_color)
            assert_user(users[b_id], b_id, "bob")
            b_color = users[b_id]["color"]

            # Alice is told bob entered, with his name and colour and the full list.
            join = await next_of(alice, "join", skip=set())
            assert join["user"]["id"] == b_id and join["user"]["name"] == "bob"
            assert join["user"].get("color", b_color) == b_color
            users = by_id(join["users"])
            assert set(users) == {a_id, b_id}
            assert_user(users[a_id], a_id, "alice", a_color)
            assert_user(users[b_id], b_id, "bob", b_color)
            # Bob is not told about his own arrival.
            await next_is_pong(bob)
            await next_is_pong(alice)


async def test_rename_is_broadcast_to_the_others_only(shared_server):
    room_id = create_room(shared_server)
    async with (
        entered(shared_server, room_id, "name=alice") as (alice, a_init),
        entered(shared_server, room_id, "name=bob") as (bob, b_init),
    ):
        a_id = a_init["user_id"]
        b_id = b_init["user_id"]
        b_color = by_id(b_init["users"])[b_id]["color"]
        await joined(alice, b_id)

        await send(bob, {"type": "join", "name": "bobby 😀"})
        rename = await next_of(alice, "join", skip=set())
        assert rename["user"]["id"] == b_id and rename["user"]["name"] == "bobby 😀"
        users = by_id(rename["users"])
        assert set(users) == {a_id, b_id}
        assert_user(users[b_id], b_id, "bobby 😀", b_color)  # a rename keeps the colour
        await next_is_pong(bob)
        await next_is_pong(alice)


async def test_a_user_who_reconnects_with_the_same_client_id_keeps_the_colour(shared_server):
    room_id = create_room(shared_server)
    async with entered(shared_server, room_id, "name=watcher") as (watcher, _):
        colours = []
        user_ids = []
        query = "name=carol&client=carol-stable-id"
        for _ in range(3):
            async with entered(shared_server, room_id, query) as (_, init):
                query = f"name=carol&client=carol-stable-id&client_secret={init['client_secret']}"
                me = by_id(init["users"])[init["user_id"]]
                assert_user(me, init["user_id"], "carol")
                seen = (await joined(watcher, init["user_id"]))["users"]
                assert by_id(seen)[init["user_id"]]["color"] == me["color"]
                colours.append(me["color"])
                user_ids.append(init["user_id"])
            left = await next_of(watcher, "leave", skip=PRESENCE)
            assert left["user"]["id"] == init["user_id"]
        assert len(set(colours)) == 1, colours
        assert len(set(user_ids)) == 3, "every connection is a new user"


# -- cursors ------------------------------------------------------------------------------------


async def test_cursor_is_broadcast_to_the_others_with_user_and_version(shared_server):
    room_id = create_room(shared_server, code="hello world")
    async with (
        entered(shared_server, room_id, "name=alice") as (alice, a_init),
        entered(shared_server, room_id, "name=bob") as (bob, b_init),
    ):
        a_id = a_init["user_id"]
        b_id = b_init["user_id"]
        await joined(alice, b_id)

        await send(alice, {"type": "cursor", "anchor": 1, "head": 5})
        cursor = await next_of(bob, "cursor", skip={"join"})
        assert cursor.items() >= {"user": a_id, "anchor": 1, "head": 5, "version": 0}.items()
        await next_is_pong(alice)  # no echo to the sender

        # A cursor made at an older version is moved to the head: "hello world" -> "hi, hello
        # world" (insert before both offsets shifts them by 4).
        await send(bob, {"type": "sync_code", "code": "hi, hello world"})
        assert (await next_of(bob, "ack", skip=set()))["version"] == 1
        assert (await next_of(alice, "sync_code", skip={"join"}))["version"] == 1
        await send(alice, {"type": "cursor", "anchor": 11, "head": 6, "version": 0})
        cursor = await next_of(bob, "cursor", skip=set())
        assert cursor.items() >= {"user": a_id, "anchor": 15, "head": 10, "version": 1}.items()
        await next_is_pong(bob)


async def test_cursor_out_of_range_is_bad_message_and_not_broadcast(shared_server):
    room_id = create_room(shared_server, code="abc")
    async with (
        entered(shared_server, room_id, "name=alice") as (alice, _),
        entered(shared_server, room_id, "name=bob") as (bob, b_init),
    ):
        b_id = b_init["user_id"]
        await joined(alice, b_id)
        for bad in (
            {"anchor": 4, "head": 0},
            {"anchor": 0, "head": -1},
            {"anchor": 0, "head": 0, "version": 1},
            {"anchor": 0, "head": 0, "version": -1},
            {"anchor": True, "head": 0},
            {"anchor": 0.0, "head": 0},
            {"head": 0},
        ):
            await send(alice, {"type": "cursor", **bad})
            error = await next_of(alice, "error", skip=set())
            assert error["code"] == "bad_message", (bad, error)
        await next_is_pong(bob)  # bob saw none of them


async def test_late_joiner_gets_cursors_moved_through_later_ops(shared_server):
    room_id = create_room(shared_server, code="abcdef")
    async with entered(shared_server, room_id, "name=bob&mode=ops") as (bob, b_init):
        b_id = b_init["user_id"]
        alice, a_init = await open_user(shared_server, room_id, "name=alice")
        try:
            a_id = a_init["user_id"]
            await joined(bob, a_id)

            await send(alice, {"type": "cursor", "anchor": 2, "head": 4})
            # Once bob has the broadcast, the server has stored the cursor.
            assert (await next_of(bob, "cursor", skip=set()))["anchor"] == 2

            # An insert before the cursor shifts it: "XYabcdef", cursor (4, 6).
            await send(bob, {"type": "op", "version": 0, "seq": 1, "op": ["XY"]})
            assert (await next_of(bob, "ack", skip=set()))["version"] == 1
            # An insert at the anchor leaves the anchor in place: "XYabZZcdef", cursor (4, 8).
            await send(bob, {"type": "op", "version": 1, "seq": 2, "op": [4, "ZZ"]})
            assert (await next_of(bob, "ack", skip=set()))["version"] == 2

            async with entered(shared_server, room_id, "name=carol") as (_, init):
                assert (init["code"], init["version"]) == ("XYabZZcdef", 2)
                assert [cursor_fields(c) for c in init["cursors"]] == [(a_id, 4, 8, 2)]

            # A delete spanning the anchor moves it to the delete's start: "XZcdef", (1, 4).
            await send(bob, {"type": "op", "version": 2, "seq": 3, "op": [1, {"d": 4}]})
            assert (await next_of(bob, "ack", skip=PRESENCE))["version"] == 3
            async with entered(shared_server, room_id, "name=dave") as (_, init):
                assert init["code"] == "XZcdef"
                assert [cursor_fields(c) for c in init["cursors"]] == [(a_id, 1, 4, 3)]
        finally:
            await alice.close()

        # Alice is gone (bob saw her leave): her cursor is not offered to later joiners.
        while (await next_of(bob, "leave", skip=PRESENCE))["user"]["id"] != a_id:
            pass
        async with entered(shared_server, room_id, "name=erin") as (_, init):
            assert init["cursors"] == []
            assert {u["id"] for u in init["users"]} == {b_id, init["user_id"]}


# -- typing -------------------------------------------------------------------------------------


async def test_typing_true_and_false_are_broadcast_to_the_others(shared_server):
    room_id = create_room(shared_server)
    async with (
        entered(shared_server, room_id, "name=alice") as (alice, a_init),
        entered(shared_server, room_id, "name=bob") as (bob, b_init),
    ):
        a_id = a_init["user_id"]
        b_id = b_init["user_id"]
        await joined(alice, b_id)

        await send(alice, {"type": "typing", "typing": True})
        typing = await next_of(bob, "typing", skip=set())
        assert typing.items() >= {"user": a_id, "typing": True}.items()
        await send(alice, {"type": "typing", "typing": False})
        typing = await next_of(bob, "typing", skip=set())
        assert typing.items() >= {"user": a_id, "typing": False}.items()
        await next_is_pong(alice)  # the sender hears nothing about itself
        await next_is_pong(bob)

        for bad in ("yes", 1, None):
            await send(alice, {"type": "typing", "typing": bad})
            assert (await next_of(alice, "error", skip=set()))["code"] == "bad_message"
        await send(alice, {"type": "typing"})
        assert (await next_of(alice, "error", skip=set()))["code"] == "bad_message"
        await next_is_pong(bob)


async def test_typing_expires_on_the_server_and_an_edit_pushes_the_expiry_back(shared_server):
    room_id = create_room(shared_server)
    async with (
        entered(shared_server, room_id, "name=alice") as (alice, a_init),
        entered(shared_server, room_id, "name=bob") as (bob, b_init),
    ):
        a_id = a_init["user_id"]
        b_id = b_init["user_id"]
        await joined(alice, b_id)

        # 1. typing:true and nothing else: the server says typing:false by itself.
        await send(alice, {"type": "typing", "typing": True})
        assert (await next_of(bob, "typing", skip=set()))["typing"] is True
        started = time.monotonic()
        # The expiry time IS the behaviour under test: this bounded wait is the measurement.
        stopped = await next_of(bob, "typing", skip=set(), timeout=TYPING_MAX_S + 1)
        expiry = time.monotonic() - started
        assert stopped.items() >= {"user": a_id, "typing": False}.items()
        assert TYPING_MIN_S - 0.2 <= expiry <= TYPING_MAX_S, expiry

        # 2. An accepted edit half-way through counts as typing: the expiry runs from the edit.
        await send(alice, {"type": "typing", "typing": True})
        assert (await next_of(bob, "typing", skip=set()))["typing"] is True
        # Let half the measured expiry pass (time passing is the subject here, not a sync).
        await asyncio.sleep(expiry / 2)
        await send(alice, {"type": "sync_code", "code": "typed"})
        assert (await next_of(alice, "ack", skip=set()))["version"] == 1
        edited = time.monotonic()
        assert (await next_of(bob, "sync_code", skip=set()))["code"] == "typed"
        stopped = await next_of(bob, "typing", skip=set(), timeout=TYPING_MAX_S + 1)
        assert stopped["typing"] is False
        since_edit = time.monotonic() - edited
        # Without the push-back it would come about expiry/2 after the edit.
        assert since_edit >= expiry - 0.5, (since_edit, expiry)
        await next_is_pong(bob)


@pytest.mark.parametrize("how", ["leave_message", "close", "abort"])
async def test_disconnect_of_a_typing_user_sends_typing_false_then_leave(shared_server, how):
    room_id = create_room(shared_server)
    async with entered(shared_server, room_id, "name=alice") as (alice, a_init):
        a_id = a_init["user_id"]
        bob, b_init = await open_user(shared_server, room_id, "name=bob")
        try:
            b_id = b_init["user_id"]
            await joined(alice, b_id)
            await send(bob, {"type": "typing", "typing": True})
            typing = await next_of(alice, "typing", skip=set())
            assert typing.items() >= {"user": b_id, "typing": True}.items()
            if how == "leave_message":
                await send(bob, {"type": "leave"})
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(WAIT_S):
                        while True:
                            await bob.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
            elif how == "close":
                await bob.close()
            else:
                bob.transport.abort()  # no close frame
        finally:
            with contextlib.suppress(Exception):
                await bob.close()

        # Exactly these two, in this order.
        stopped = await recv_json(alice)
        assert stopped.items() >= {"type": "typing", "user": b_id, "typing": False}.items()
        left = await recv_json(alice)
        assert left["type"] == "leave"
        assert left["user"]["id"] == b_id and left["user"]["name"] == "bob"
        assert [(u["id"], u["name"]) for u in left["users"]] == [(a_id, "alice")]
        await next_is_pong(alice)


@pytest.mark.parametrize("broadcast", ["typing", "cursor", "sync_code", "join"])
async def test_a_user_whose_close_handshake_is_slow_still_leaves(shared_server, broadcast):
    """A broadcast that reaches a connection the server is closing must not cost its leave."""
    room_id = create_room(shared_server, code="abc")
    async with entered(shared_server, room_id, "name=bob") as (bob, _):
        alice = SlowCloser(f"{shared_server.ws_base}/ws/{room_id}?name=alice")
        try:
            a_id = (await alice.open())["user_id"]
            await joined(bob, a_id)
            await alice.send_json({"type": "leave"})
            # The server's close frame arrived: it is closing alice's connection. Alice does
            # not answer it yet (the reply stays in her protocol's buffer).
            while (await alice.next_frame()).opcode != Opcode.CLOSE:
                pass
            message = {
                "typing": {"type": "typing", "typing": True},
                "cursor": {"type": "cursor", "anchor": 1, "head": 1},
                "sync_code": {"type": "sync_code", "code": "abcd"},
                "join": {"type": "join", "name": "bobby"},
            }[broadcast]
            await send(bob, message)
            # Bounded: the server gives up on the close handshake (after 1 s, autobahn's default)
            # and the connection is gone.
            try:
                left = await next_of(bob, "leave", skip={"join", "ack"}, timeout=WAIT_S)
            except TimeoutError:
                crashes = [line for line in shared_server.log if "inside application" in line]
                raise AssertionError(
                    f"alice never left (no leave in {WAIT_S} s); server log: {crashes}"
                ) from None
            assert left["user"]["id"] == a_id
            assert a_id not in {u["id"] for u in left["users"]}
        finally:
            alice.abort()
        await next_is_pong(bob)
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        state = (await http.get(f"{shared_server.http_url}/rooms/{room_id}")).json()
    assert a_id not in {u["id"] for u in state["users"]}


# -- leave --------------------------------------------------------------------------------------


async def test_leave_is_broadcast_with_the_remaining_users(shared_server):
    room_id = create_room(shared_server)
    async with (
        entered(shared_server, room_id, "name=alice") as (alice, a_init),
        entered(shared_server, room_id, "name=bob") as (bob, b_init),
    ):
        a_id = a_init["user_id"]
        b_id = b_init["user_id"]
        await joined(alice, b_id)
        async with entered(shared_server, room_id, "name=carol") as (carol, c_init):
            c_id = c_init["user_id"]
            c_color = by_id(c_init["users"])[c_id]["color"]
            assert set(by_id(c_init["users"])) == {a_id, b_id, c_id}
            await joined(alice, c_id)
            await joined(bob, c_id)
            await send(carol, {"type": "leave"})
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    while True:
                        await carol.recv()
        for ws in (alice, bob):
            left = await next_of(ws, "leave", skip=set())
            assert left["user"]["id"] == c_id and left["user"]["name"] == "carol"
            assert left["user"].get("color", c_color) == c_color
            users = by_id(left["users"])
            assert set(users) == {a_id, b_id}
            assert users[a_id]["name"] == "alice" and users[b_id]["name"] == "bob"
            await next_is_pong(ws)
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            state = (await http.get(f"{shared_server.http_url}/rooms/{room_id}")).json()
        assert {u["id"] for u in state["users"]} == {a_id, b_id}
