"""Scale-out (issue 4): several server processes share rooms through Redis and PostgreSQL.

Three real server processes (`manage.py runserver`) share one Redis (channel layer, presence)
and one PostgreSQL database (rooms, ops; the arbiter of versions). Clients on different
processes edit one room; ops clients lose their connection now and then and resume on a
different process. Afterwards every client, every process and the database must agree, the
history must replay to the text, and no token may be lost or doubled. Presence must be the same
everywhere, and a process killed with SIGKILL must lose nothing acknowledged while its users
leave everyone's lists within a bounded time. `manage.py serve --workers 2` must serve one room
consistently across its uvicorn workers.

The protocol: docs/protocol.md sections 5 (versions and order), 7.5 (resume) and 8 (presence,
and `leave` for a connection whose process died).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import websockets

from rooms import ot
from tests.e2e.server import PROJECT_ROOT, ServeProcess, free_port
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    PostgresDatabase,
    ServiceServer,
    postgres_database,
    postgres_service,
    redis_service,
    running_processes,
    service_env,
    start_all,
)
from tests.e2e.test_convergence import TOKEN, at
from tests.support.ot_client import OTClient

pytestmark = [pytest.mark.services, pytest.mark.e2e]

PRESENCE_TTL_S = 3
SCALE_ENV = {"COLLAB_PRESENCE_TTL_S": str(PRESENCE_TTL_S), "COLLAB_VERSION_POLL_S": "0.5"}
# A killed process's users must be gone from every list within this bound (TTL 3 s, heartbeat
# and sweep every TTL/3: about 4 s expected).
LEAVE_BOUND_S = 15
WAIT_S = 20  # bound on any single wait for messages

# Ops clients type `<client.n>` (TOKEN) and delete whole ones; text-mode clients type
# `[name.n]`. Different brackets keep a text-mode insert exact: `sync_code` becomes the
# one-region prefix/suffix diff (docs/protocol.md section 6), which would slide an insert of
# `<a.1>` before `<b.2>` one character into `<b.2>` (common prefix `<`), and a concurrent
# delete of `<b.2>` would then legitimately leave a broken token.
ANY_TOKEN = re.compile(r"<[a-z0-9]+\.[0-9]+>|\[[a-z0-9]+\.[0-9]+\]")


def boundaries(text: str) -> list[int]:
    """Positions between tokens (the text is only ever a sequence of tokens)."""
    return [0] + [m.end() for m in ANY_TOKEN.finditer(text)]


def parse_tokens(text: str) -> list[str]:
    tokens = ANY_TOKEN.findall(text)
    assert "".join(tokens) == text, f"text is not a sequence of intact tokens: {text!r}"
    return tokens


# -- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_processes(tmp_path_factory, redis_service, postgres_database):  # noqa: F811
    with running_processes(
        tmp_path_factory,
        postgres_database,
        service_env(redis_service, postgres_database, **SCALE_ENV),
        count=3,
    ) as servers:
        yield servers


@pytest.fixture
def cluster(cluster_processes) -> list[ServiceServer]:
    """The three processes, all running (one a previous test killed is started again)."""
    dead = [server for server in cluster_processes if not server.alive]
    for server in dead:
        server.kill()  # reap it, if it died on its own
    if dead:
        start_all(dead)
    return cluster_processes


async def create_room(http_url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{http_url}/rooms/create")
        assert response.status_code == 200, response.text
        return response.json()["room_id"]


async def get_json(url: str) -> dict:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text)
        return response.json()


# -- clients ---------------------------------------------------------------------------------

CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    websockets.ConnectionClosed,
    websockets.InvalidHandshake,
)


class RoamingClient(OTClient):
    """An OTClient that resumes on a different process each time it reconnects.

    `bases` is shared between clients: the ws bases of the processes still running."""

    def __init__(self, bases: list[str], first: int, room_id: str, client_id: str) -> None:
        super().__init__(bases[first % len(bases)], room_id, client_id, name=client_id[:20])
        self.bases = bases
        self.user_id: str | None = None
        self.connections: list[tuple[str, str]] = []  # (ws base, user id) of each connection
        self._connecting = False
        self._side_tasks: set[asyncio.Task] = set()

    async def connect(self) -> None:
        self.user_id = None
        self._connecting = True
        try:
            await super().connect()
        finally:
            self._connecting = False

    def _take_remote(self, entry: dict) -> None:
        ours = (
            self.inflight is not None
            and entry["client"] == self.client_id
            and entry["seq"] == self.inflight[0]
        )
        super()._take_remote(entry)
        if ours and not self._connecting:
            # Our in-flight op came back as a live broadcast: its first commit went through an
            # earlier connection (the one we dropped) after this one had started. OTClient
            # takes it as the ack but, unlike a real ack, does not send what is pending, and
            # then ignores the duplicate ack that follows: send it here, as an ack would.
            task = asyncio.get_running_loop().create_task(self._flush_after_ack())
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    async def _flush_after_ack(self) -> None:
        if self.inflight is None and self.socket is not None:
            await self._flush_pending()  # if the send fails, resume resends it

    async def _recv(self, kind: str) -> dict:
        message = await super()._recv(kind)
        if kind == "init":
            self.user_id = message["user_id"]
            self.connections.append((self.ws_base, self.user_id))
        return message

    def roam(self) -> None:
        """Point the next connection at another running process."""
        if self.ws_base in self.bases:
            index = (self.bases.index(self.ws_base) + 1) % len(self.bases)
        else:
            index = len(self.connections) % len(self.bases)
        self.ws_base = self.bases[index]


class RoamingTypist:
    """Types whole tokens through a RoamingClient (and deletes some, like test_convergence's
    Typist); drops its connection at random and resumes on another process; survives its
    process being killed."""

    def __init__(
        self, client: RoamingClient, rng: random.Random, deletes: bool, drop_rate: float = 0.08
    ) -> None:
        self.client = client
        self.rng = rng
        self.deletes = deletes
        self.drop_rate = drop_rate
        self.typed: list[str] = []
        self.deleted: set[str] = set()

    async def ensure_connected(self) -> None:
        client = self.client
        error: BaseException | None = None
        for _ in range(2 * len(client.bases) + 2):
            if client.failure is not None:
                raise AssertionError(
                    f"{client.client_id}: {client.failure!r}; its last events:\n"
                    + "\n".join(client.trace[-25:])
                ) from client.failure
            if client.connected:
                return
            if client.connections:
                client.roam()  # every reconnection goes to a different process
            try:
                await client.connect()
                return
            except CONNECTION_ERRORS as failed:
                error = failed
                await client.drop()
        raise AssertionError(
            f"{client.client_id} could not resume on any of {client.bases}: {error!r}\n"
            + "\n".join(client.trace[-20:])
        )

    async def run(self, edits: int | None = None, stop: asyncio.Event | None = None) -> None:
        number = 0
        while (edits is None or number < edits) and not (stop is not None and stop.is_set()):
            await self.ensure_connected()
            text = self.client.text
            tokens = list(TOKEN.finditer(text))
            if self.deletes and tokens and self.rng.random() < 0.25:
                victim = self.rng.choice(tokens)
                self.deleted.add(victim.group())
                op = at(victim.start(), {"d": victim.end() - victim.start()})
            else:
                token = f"<{self.client.client_id}.{number}>"
                self.typed.append(token)
                op = at(self.rng.choice(boundaries(text)), token)
            await self.client.edit(op)  # if its process went away, the edit is resent on resume
            if self.rng.random() < self.drop_rate:
                await self.client.drop()
            number += 1
            await asyncio.sleep(self.rng.random() * 0.01)  # uneven typing, not synchronisation
        await self.settle()

    async def settle(self) -> None:
        """Reconnect if needed and wait (bounded) until every edit is acknowledged."""
        try:
            async with asyncio.timeout(WAIT_S):
                while True:
                    await self.ensure_connected()
                    try:
                        await self.client.wait_until(lambda: self.client.settled, WAIT_S)
                        return
                    except ConnectionError:
                        continue  # its process died while we waited: resume elsewhere
        except TimeoutError:
            raise AssertionError(
                f"{self.client.client_id}: edits not acknowledged within {WAIT_S} s "
                f"(in flight: {self.client.inflight}); its last events:\n"
                + "\n".join(self.client.trace[-25:])
            ) from None


class Peer:
    """A raw WebSocket connection that records the messages it receives (presence checks)."""

    def __init__(self, ws_base: str, room_id: str, name: str, mode: str = "ops") -> None:
        self.url = f"{ws_base}/ws/{room_id}?mode={mode}&name={name}"
        self.name = name
        self.messages: list[dict] = []  # everything but the (many) change broadcasts
        self.changes = 0
        self.closed = False
        self.init: dict = {}
        self._changed = asyncio.Event()
        self._socket = None
        self._reader: asyncio.Task | None = None

    @property
    def user_id(self) -> str:
        return self.init["user_id"]

    async def open(self) -> Peer:
        self._socket = await websockets.connect(self.url, open_timeout=10, max_size=None)
        async with asyncio.timeout(WAIT_S):
            self.init = json.loads(await self._socket.recv())
        assert self.init["type"] == "init", self.init
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self._socket:
                message = json.loads(raw)
                if message["type"] in {"op", "sync_code"}:
                    self.changes += 1
                else:
                    self.messages.append(message)
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._changed.set()

    def of_type(self, kind: str) -> list[dict]:
        return [message for message in self.messages if message["type"] == kind]

    def left(self) -> Counter:
        """How many `leave` messages this peer received about each user id."""
        return Counter(message["user"]["id"] for message in self.of_type("leave"))

    async def wait_for(self, condition, timeout: float = WAIT_S, what: str = "") -> None:
        """Wait, bounded, until `condition()` holds; every received message re-checks it."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    if condition():
                        return
                    if self.closed:
                        raise AssertionError(f"{self.name} closed while waiting for {what}")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {what} within {timeout} s; got {self.messages[-10:]}"
            ) from None

    async def send(self, message: dict) -> None:
        await self._socket.send(json.dumps(message))

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


