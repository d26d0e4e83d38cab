"""Private rooms against the real server (docs/protocol.md sections 3, 4 and 9): edit and view
tokens on REST and on the WebSocket, the handshake's order of checks, and tokens kept out of the
logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

WAIT_S = 5
PRESENCE = {"join", "leave"}


def create_private(server: LiveServer, code: str = "secret code\n") -> dict[str, str]:
    response = httpx.post(
        f"{server.http_url}/rooms", json={"private": True, "code": code, "name": "p"}, timeout=5
    )
    assert response.status_code == 201, response.text
    return response.json()


def ws_connect(server: LiveServer, room_id: str, query: str = "", **kwargs):
    url = f"{server.ws_base}/ws/{room_id}" + (f"?{query}" if query else "")
    return websockets.connect(
        url, max_size=None, open_timeout=WAIT_S, close_timeout=WAIT_S, **kwargs
    )


@contextlib.asynccontextmanager
async def entered(server: LiveServer, room_id: str, query: str):
    """A connection with its init read and a ping answered: the server has finished its connect
    (presence entered, join announced) before the caller connects anyone else."""
    async with ws_connect(server, room_id, query) as ws:
        init = await recv_json(ws)
        assert init["type"] == "init", init
        await next_is_pong(ws)
        yield ws, init


async def recv_json(ws) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        return json.loads(await ws.recv())


async def send(ws, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def next_of(ws, *kinds: str, skip: set[str] = PRESENCE) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] in kinds:
                return message
            assert message["type"] in skip, f"expected {kinds}, got {message}"


async def next_is_pong(ws) -> None:
    """Nothing but presence was queued for this socket before the pong."""
    await send(ws, {"type": "ping"})
    assert (await next_of(ws, "pong"))["type"] == "pong"


async def messages_until_close(ws) -> tuple[list[dict[str, Any]], int]:
    """Every message the server sends before it closes, and its close code."""
    received = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT_S):
            while True:
                received.append(json.loads(await ws.recv()))
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return received, closed.value.rcvd.code


def assert_error(message: dict[str, Any], code: str) -> None:
    assert set(message) >= {"type", "code", "message"}, message
    assert message["type"] == "error" and message["code"] == code, message


def room_state(server: LiveServer, room_id: str, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.http_url}/rooms/{room_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()


def rest_paths(room_id: str) -> dict[str, str]:
    return {
        "join": f"/rooms/join?id={room_id}",
        "detail": f"/rooms/{room_id}",
        "detail/": f"/rooms/{room_id}/",
        "history": f"/rooms/{room_id}/history",
        "history?since": f"/rooms/{room_id}/history?since=0",
        "autocomplete": f"/autocomplete?room={room_id}&line=1&column=0",
    }


def with_query(path: str, key: str, value: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{key}={value}"


# -- creating -----------------------------------------------------------------------------------


def test_private_room_creation_returns_an_edit_and_a_view_token(shared_server):
    body = create_private(shared_server)
    assert set(body) >= {"room_id", "ws_url", "token", "view_token"}
    assert body["ws_url"] == f"/ws/{body['room_id']}"
    assert isinstance(body["token"], str) and isinstance(body["view_token"], str)
    assert len(body["token"]) >= 16 and len(body["view_token"]) >= 16
    assert body["token"] != body["view_token"]
    other = create_private(shared_server)
    assert {other["token"], other["view_token"]}.isdisjoint({body["token"], body["view_token"]})

    public = httpx.post(f"{shared_server.http_url}/rooms", json={"private": False}, timeout=5)
    assert public.status_code == 201
    assert "token" not in public.json() and "view_token" not in public.json()


@pytest.mark.parametrize("private", [1, "true", None, []])
def test_private_flag_must_be_a_boolean(shared_server, private):
    response = httpx.post(f"{shared_server.http_url}/rooms", json={"private": private}, timeout=5)
    assert response.status_code == 400
    assert "error" in response.json()


# -- REST ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(rest_paths("x")))
def test_rest_without_or_with_a_wrong_token_is_403_json(shared_server, endpoint):
    room = create_private(shared_server)
    other = create_private(shared_server)
    path = rest_paths(room["room_id"])[endpoint]
    attempts = [
        ({}, path),
        ({"Authorization": "Bearer wrong-token"}, path),
        ({"Authorization": f"Bearer {other['token']}"}, path),  # another room's edit token
        ({"Authorization": f"Bearer {room['token']}x"}, path),
        ({"Authorization": "Bearer"}, path),
        ({"Authorization": room["token"]}, path),  # no scheme
        ({}, with_query(path, "token", "wrong-token")),
        ({}, with_query(path, "token", other["view_token"])),
        ({}, with_query(path, "token", "")),
        ({}, with_query(path, "view_token", room["view_token"])),  # not the parameter's name
    ]
    with httpx.Client(base_url=shared_server.http_url, timeout=10) as http:
        for headers, url in attempts:
            response = http.get(url, headers=headers)
            assert response.status_code == 403, (headers, url, response.text)
            assert response.headers["content-type"].startswith("application/json")
            body = response.json()
            assert isinstance(body.get("error"), str), body
            assert room["token"] not in response.text and room["view_token"] not in response.text


@pytest.mark.parametrize("endpoint", list(rest_paths("x")))
@pytest.mark.parametrize("which", ["token", "view_token"])
def test_rest_with_a_bearer_or_query_token_is_200(shared_server, endpoint, which):
    room = create_private(shared_server, code="x = 1\n")
    token = room[which]
    path = rest_paths(room["room_id"])[endpoint]
    with httpx.Client(base_url=shared_server.http_url, timeout=20) as http:
        by_header = http.get(path, headers={"Authorization": f"Bearer {token}"})
        by_query = http.get(with_query(path, "token", token))
    for response in (by_header, by_query):
        assert response.status_code == 200, (endpoint, response.text)
        body = response.json()
        if endpoint in ("join", "detail", "detail/"):
            assert body["room_id"] == room["room_id"]
            assert (body["code"], body["version"], body["name"]) == ("x = 1\n", 0, "p")
        elif endpoint.startswith("history"):
            assert body.items() >= {"room_id": room["room_id"], "version": 0, "ops": []}.items()
        else:
            assert isinstance(body["suggestions"], list)
        assert token not in response.text


async def test_rest_reads_with_a_token_change_nothing_and_history_shows_edits(shared_server):
    room = create_private(shared_server, code="")
    rid = room["room_id"]
    async with httpx.AsyncClient(base_url=shared_server.http_url, timeout=10) as http:
        for _ in range(3):
            response = await http.get(f"/rooms/{rid}?token={room['view_token']}")
            assert (response.status_code, response.json()["version"]) == (200, 0)

        async with ws_connect(shared_server, rid, f"token={room['token']}") as ws:
            await recv_json(ws)
            await send(ws, {"type": "sync_code", "code": "edited"})
            ack = await next_of(ws, "ack", "error")
            assert ack.items() >= {"type": "ack", "version": 1}.items()

        response = await http.get(
            f"/rooms/{rid}/history", headers={"Authorization": f"Bearer {room['view_token']}"}
        )
    assert response.status_code == 200
    assert [(e["version"], e["op"]) for e in response.json()["ops"]] == [(1, ["edited"])]


# -- WebSocket: refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "",
        "token=",
        "token=wrong-token",
        "name=mallory",
        "view_token=VIEW",  # not the parameter's name
        "token=OTHER",  # another private room's edit token
        "token=EDITx",
    ],
)
async def test_websocket_without_a_valid_token_is_accepted_then_closed_4403(shared_server, query):
    room = create_private(shared_server)
    other = create_private(shared_server)
    query = (
        query.replace("VIEW", room["view_token"])
        .replace("OTHER", other["token"])
        .replace("EDIT", room["token"])
    )
    async with ws_connect(shared_server, room["room_id"], query) as ws:
        received, code = await messages_until_close(ws)
    assert code == 4403
    assert received == [], "no init (no code) for a connection without access"


async def test_websocket_ignores_an_authorization_header(shared_server):
    # docs/protocol.md section 9: on the WebSocket the token comes only as ?token=.
    room = create_private(shared_server)
    headers = {"Authorization": f"Bearer {room['token']}"}
    async with ws_connect(shared_server, room["room_id"], additional_headers=headers) as ws:
        received, code = await messages_until_close(ws)
    assert (received, code) == ([], 4403)


async def test_handshake_unknown_room_4404_beats_the_token(shared_server):
    room = create_private(shared_server)
    for query in ("", f"token={room['token']}", "token=wrong&mode=bad"):
        async with ws_connect(shared_server, "no-such-private-room", query) as ws:
            received, code = await messages_until_close(ws)
        assert (received, code) == ([], 4404), query


@pytest.mark.parametrize("bad", ["mode=bad", "mode=", "version=x", "client=short", "name="])
async def test_handshake_token_4403_beats_bad_query_parameters_4400(shared_server, bad):
    room = create_private(shared_server)
    for token_part in ("", "token=wrong&"):
        async with ws_connect(shared_server, room["room_id"], token_part + bad) as ws:
            received, code = await messages_until_close(ws)
        assert (received, code) == ([], 4403), token_part + bad
    # With a valid token the query parameters are checked: bad_message, then 4400.
    for token in (room["token"], room["view_token"]):
        async with ws_connect(shared_server, room["room_id"], f"{bad}&token={token}") as ws:
            received, code = await messages_until_close(ws)
        assert code == 4400
        assert len(received) == 1
        assert_error(received[0], "bad_message")


# -- WebSocket: view token ----------------------------------------------------------------------


async def test_view_token_reads_everything_and_edits_nothing(shared_server):
    room = create_private(shared_server, code="abc")
    rid = room["room_id"]
    async with (
        entered(shared_server, rid, f"name=editor&token={room['token']}") as (editor, e_init),
        entered(shared_server, rid, f"name=viewer&token={room['view_token']}") as (viewer, v_init),
        entered(shared_server, rid, f"mode=ops&name=opsview&token={room['view_token']}") as (
            ov,
            ov_init,
        ),
    ):
        e_id = e_init["user_id"]
        v_id = v_init["user_id"]
        assert v_init["type"] == "init" and (v_init["code"], v_init["version"]) == ("abc", 0)
        ov_id = ov_init["user_id"]
        assert {u["id"] for u in v_init["users"]} == {e_id, v_id}

        # Every edit, cursor and typing message is forbidden, valid or not (forbidden is decided
        # before any other validation), and nothing changes.
        attempts = [
            {"type": "sync_code", "code": "hacked"},
            {"type": "sync_code", "code": "hacked", "version": 0},
            {"type": "sync_code"},
            {"type": "sync_code", "code": 5, "version": -1},
            {"type": "op", "version": 0, "seq": 1, "op": ["hacked"]},
            {"type": "op"},
            {"type": "cursor", "anchor": 1, "head": 2},
            {"type": "cursor", "anchor": -5, "head": "x"},
            {"type": "typing", "typing": True},
            {"type": "typing", "typing": "maybe"},
        ]
        for ws in (viewer, ov):
            for attempt in attempts:
                await send(ws, attempt)
                assert_error(await next_of(ws, "error", "pong", "ack"), "forbidden")
            await next_is_pong(ws)
        await send(ov, {"type": "op", "version": 0, "seq": 2, "op": [3, "!"]})
        assert_error(await next_of(ov, "error", "ack"), "forbidden")

        # The editor saw no cursor, typing or change from the viewers.
        await next_is_pong(editor)
        state = room_state(shared_server, rid, room["view_token"])
        assert (state["code"], state["version"]) == ("abc", 0)

        # The viewers still receive every broadcast.
        await send(editor, {"type": "sync_code", "code": "abcd"})
        ack = await next_of(editor, "ack", "error")
        assert ack.items() >= {"type": "ack", "version": 1}.items()
        update = await next_of(viewer, "sync_code")
        assert update.items() >= {"code": "abcd", "version": 1, "user": e_id}.items()
        op = await next_of(ov, "op")
        assert (op["version"], op["op"], op["user"]) == (1, [3, "d"], e_id)
        await send(editor, {"type": "cursor", "anchor": 4, "head": 4})
        for ws in (viewer, ov):
            cursor = await next_of(ws, "cursor")
            assert (cursor["user"], cursor["anchor"], cursor["head"]) == (e_id, 4, 4)
        await send(editor, {"type": "typing", "typing": True})
        for ws in (viewer, ov):
            typing = await next_of(ws, "typing")
            assert typing.items() >= {"user": e_id, "typing": True}.items()

        # A view connection may rename, ping and leave.
        await send(viewer, {"type": "join", "name": "renamed viewer"})
        join = await next_of(editor, "join", skip={"typing", "cursor", "leave"})
        while join["user"]["id"] != v_id:
            join = await next_of(editor, "join", skip={"typing", "cursor", "leave"})
        assert join["user"]["name"] == "renamed viewer"
        await next_is_pong(viewer)
        await send(viewer, {"type": "leave"})
        _, code = await messages_until_close(viewer)
        assert code == 1000
        left = await next_of(editor, "leave")
        assert left["user"]["id"] == v_id
        assert {u["id"] for u in left["users"]} == {e_id, ov_id}

    state = room_state(shared_server, rid, room["token"])
    assert (state["code"], state["version"]) == ("abcd", 1)


async def test_edit_token_has_full_access(shared_server):
    room = create_private(shared_server, code="")
    rid = room["room_id"]
    async with (
        entered(shared_server, rid, f"mode=ops&client=editor-one&token={room['token']}") as (
            a,
            a_init,
        ),
        entered(shared_server, rid, f"token={room['token']}") as (b, _),
    ):
        a_id = a_init["user_id"]
        await send(a, {"type": "op", "version": 0, "seq": 1, "op": ["hello"]})
        ack = await next_of(a, "ack", "error")
        assert ack.items() >= {"type": "ack", "version": 1, "seq": 1}.items()
        assert (await next_of(b, "sync_code"))["code"] == "hello"
        await send(b, {"type": "sync_code", "code": "hello world", "version": 1})
        assert (await next_of(b, "ack", "error")).items() >= {"type": "ack", "version": 2}.items()
        assert (await next_of(a, "op"))["op"] == [5, " world"]
        await send(a, {"type": "cursor", "anchor": 0, "head": 5})
        cursor = await next_of(b, "cursor")
        assert (cursor["user"], cursor["anchor"], cursor["head"]) == (a_id, 0, 5)
        await send(a, {"type": "typing", "typing": True})
        typing = await next_of(b, "typing", skip=PRESENCE | {"cursor"})
        assert typing.items() >= {"user": a_id, "typing": True}.items()
        await next_is_pong(a)
    state = room_state(shared_server, rid, room["token"])
    assert (state["code"], state["version"]) == ("hello world", 2)


# -- logs ---------------------------------------------------------------------------------------


async def wait_for_log(server: LiveServer, marker: str) -> None:
    """Until a log line containing `marker` was read from the server's output (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while not any(marker in line for line in list(server.log)):
        assert time.monotonic() < deadline, f"{marker!r} never reached the log"
        await asyncio.sleep(0.02)  # polling the log reader thread, condition checked each time


