"""Client identity against live servers: nobody can act under another editor's client id.

The attack these tests replay: client ids are public (every `op` broadcast carries one), and the
server deduplicates on (client, seq). A second connection naming the victim's client id could
commit its own op under the victim's next seq; the victim's real op was then answered as a
duplicate and dropped, and the victim's screen and the room differed for good. Claiming seq
2^63-1 made every later op of the victim fail. Now a client id is bound in its room by the
secret `init` carries (docs/protocol.md, "Client ids and their secrets"), and a resubmitted seq
is a duplicate only when it is the same op.

One process on SQLite (`manage.py runserver`, the default set-up), restarted; and two processes
sharing PostgreSQL and Redis, as deployed for scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from rooms import ot
from tests.e2e.server import LiveServer
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    postgres_database,
    postgres_service,
    redis_service,
    running_processes,
    service_env,
)
from tests.support.ot_client import OTClient

pytestmark = pytest.mark.e2e

WAIT_S = 10
MAX_SEQ = 2**63 - 1
VICTIM = "victim-laptop-1"


def create_room(http_url: str, code: str = "") -> str:
    response = httpx.post(f"{http_url}/rooms", json={"code": code}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["room_id"]


def room_state(http_url: str, room_id: str) -> tuple[str, int]:
    response = httpx.get(f"{http_url}/rooms/{room_id}", timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["code"], body["version"]


def history(http_url: str, room_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{http_url}/rooms/{room_id}/history", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["ops"]


class Socket:
    """A raw ops-mode connection that records every message it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, ws_base: str, room_id: str, query: str) -> Socket:
        ws = await websockets.connect(
            f"{ws_base}/ws/{room_id}?{query}", open_timeout=WAIT_S, max_size=None
        )
        return cls(ws)

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            message = json.loads(await self.ws.recv())
        self.received.append(message)
        return message

    async def next_of(self, *types: str) -> dict[str, Any]:
        while True:
            message = await self.recv()
            if message["type"] in types:
                return message
            assert message["type"] in {"join", "leave", "op"}, message

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def reply_to(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a change; its ack or error (broadcasts before it are recorded)."""
        await self.send(message)
        return await self.next_of("ack", "error")

    async def close(self) -> None:
        await self.ws.close()


async def opened(ws_base: str, room_id: str, query: str) -> tuple[Socket, dict[str, Any]]:
    socket = await Socket.open(ws_base, room_id, query)
    init = await socket.next_of("init")
    return socket, init


async def refusal(ws_base: str, room_id: str, query: str) -> tuple[list[dict], int]:
    """Connect, expecting a refusal: the messages before the close, and the close code."""
    socket = await Socket.open(ws_base, room_id, query)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await socket.recv()
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return socket.received, closed.value.rcvd.code


def assert_forbidden(messages: list[dict], code: int) -> None:
    assert code == 4403, (code, messages)
    assert [m["code"] for m in messages if m["type"] == "error"] == ["forbidden"], messages
    assert all(m["type"] != "init" for m in messages), messages


async def attack(ws_base: str, room_id: str, seq: int, base: int) -> tuple[list[dict], int]:
    """What an attacker does: connect under the victim's client id and submit `seq`.

    Returns how the connection ended (the messages it got, its close code); before client ids
    were bound, the op was committed and the connection stayed open."""
    socket = await Socket.open(ws_base, room_id, f"mode=ops&client={VICTIM}")
    with contextlib.suppress(ConnectionClosed):
        first = await socket.recv()
        if first["type"] == "init":
            await socket.reply_to({"type": "op", "version": base, "seq": seq, "op": ["EVIL "]})
            await socket.close()
            return socket.received, 1000
        while True:
            await socket.recv()
    return socket.received, socket.ws.close_code


# -- one process (SQLite) --------------------------------------------------------------------


async def test_a_second_connection_under_the_victims_id_cannot_take_its_next_seq(shared_server):
    url, ws_base = shared_server.http_url, shared_server.ws_base
    room_id = create_room(url, "hello")
    victim, init = await opened(ws_base, room_id, f"mode=ops&client={VICTIM}")
    watcher, _ = await opened(ws_base, room_id, "mode=ops")
    ack = await victim.reply_to({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})
    assert ack == {"type": "ack", "version": 1, "seq": 1}
    seen = await watcher.next_of("op")
    assert seen["client"] == VICTIM  # how the attacker learns the id

    messages, code = await attack(ws_base, room_id, seq=2, base=1)
    assert_forbidden(messages, code)

    ack = await victim.reply_to({"type": "op", "version": 1, "seq": 2, "op": ["> "]})
    assert ack == {"type": "ack", "version": 2, "seq": 2}  # not a duplicate: it was applied
    assert room_state(url, room_id) == ("> hello!", 2)
    assert [entry["user"] for entry in history(url, room_id)] == [init["user_id"]] * 2

    # The victim itself, reconnecting with its secret, gets in and resumes.
    again, resumed = await opened(
        ws_base,
        room_id,
        f"mode=ops&client={VICTIM}&client_secret={init['client_secret']}&version=1",
    )
    assert [(e["client"], e["seq"]) for e in resumed["ops"]] == [(VICTIM, 2)]
    ack = await again.reply_to({"type": "op", "version": 2, "seq": 3, "op": [{"d": 2}]})
    assert ack == {"type": "ack", "version": 3, "seq": 3}
    assert room_state(url, room_id) == ("hello!", 3)
    for socket in (victim, watcher, again):
        await socket.close()


async def test_the_highest_seq_cannot_be_claimed_under_the_victims_id(shared_server):
    url, ws_base = shared_server.http_url, shared_server.ws_base
    room_id = create_room(url, "hello")
    victim, _ = await opened(ws_base, room_id, f"mode=ops&client={VICTIM}")
    assert (await victim.reply_to({"type": "op", "version": 0, "seq": 1, "op": ["a"]}))["version"]

    messages, code = await attack(ws_base, room_id, seq=MAX_SEQ, base=1)
    assert_forbidden(messages, code)

    for seq in (2, 3):
        ack = await victim.reply_to({"type": "op", "version": seq - 1, "seq": seq, "op": ["a"]})
        assert ack == {"type": "ack", "version": seq, "seq": seq}
    assert room_state(url, room_id) == ("aaahello", 3)
    assert [entry["seq"] for entry in history(url, room_id)] == [1, 2, 3]
    await victim.close()


async def test_a_resubmitted_op_is_a_duplicate_only_when_it_is_the_same_op(shared_server):
    url, ws_base = shared_server.http_url, shared_server.ws_base
    room_id = create_room(url, "hello")
    alice, init = await opened(ws_base, room_id, f"mode=ops&client={VICTIM}")
    bob, _ = await opened(ws_base, room_id, "mode=ops")
    await bob.reply_to({"type": "op", "version": 0, "seq": 1, "op": ["# "]})
    ack = await alice.reply_to({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})
    assert ack == {"type": "ack", "version": 2, "seq": 1}

    # The ack was lost: alice resumes from version 0 with her secret and resubmits seq 1.
    again, resumed = await opened(
        ws_base,
        room_id,
        f"mode=ops&client={VICTIM}&client_secret={init['client_secret']}&version=0",
    )
    assert resumed["version"] == 2
    same = await again.reply_to({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})
    assert same == {"type": "ack", "version": 2, "seq": 1, "duplicate": True}

    other = await again.reply_to({"type": "op", "version": 0, "seq": 1, "op": [5, "?"]})
    assert other["type"] == "error" and other["code"] == "bad_op", other
    assert "seq 1" in other["message"]
    assert room_state(url, room_id) == ("# hello!", 2)  # neither changed anything
    assert len(history(url, room_id)) == 2
    for socket in (alice, bob, again):
        await socket.close()


async def test_two_live_connections_under_one_client_id_keep_working_and_converge(
    shared_server,
):
    """The client's old socket is still open at the server (a half-open connection) with an op
    in flight when it resumes on a new one and resubmits that op: it is applied once, the old
    socket keeps its stream gap-free, and everyone ends on the same text."""
    url, ws_base = shared_server.http_url, shared_server.ws_base
    room_id = create_room(url, "hello")
    old, init = await opened(ws_base, room_id, f"mode=ops&client={VICTIM}")
    bob = OTClient(ws_base, room_id, "bob-editor-1", name="bob")
    await bob.connect()
    await old.send({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})  # its ack unread

    editor = OTClient(ws_base, room_id, VICTIM, name="victim")
    # The same client instance: its text shows the op in flight.
    editor.text, editor.version, editor.seq = "hello!", 0, 1
    editor.inflight = (1, [5, "!"])
    editor.client_secret = init["client_secret"]
    await editor.connect()  # resumes, then resubmits seq 1 unless init.ops acked it
    await bob.edit(["<b>"])
    await editor.edit([1, "e"])
    await bob.edit([2, "<b2>"])
    await editor.edit([{"d": 1}])
    for client in (editor, bob):
        await client.wait_until(lambda c=client: c.settled)
    code, version = room_state(url, room_id)
    await bob.wait_until(lambda: bob.version == version)
    await editor.wait_until(lambda: editor.version == version)
    assert editor.text == bob.text == code
    assert code.count("!") == 1

    # The old socket got every version once, in order, its own op's ack among them.
    await old.send({"type": "ping"})
    while (await old.recv())["type"] != "pong":
        pass
    versions = [
        m["version"]
        for m in old.received
        if m["type"] == "op" or (m["type"] == "ack" and not m.get("duplicate"))
    ]
    assert versions == list(range(1, version + 1)), old.received
    assert [m for m in old.received if m["type"] == "error"] == []
    text = "hello"
    for message in old.received:
        if message["type"] == "op":
            text = ot.apply(text, message["op"])
        elif message["type"] == "ack" and not message.get("duplicate"):
            # Committed through this socket: the op as applied is in the history.
            (entry,) = [e for e in history(url, room_id) if e["version"] == message["version"]]
            text = ot.apply(text, entry["op"])
    assert text == code
    await old.close()
    await editor.close()
    await bob.close()


async def test_a_client_id_stays_bound_across_a_restart(server: LiveServer):
    room_id = create_room(server.http_url, "hello")
    editor = OTClient(server.ws_base, room_id, VICTIM, name="victim")
    await editor.connect()
    await editor.edit([5, "!"])
    await editor.wait_until(lambda: editor.settled)
    await editor.drop()

    server.restart()
    messages, code = await attack(server.ws_base, room_id, seq=2, base=1)
    assert_forbidden(messages, code)

    editor.ws_base = server.ws_base
    await editor.connect()  # with the secret from before the restart
    await editor.edit(["> "])
    await editor.wait_until(lambda: editor.settled)
    assert room_state(server.http_url, room_id) == (editor.text, editor.version)
    assert editor.text == "> hello!"
    await editor.close()


async def test_a_new_secret_key_keeps_editors_whose_old_key_is_a_fallback(tmp_path):
    old_key, new_key = ("old-" + "k" * 60), ("new-" + "n" * 60)
    server = LiveServer(tmp_path / "server", env={"DJANGO_SECRET_KEY": old_key})
    with server:
        room_id = create_room(server.http_url, "hello")
        editor, init = await opened(server.ws_base, room_id, f"mode=ops&client={VICTIM}")
        await editor.close()
        query = f"mode=ops&client={VICTIM}&client_secret={init['client_secret']}"

        server.env["DJANGO_SECRET_KEY"] = new_key
        server.restart()  # the key changed, the old one forgotten
        assert_forbidden(*(await refusal(server.ws_base, room_id, query)))

        server.env["DJANGO_SECRET_KEY_FALLBACKS"] = old_key
        server.restart()
        again, resumed = await opened(server.ws_base, room_id, query)
        assert resumed["client_secret"] != init["client_secret"]  # reissued under the new key
        await again.close()
        fresh = f"mode=ops&client={VICTIM}&client_secret={resumed['client_secret']}"
        del server.env["DJANGO_SECRET_KEY_FALLBACKS"]
        server.restart()  # once the old key is dropped, the new secret still opens it
        latest, _ = await opened(server.ws_base, room_id, fresh)
        await latest.close()


# -- two processes (PostgreSQL and Redis) ----------------------------------------------------


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, redis_service, postgres_database):  # noqa: F811
    with running_processes(
        tmp_path_factory, postgres_database, service_env(redis_service, postgres_database)
    ) as servers:
        yield servers


@pytest.mark.services
async def test_a_client_id_bound_on_one_process_is_refused_on_another(two_processes):
    first, second = two_processes
    room_id = create_room(first.http_url, "hello")
    victim, init = await opened(first.ws_base, room_id, f"mode=ops&client={VICTIM}")
    await victim.reply_to({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})

    messages, code = await attack(second.ws_base, room_id, seq=2, base=1)
    assert_forbidden(messages, code)
    messages, code = await refusal(
        second.ws_base, room_id, f"mode=ops&client={init['user_id']}"
    )  # its user id, the default client id of a connection without client=, is bound too
    assert_forbidden(messages, code)

    # With its secret the victim resumes on the other process and keeps editing.
    secret = init["client_secret"]
    again, resumed = await opened(
        second.ws_base, room_id, f"mode=ops&client={VICTIM}&client_secret={secret}&version=1"
    )
    assert resumed["ops"] == []
    ack = await again.reply_to({"type": "op", "version": 1, "seq": 2, "op": ["> "]})
    assert ack == {"type": "ack", "version": 2, "seq": 2}
    assert room_state(first.http_url, room_id) == ("> hello!", 2)
    await victim.close()
    await again.close()


@pytest.mark.services
async def test_of_two_first_connections_on_two_processes_one_gets_the_client_id(two_processes):
    room_id = create_room(two_processes[0].http_url)
    outcomes = await asyncio.gather(
        *(
            refusal_or_init(server.ws_base, room_id, f"mode=ops&client={VICTIM}")
            for server in two_processes
        )
    )
    assert sorted(kind for kind, _ in outcomes) == ["forbidden", "init"], outcomes
    for _, socket in outcomes:
        if socket is not None:
            await socket.close()


async def refusal_or_init(ws_base: str, room_id: str, query: str) -> tuple[str, Socket | None]:
    socket = await Socket.open(ws_base, room_id, query)
    try:
        first = await socket.recv()
    except ConnectionClosed:
        return f"closed {socket.ws.close_code}", None
    if first["type"] == "init":
        return "init", socket
    assert first == {**first, "type": "error", "code": "forbidden"}, first
    with pytest.raises(ConnectionClosed):
        await socket.recv()
    assert socket.ws.close_code == 4403
    return "forbidden", None


@pytest.mark.services
async def test_one_seq_resubmitted_on_two_processes_is_applied_once(two_processes):
    """The client's old connection (process 1) and its new one (process 2) submit seq 1 at the
    same moment: one commits it, the other gets a duplicate ack; another op under that seq is
    refused, whichever process commits first."""
    first, second = two_processes
    room_id = create_room(first.http_url, "hello")
    old, init = await opened(first.ws_base, room_id, f"mode=ops&client={VICTIM}")
    secret = init["client_secret"]
    new, _ = await opened(
        second.ws_base, room_id, f"mode=ops&client={VICTIM}&client_secret={secret}&version=0"
    )
    op = {"type": "op", "version": 0, "seq": 1, "op": [5, "!"]}
    answers = await asyncio.gather(old.reply_to(op), new.reply_to(op))
    assert sorted(bool(a.get("duplicate")) for a in answers) == [False, True], answers
    assert {(a["version"], a["seq"]) for a in answers} == {(1, 1)}

    other = {"type": "op", "version": 0, "seq": 2, "op": ["A"]}
    different = {"type": "op", "version": 0, "seq": 2, "op": ["B"]}
    answers = await asyncio.gather(old.reply_to(other), new.reply_to(different))
    kinds = sorted(a.get("code") or "ack" for a in answers)
    assert kinds == ["ack", "bad_op"], answers
    code, version = room_state(first.http_url, room_id)
    assert version == 2 and code in {"Ahello!", "Bhello!"}
    await old.close()
    await new.close()
