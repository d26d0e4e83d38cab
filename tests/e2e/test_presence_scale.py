"""Presence at scale against real servers (docs/protocol.md sections 4 and 8): two connections
opened at the same moment never hear of a user already in their own `init.users`; above
COLLAB_PRESENCE_FULL_LIST_MAX users a room hears `presence` deltas; a room takes at most
COLLAB_ROOM_MAX_CONNECTIONS connections, over every process, and refuses the next with 4429.

The servers run with small limits (3 users with whole lists, 5 connections per room) so that a
handful of sockets reach them. Every wait is bounded; "nothing else arrived" is proved by a
ping answered by the very next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.e2e.server import LiveServer
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    postgres_database,
    postgres_service,
    redis_service,
    running_processes,
    service_env,
)

pytestmark = pytest.mark.e2e

WAIT_S = 10
FULL_LIST_MAX = 3
ROOM_MAX = 5
LIMITS = {
    "COLLAB_PRESENCE_FULL_LIST_MAX": str(FULL_LIST_MAX),
    "COLLAB_ROOM_MAX_CONNECTIONS": str(ROOM_MAX),
}
# Pairs opened at once per test: before the fix about one pair in three got a join for the
# other one listed in its init, on one process as across two.
RACE_TRIES = 20


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory) -> LiveServer:
    server = LiveServer(tmp_path_factory.mktemp("limited"), env=LIMITS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, redis_service, postgres_database):  # noqa: F811
    with running_processes(
        tmp_path_factory, postgres_database, service_env(redis_service, postgres_database, **LIMITS)
    ) as servers:
        yield servers


def create_room(server: LiveServer) -> str:
    response = httpx.post(f"{server.http_url}/rooms", json={"code": ""}, timeout=WAIT_S)
    assert response.status_code == 201, response.text
    return response.json()["room_id"]


class Socket:
    """One raw connection to a room: its init, and what it received since."""

    def __init__(self, server: LiveServer, room_id: str, name: str) -> None:
        self.url = f"{server.ws_base}/ws/{room_id}?mode=ops&name={name}"
        self.ws: Any = None
        self.first: dict[str, Any] = {}

    async def open(self) -> Socket:
        self.ws = await websockets.connect(self.url, open_timeout=WAIT_S, max_size=None)
        self.first = await self.receive()
        return self

    @property
    def init(self) -> dict[str, Any]:
        assert self.first["type"] == "init", self.first
        return self.first

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return json.loads(await self.ws.recv())

    async def until_pong(self) -> list[dict[str, Any]]:
        """Everything queued for this socket before the server answers a ping."""
        await self.ws.send(json.dumps({"type": "ping"}))
        received = []
        while (message := await self.receive())["type"] != "pong":
            received.append(message)
        return received

    async def close_code(self) -> int:
        async with asyncio.timeout(WAIT_S):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await self.ws.recv()
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


def ids(users: list[dict]) -> set[str]:
    return {user["id"] for user in users}


def arrivals(message: dict[str, Any]) -> list[dict]:
    """The users a presence message says entered or were renamed."""
    if message["type"] == "join":
        return [message["user"]]
    if message["type"] == "presence":
        return message["joined"]
    return []


def hear(message: dict[str, Any], listed: set[str], attempt: int) -> None:
    """Add the users `message` announces to `listed`, which must not know them yet."""
    for user in arrivals(message):
        assert user["id"] not in listed, (
            f"attempt {attempt}: {message['type']} for {user['name']}, already in this "
            f"connection's init.users"
        )
        listed.add(user["id"])


async def assert_pairs_opened_at_once_hear_only_news(servers: list[LiveServer]) -> None:
    for attempt in range(RACE_TRIES):
        room_id = create_room(servers[0])
        pair = [
            Socket(servers[number % len(servers)], room_id, f"p{attempt}x{number}")
            for number in range(2)
        ]
        await asyncio.gather(*(socket.open() for socket in pair))
        both = {pair[0].init["user_id"], pair[1].init["user_id"]}
        for socket in pair:
            listed = ids(socket.init["users"])
            # Across processes the other's join may still be on its way: wait for it, then
            # check that nothing more was queued.
            while listed != both:
                hear(await socket.receive(), listed, attempt)
            for message in await socket.until_pong():
                hear(message, listed, attempt)
        for socket in pair:
            await socket.close()


async def test_connections_opened_at_once_never_hear_of_a_user_listed_in_their_init(
    limited_server,
):
    await assert_pairs_opened_at_once_hear_only_news([limited_server])


async def test_above_the_full_list_size_joins_and_leaves_arrive_as_deltas(limited_server):
    room_id = create_room(limited_server)
    sockets = [await Socket(limited_server, room_id, f"u{n}").open() for n in range(FULL_LIST_MAX)]
    first = sockets[0]
    # Up to the full-list size: join with the whole list, exactly as before.
    joins = await first.until_pong()
    assert [m["type"] for m in joins] == ["join"] * (FULL_LIST_MAX - 1)
    assert set(joins[-1]) == {"type", "user", "users"}
    for socket in sockets[1:]:
        await socket.until_pong()
    # One more: a delta naming only the newcomer, with the room's size.
    newcomer = await Socket(limited_server, room_id, "newcomer").open()
    assert len(newcomer.init["users"]) == FULL_LIST_MAX + 1
    (mine,) = [u for u in newcomer.init["users"] if u["id"] == newcomer.init["user_id"]]
    for socket in sockets:
        delta = await socket.receive()
        assert delta == {"type": "presence", "joined": [mine], "left": [], "count": 4}
    await newcomer.close()
    # Its leave brings the room back to the full-list size: a leave with the whole list.
    for socket in sockets:
        leave = await socket.receive()
        assert leave["type"] == "leave" and leave["user"]["id"] == mine["id"], leave
        assert ids(leave["users"]) == {s.init["user_id"] for s in sockets}
    for socket in sockets:
        await socket.close()


def departures(message: dict[str, Any]) -> set[str]:
    """The ids of the users a presence message says left."""
    if message["type"] == "leave":
        return {message["user"]["id"]}
    if message["type"] == "presence":
        return ids(message["left"])
    return set()


async def assert_a_full_room_refuses_the_next_connection(servers: list[LiveServer]) -> None:
    room_id = create_room(servers[0])
    sockets = [
        await Socket(servers[n % len(servers)], room_id, f"u{n}").open() for n in range(ROOM_MAX)
    ]
    for server in servers:
        refused = await Socket(server, room_id, "one-too-many").open()
        assert (refused.first["type"], refused.first.get("code")) == ("error", "room_full")
        assert await refused.close_code() == 4429
    # Nobody heard of the refused ones.
    for socket in sockets:
        for message in await socket.until_pong():
            assert "one-too-many" not in {user["name"] for user in arrivals(message)}, message
    await sockets[0].close()
    # Its place is free once the room has heard it left (its server handles the close after
    # the client sees it).
    gone = sockets[0].init["user_id"]
    while gone not in departures(await sockets[1].receive()):
        pass
    again = await Socket(servers[-1], room_id, "again").open()
    assert len(again.init["users"]) == ROOM_MAX
    for socket in [*sockets[1:], again]:
        await socket.close()


async def test_a_full_room_refuses_the_next_connection_with_4429(limited_server):
    await assert_a_full_room_refuses_the_next_connection([limited_server])


@pytest.mark.services
async def test_across_processes_pairs_opened_at_once_hear_only_news(two_processes):
    await assert_pairs_opened_at_once_hear_only_news(two_processes)


@pytest.mark.services
async def test_the_connection_cap_holds_across_processes(two_processes):
    await assert_a_full_room_refuses_the_next_connection(two_processes)