async def test_tokens_never_appear_in_the_server_log(shared_server):
    room = create_private(shared_server)
    rid, token, view = room["room_id"], room["token"], room["view_token"]
    with httpx.Client(base_url=shared_server.http_url, timeout=20) as http:
        for secret in (token, view):
            for path in rest_paths(rid).values():
                assert http.get(with_query(path, "token", secret)).status_code == 200
            assert http.get(f"/rooms/{rid}/history?since=99&token={secret}").status_code == 400
            assert http.get(f"/rooms/{rid}?TOKEN={secret}&view_token={secret}").status_code == 403
            assert http.get(f"/no/such/page?token={secret}").status_code == 404
    for secret in (token, view):
        async with ws_connect(shared_server, rid, f"name=logcheck&token={secret}") as ws:
            await recv_json(ws)
            await next_is_pong(ws)
        async with ws_connect(shared_server, rid, f"mode=bad&token={secret}") as ws:
            _, code = await messages_until_close(ws)
            assert code == 4400
    # A request after all of them: once its line is in the log, theirs are too.
    marker = f"log-marker-{secrets.token_hex(8)}"
    assert httpx.get(f"{shared_server.http_url}/rooms/{marker}", timeout=5).status_code == 404
    await wait_for_log(shared_server, marker)
    log = "".join(shared_server.log)
    assert f"/rooms/{rid}" in log, "the requests are logged, only without their tokens"
    assert token not in log
    assert view not in log