class TextWriter:
    """A text-mode client (sync_code with the version its text was made on) that stays open so
    its final text and version can be compared with everyone else's."""

    def __init__(self, ws_base: str, room_id: str, name: str, rng: random.Random) -> None:
        self.url = f"{ws_base}/ws/{room_id}?name={name}"
        self.name = name
        self.rng = rng
        self.typed: list[str] = []
        self.acks = 0
        self.text = ""
        self.version = 0
        self.socket = None

    async def open(self) -> TextWriter:
        self.socket = await websockets.connect(self.url, open_timeout=10, max_size=None)
        async with asyncio.timeout(WAIT_S):
            init = json.loads(await self.socket.recv())
        self.text, self.version = init["code"], init["version"]
        return self

    async def _next(self) -> dict:
        message = json.loads(await self.socket.recv())
        if message["type"] == "sync_code":
            assert message["version"] == self.version + 1, (self.name, message, self.version)
            self.text, self.version = message["code"], message["version"]
        else:
            assert message["type"] in {"ack", "join", "leave"}, (self.name, message)
        return message

    async def run(self, edits: int) -> None:
        for number in range(edits):
            token = f"[{self.name}.{number}]"
            self.typed.append(token)
            # Where the server's diff of the whole text is exactly this insert (the end of
            # the text always is): between two ops tokens, at the start or at the end.
            exact = [
                p
                for p in boundaries(self.text)
                if ot.diff(self.text, self.text[:p] + token + self.text[p:])
                == ot.normalize(at(p, token))
            ]
            position = self.rng.choice(exact)
            sent = self.text[:position] + token + self.text[position:]
            await self.socket.send(
                json.dumps({"type": "sync_code", "code": sent, "version": self.version})
            )
            async with asyncio.timeout(WAIT_S):
                while (message := await self._next())["type"] != "ack":
                    pass
            assert message["version"] == self.version + 1, (self.name, message, self.version)
            self.text, self.version = message.get("code", sent), message["version"]
            self.acks += 1
            await asyncio.sleep(self.rng.random() * 0.01)  # uneven typing, not synchronisation

    async def wait_for_version(self, version: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.version < version:
                await self._next()

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()


async def close_all(*groups) -> None:
    for group in groups:
        for client in group:
            with contextlib.suppress(Exception):
                await client.close()


# -- agreement ---------------------------------------------------------------------------------


def replay(history: dict) -> str:
    """The text the history rebuilds from the room's initial code ("" for /rooms/create)."""
    text = ""
    for entry in history["ops"]:
        text = ot.apply(text, entry["op"])
    return text


async def assert_everyone_agrees(
    http_urls: list[str],
    database: PostgresDatabase,
    room_id: str,
    ops_clients: list[OTClient],
    writers: list[TextWriter] = (),
) -> tuple[str, int, dict]:
    """Every client, every process and the database hold the same text at the same version,
    the history (exactly versions 1..N) replays to it, and no server closed an ops client's
    connection unless the test killed that server. Returns (text, version, history)."""
    code, version = database.room(room_id)
    for client in ops_clients:
        await client.wait_until(lambda c=client: c.version >= version, timeout=WAIT_S)
        assert (client.text, client.version) == (code, version), client.client_id
    for writer in writers:
        await writer.wait_for_version(version)
        assert (writer.text, writer.version) == (code, version), writer.name
    history = None
    for http_url in http_urls:
        room = await get_json(f"{http_url}/rooms/{room_id}")
        assert (room["code"], room["version"]) == (code, version), http_url
        from_here = await get_json(f"{http_url}/rooms/{room_id}/history")
        assert history is None or from_here == history, http_url
        history = from_here
    assert history["version"] == version
    assert [entry["version"] for entry in history["ops"]] == list(range(1, version + 1))
    assert database.op_versions(room_id) == list(range(1, version + 1))
    assert replay(history) == code
    for client in ops_clients:
        assert client.unexpected_closes == [], client.client_id
    return code, version, history


def ids(users: list[dict]) -> set[str]:
    return {user["id"] for user in users}


def pairs(items: list) -> list[tuple]:
    return list(itertools.pairwise(items))


# -- 1. convergence across processes --------------------------------------------------------


async def test_clients_on_three_processes_converge_with_each_other_and_the_database(
    cluster,
    postgres_database,  # noqa: F811
):
    rng = random.Random(4)
    bases = [server.ws_base for server in cluster]
    room_id = await create_room(cluster[0].http_url)
    clients = [RoamingClient(bases, n, room_id, f"scale{n}client") for n in range(6)]
    typists = [RoamingTypist(c, random.Random(rng.random()), deletes=True) for c in clients]
    writers = [
        TextWriter(bases[n], room_id, f"text{n}", random.Random(rng.random())) for n in range(3)
    ]
    try:
        for writer in writers:
            await writer.open()
        async with asyncio.timeout(60):
            await asyncio.gather(*(t.run(40) for t in typists), *(w.run(12) for w in writers))

        code, version, _ = await assert_everyone_agrees(
            [server.http_url for server in cluster], postgres_database, room_id, clients, writers
        )
        # Clients really moved between processes: every reconnection went to another process.
        for client in clients:
            used = [base for base, _ in client.connections]
            assert all(a != b for a, b in pairs(used)), (client.client_id, used)
        assert sum(len(c.connections) for c in clients) > len(clients), "no client reconnected"
        assert {base for c in clients for base, _ in c.connections} == set(bases)

        deleted = set().union(*(t.deleted for t in typists))
        expected = [tok for t in typists for tok in t.typed if tok not in deleted]
        expected += [tok for w in writers for tok in w.typed]
        assert sorted(parse_tokens(code)) == sorted(expected)
        assert version == sum(len(c.acked_seqs) for c in clients) + sum(w.acks for w in writers)
    finally:
        await close_all(clients, writers)


# -- 2. presence is the same everywhere ---------------------------------------------------------


async def test_every_process_lists_the_same_users_and_broadcasts_them(cluster):
    room_id = await create_room(cluster[1].http_url)
    peers: list[Peer] = []
    try:
        # Six users, two per process, arriving one after the other.
        for number in range(6):
            peer = await Peer(cluster[number % 3].ws_base, room_id, f"user{number}").open()
            peers.append(peer)
            assert ids(peer.init["users"]) == {p.user_id for p in peers}, (
                peer.init["users"],
                [(p.user_id, p.name) for p in peers],
            )

        # Each join broadcast, on every process, lists everyone present at that moment.
        for number, peer in enumerate(peers):
            later = peers[number + 1 :]
            expected = len(later)
            await peer.wait_for(
                lambda p=peer, n=expected: len(p.of_type("join")) >= n, what="joins"
            )
            for join in peer.of_type("join"):
                # `users` is every connected user, so it includes the receiver; a join about a
                # user already in the receiver's init is stale news of an entry before it.
                assert peer.user_id in ids(join["users"]), (
                    f"{peer.name} got a join whose users omit it: {join['user']['name']} "
                    f"entered before {peer.name} (listed in its init: "
                    f"{join['user']['id'] in ids(peer.init['users'])}) but the broadcast "
                    f"came after its init: {join}"
                )
            joins = {message["user"]["id"]: message for message in peer.of_type("join")}
            assert set(joins) == {p.user_id for p in later}, peer.name
            for arrival, other in enumerate(later, start=number + 1):
                join = joins[other.user_id]
                assert join["user"]["name"] == other.name
                # The list is read when the join is delivered: everyone up to the newcomer,
                # and possibly later arrivals too, never anyone who was not there.
                listed = ids(join["users"])
                assert {p.user_id for p in peers[: arrival + 1]} <= listed
                assert listed <= {p.user_id for p in peers}

        everyone = {(p.user_id, p.name) for p in peers}
        lists = [
            (await get_json(f"{server.http_url}/rooms/{room_id}"))["users"] for server in cluster
        ]
        for users in lists:
            assert {(u["id"], u["name"]) for u in users} == everyone
        assert lists[0] == lists[1] == lists[2]

        # A rename on one process reaches the others' lists and broadcasts.
        renamed = peers[0]
        await renamed.send({"type": "join", "name": "renamed-zero"})
        for peer in peers[1:]:
            await peer.wait_for(
                lambda p=peer: any(
                    m["user"] == {**m["user"], "id": renamed.user_id, "name": "renamed-zero"}
                    for m in p.of_type("join")
                ),
                what="the rename",
            )
        renames = [
            [m for m in peer.of_type("join") if m["user"]["id"] == renamed.user_id][-1]
            for peer in peers[1:]
        ]
        for rename in renames:
            assert {(u["id"], u["name"]) for u in rename["users"]} == (
                everyone - {(renamed.user_id, renamed.name)}
            ) | {(renamed.user_id, "renamed-zero")}
        for server in cluster:
            users = (await get_json(f"{server.http_url}/rooms/{room_id}"))["users"]
            assert {u["id"]: u["name"] for u in users}[renamed.user_id] == "renamed-zero"

        # A user leaving on one process leaves every list.
        leaving = peers[4]
        await leaving.send({"type": "leave"})
        await leaving.wait_for(lambda: leaving.closed, what="the close after leave")
        stayed = [p for p in peers if p is not leaving]
        for peer in stayed:
            await peer.wait_for(lambda p=peer: p.left()[leaving.user_id] >= 1, what="the leave")
            (leave,) = [m for m in peer.of_type("leave") if m["user"]["id"] == leaving.user_id]
            assert leave["user"]["name"] == leaving.name
            assert ids(leave["users"]) == {p.user_id for p in stayed}
        for server in cluster:
            users = (await get_json(f"{server.http_url}/rooms/{room_id}"))["users"]
            assert ids(users) == {p.user_id for p in stayed}, server.http_url
    finally:
        await close_all(peers)


# -- 5. concurrent commits from two processes ----------------------------------------------------


class Hammer:
    """An ops connection that sends many ops on stale bases, a few in flight at once, and
    records every version it is told about (broadcasts and acks) in arrival order."""

    WINDOW = 4

    def __init__(self, ws_base: str, room_id: str, client_id: str, rng: random.Random) -> None:
        self.url = f"{ws_base}/ws/{room_id}?mode=ops&client={client_id}&name={client_id[:20]}"
        self.client_id = client_id
        self.rng = rng
        self.seen: list[int] = []  # versions of broadcasts and acks, in arrival order
        self.acks: dict[int, int] = {}  # seq -> version
        self.tokens: list[str] = []
        self.socket = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self.error: BaseException | None = None

    async def open(self) -> Hammer:
        self.socket = await websockets.connect(self.url, open_timeout=10, max_size=None)
        async with asyncio.timeout(WAIT_S):
            init = json.loads(await self.socket.recv())
        assert init["version"] == 0, init
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                message = json.loads(raw)
                if message["type"] == "op":
                    self.seen.append(message["version"])
                elif message["type"] == "ack":
                    assert not message.get("duplicate"), message
                    assert message["seq"] not in self.acks, message
                    self.acks[message["seq"]] = message["version"]
                    self.seen.append(message["version"])
                else:
                    assert message["type"] in {"join", "leave"}, message
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        except BaseException as error:
            self.error = error
            raise
        finally:
            self._changed.set()

    async def _wait(self, condition) -> None:
        async with asyncio.timeout(WAIT_S):
            while True:
                self._changed.clear()
                if self.error is not None:
                    raise self.error
                if condition():
                    return
                assert self._reader is not None and not self._reader.done(), "socket closed"
                await self._changed.wait()

    async def run(self, count: int) -> None:
        for seq in range(1, count + 1):
            await self._wait(lambda s=seq: s - 1 - len(self.acks) < self.WINDOW)
            known = self.seen[-1] if self.seen else 0
            # A base anywhere between 0 and the newest version known here: usually stale.
            base = self.rng.randint(0, known)
            token = f"<{self.client_id}.{seq}>"
            self.tokens.append(token)
            # Position 0 exists at every version; the server moves it past concurrent ops.
            message = {"type": "op", "version": base, "seq": seq, "op": [token]}
            await self.socket.send(json.dumps(message))
        await self._wait(lambda: len(self.acks) == count)

    async def wait_for_version(self, version: int) -> None:
        await self._wait(lambda: bool(self.seen) and self.seen[-1] >= version)

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


async def test_two_processes_committing_to_one_room_never_share_or_lose_a_version(
    cluster,
    postgres_database,  # noqa: F811
):
    rng = random.Random(5)
    room_id = await create_room(cluster[0].http_url)
    hammers = [
        Hammer(cluster[n % 2].ws_base, room_id, f"race{n}client", random.Random(rng.random()))
        for n in range(6)
    ]
    per_client = 30
    try:
        for hammer in hammers:
            await hammer.open()
        async with asyncio.timeout(60):
            await asyncio.gather(*(h.run(per_client) for h in hammers))
        total = sum(len(h.acks) for h in hammers)
        assert total == per_client * len(hammers)

        # No two changes got the same version, and none is missing.
        ack_versions = sorted(v for h in hammers for v in h.acks.values())
        assert ack_versions == list(range(1, total + 1))
        code, version = postgres_database.room(room_id)
        assert version == total
        assert postgres_database.op_versions(room_id) == list(range(1, total + 1))

        # Each connection, on either process, saw every version once, in order (protocol.md 5).
        for hammer in hammers:
            await hammer.wait_for_version(total)
            assert hammer.seen == list(range(1, total + 1)), hammer.client_id

        for server in cluster[:2]:
            history = await get_json(f"{server.http_url}/rooms/{room_id}/history")
            assert [e["version"] for e in history["ops"]] == list(range(1, total + 1))
            committed = Counter((e["client"], e["seq"]) for e in history["ops"])
            sent = Counter((h.client_id, seq) for h in hammers for seq in h.acks)
            assert committed == sent
            for entry in history["ops"]:
                hammer = next(h for h in hammers if h.client_id == entry["client"])
                assert hammer.acks[entry["seq"]] == entry["version"]
            assert replay(history) == code
            room = await get_json(f"{server.http_url}/rooms/{room_id}")
            assert (room["code"], room["version"]) == (code, version)
        assert sorted(parse_tokens(code)) == sorted(t for h in hammers for t in h.tokens)
    finally:
        await close_all(hammers)


class GroupTap:
    """Counts the change announcements published on a room's changes group in Redis (the
    channel-layer group rooms/following.py announces on)."""

    def __init__(self, redis_url: str, room_id: str) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(redis_url)
        self.channel = f"asgi__group__changes.{room_id}"  # channels_redis' pub/sub naming
        self.changes = 0
        self.pubsub = None
        self.reader: asyncio.Task | None = None

    async def __aenter__(self) -> GroupTap:
        self.pubsub = self.client.pubsub()
        await self.pubsub.subscribe(self.channel)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            # msgpack keeps the event's type as plain bytes
            if message["type"] == "message" and b"room.change" in message["data"]:
                self.changes += 1

    async def __aexit__(self, *exc_info) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.pubsub.aclose()
        await self.client.aclose()


async def test_changes_are_published_only_while_another_process_follows_the_room(
    cluster,
    redis_service,  # noqa: F811
):
    room_id = await create_room(cluster[0].http_url)
    bases = [server.ws_base for server in cluster]
    writer = RoamingClient(bases, 0, room_id, "alonewriter")
    reader = RoamingClient(bases, 0, room_id, "alonereader")
    late = RoamingClient(bases, 1, room_id, "latereader")
    try:
        async with GroupTap(redis_service, room_id) as tap:
            await writer.connect()
            await reader.connect()
            for number in range(10):
                await writer.edit(at(0, f"<alonewriter.{number}>"))
            await writer.wait_until(lambda: writer.settled, timeout=WAIT_S)
            await reader.wait_until(lambda: reader.version == writer.version, timeout=WAIT_S)
            assert writer.version >= 2
            # Every connection is on one process: nobody else to tell.
            assert tap.changes == 0

            await late.connect()  # another process follows the room from now on
            for number in range(10, 20):
                await writer.edit(at(0, f"<alonewriter.{number}>"))
            await writer.wait_until(lambda: writer.settled, timeout=WAIT_S)
            for client in (reader, late):
                await client.wait_until(lambda c=client: c.version == writer.version, WAIT_S)
                assert client.text == writer.text
            assert len(parse_tokens(writer.text)) == 20
            assert tap.changes >= 1
    finally:
        await close_all([writer, reader, late])


# -- 4. manage.py serve --workers 2 ------------------------------------------------------------


def socket_owners(server_port: int, client_ports: list[int], pids: list[int]) -> dict[int, int]:
    """Which process holds the server end of each client connection (Linux /proc), as
    {client port: pid}; empty where /proc is not available."""
    inode_pid: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inode_pid[link[8:-1]] = pid
    owners: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                inode = fields[9]
                if local_port == server_port and remote_port in client_ports and inode in inode_pid:
                    owners[remote_port] = inode_pid[inode]
    return owners


async def test_serve_with_two_workers_serves_one_room_consistently(
    redis_service,  # noqa: F811
    postgres_database,  # noqa: F811
):
    env = service_env(redis_service, postgres_database, **SCALE_ENV)
    postgres_database.ensure_migrated({**os.environ, **env})
    # At random, as a proxy that knows nothing of rooms would send them: misrouted connections
    # must work through the database and Redis (room affinity is only an optimisation).
    serve = ServeProcess(env, workers=2, args=("--route", "random")).start()
    clients: list[RoamingClient] = []
    writers: list[TextWriter] = []
    try:
        await asyncio.to_thread(serve.wait_ready)
        rng = random.Random(6)
        room_id = await create_room(serve.http_url)
        bases = [serve.ws_base]
        # Eight connections, spread at random over the workers (checked below).
        clients = [RoamingClient(bases, 0, room_id, f"serve{n}client") for n in range(6)]
        for client in clients:
            await client.connect()
        writers = [
            await TextWriter(serve.ws_base, room_id, f"stext{n}", random.Random(n)).open()
            for n in range(2)
        ]
        # Random is not always even: reconnect single clients (bounded) until the room spans
        # both workers. Linux only (/proc).
        for attempt in range(24):
            owners = socket_owners(
                serve.port,
                [c.socket.local_address[1] for c in clients]
                + [w.socket.local_address[1] for w in writers],
                serve.worker_pids,
            )
            if not owners or set(owners.values()) == set(serve.worker_pids):
                break
            moved = clients[attempt % len(clients)]
            await moved.drop()
            await moved.connect()
        if owners:
            assert set(owners.values()) == set(serve.worker_pids), (owners, serve.worker_pids)

        typists = [RoamingTypist(c, random.Random(rng.random()), deletes=True) for c in clients]
        async with asyncio.timeout(60):
            await asyncio.gather(*(t.run(30) for t in typists), *(w.run(10) for w in writers))

        code, version, _ = await assert_everyone_agrees(
            [serve.http_url], postgres_database, room_id, clients, writers
        )
        deleted = set().union(*(t.deleted for t in typists))
        expected = [tok for t in typists for tok in t.typed if tok not in deleted]
        expected += [tok for w in writers for tok in w.typed]
        assert sorted(parse_tokens(code)) == sorted(expected)
        assert version == sum(len(c.acked_seqs) for c in clients) + sum(w.acks for w in writers)
    finally:
        await close_all(clients, writers)
        serve.stop()


def test_serve_with_two_workers_refuses_to_start_without_redis():
    env = {**os.environ, "REDIS_URL": "", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--workers", "2", "--port", str(free_port())],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr + result.stdout, result


# -- 3. a process killed with SIGKILL (last: the next test restarts it) ------------------------


def server_errors(servers: list[ServiceServer]) -> str:
    """The error lines (and what follows them) of the servers' logs, for failure messages."""
    found = []
    for server in servers:
        log = server.log
        for index, line in enumerate(log):
            if "Traceback" in line or "ERROR" in line or "Exception" in line:
                found.append(f"[{server.ws_base}] " + "".join(log[index : index + 12]))
    return "\n".join(found[-8:]) or "(none)"


def tokens_in(op: list) -> set[str]:
    return {token for part in op if isinstance(part, str) for token in TOKEN.findall(part)}


async def test_a_killed_process_loses_nothing_acked_and_its_users_leave_in_bounded_time(
    cluster,
    postgres_database,  # noqa: F811
):
    bases = [server.ws_base for server in cluster]
    room_id = await create_room(cluster[1].http_url)
    clients = [RoamingClient(bases, n, room_id, f"kill{n}client") for n in range(6)]
    typists = [
        RoamingTypist(c, random.Random(n), deletes=False, drop_rate=0.03)
        for n, c in enumerate(clients)
    ]
    # One watcher per process, connected before anyone else: they see every join and leave.
    watchers = [await Peer(s.ws_base, room_id, f"watch{n}").open() for n, s in enumerate(cluster)]
    stop = asyncio.Event()
    load: list[asyncio.Task] = []
    try:
        for client in clients:
            await client.connect()
        load = [asyncio.create_task(t.run(stop=stop)) for t in typists]

        # Kill in the middle of the load, once a good number of changes were acknowledged.
        async with asyncio.timeout(30):
            while sum(len(c.acked_ops) for c in clients) < 60:
                await asyncio.wait(load, timeout=0.05)
                for task in load:
                    if task.done():
                        task.result()
        # The victim: the process serving the most clients right now.
        on = {
            server.ws_base: [
                c for c in clients if c.connected and c.user_id and c.ws_base == server.ws_base
            ]
            for server in cluster
        }
        number = max(range(3), key=lambda n: len(on[cluster[n].ws_base]))
        victim, survivors = cluster[number], cluster[:number] + cluster[number + 1 :]
        victims = on[victim.ws_base]
        watchers.insert(0, watchers.pop(number))  # watchers[0] is the victim's, as is its user
        killed_users = {c.user_id for c in victims} | {watchers[0].user_id}
        acked_at_kill = {c.client_id: len(c.acked_ops) for c in clients}
        assert victims, "no client was connected to any process"
        for client in clients:
            client.expect_server_loss(victim.ws_base)
        victim.kill()
        bases.remove(victim.ws_base)

        # The load goes on; the killed process's users leave the survivors' lists. No event
        # but these messages exists to wait on: wait for them, bounded.
        for watcher in watchers[1:]:
            await watcher.wait_for(
                lambda w=watcher: killed_users <= set(w.left()),
                timeout=LEAVE_BOUND_S,
                what=f"leaves of the killed process's users {killed_users}",
            )
        stop.set()
        async with asyncio.timeout(40):
            for task in load:
                await task
        # Its clients resumed on another process and went on being acknowledged there.
        for client in victims:
            assert client.ws_base in bases, client.client_id
            assert len(client.acked_ops) > acked_at_kill[client.client_id] + 2, client.client_id

        code, _, _ = await assert_everyone_agrees(
            [server.http_url for server in survivors], postgres_database, room_id, clients
        )
        final_tokens = parse_tokens(code)
        acked = set().union(*(tokens_in(op) for c in clients for op in c.acked_ops))
        assert acked <= set(final_tokens)
        assert sorted(final_tokens) == sorted(tok for t in typists for tok in t.typed)

        # Presence: every ended connection left exactly once, on every surviving process;
        # nobody still connected was said to leave; every list holds exactly who is here.
        current = {c.user_id for c in clients} | {w.user_id for w in watchers[1:]}
        ended = {uid for c in clients for _, uid in c.connections} - current
        ended |= {watchers[0].user_id}
        assert killed_users <= ended
        where = {uid: (c.client_id, base) for c in clients for base, uid in c.connections}
        for watcher in watchers[1:]:
            try:
                await watcher.wait_for(
                    lambda w=watcher: ended <= set(w.left()),
                    timeout=LEAVE_BOUND_S,
                    what="a leave for every ended connection",
                )
            except AssertionError:
                missing = {
                    uid: (*where.get(uid, ("watcher", victim.ws_base)), uid in killed_users)
                    for uid in ended - set(watcher.left())
                }
                raise AssertionError(
                    f"{watcher.name}: no leave within {LEAVE_BOUND_S} s for these ended "
                    f"connections (client, process, on the killed process when it died): "
                    f"{missing}; killed process {victim.ws_base}; server errors:\n"
                    + server_errors(cluster)
                ) from None
            left = watcher.left()
            assert all(count == 1 for count in left.values()), {
                uid: count for uid, count in left.items() if count > 1
            }
            assert not current & set(left), current & set(left)
            for message in watcher.of_type("leave"):
                assert message["user"]["id"] not in ids(message["users"])
        for server in survivors:
            users = (await get_json(f"{server.http_url}/rooms/{room_id}"))["users"]
            assert ids(users) == current, server.http_url
    finally:
        stop.set()
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        await close_all(clients, watchers)
