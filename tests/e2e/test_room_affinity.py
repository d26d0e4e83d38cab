"""Room affinity under `manage.py serve --workers N` (issue 15): every connection to a room
reaches the room's home worker, HTTP keeps working on the one port, and a worker killed with
SIGKILL hands its rooms to the standby (or, with `--standby 0`, to its restart) without losing
anything acknowledged.

Real processes: `manage.py serve --workers 2` on Redis and a fresh PostgreSQL database; real
WebSocket clients. Which process served a connection is read from the `X-Collab-Process` header
of its handshake (rooms/affinity.py). docs/deploying.md, "Room affinity".
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import defaultdict

import httpx
import pytest
import websockets

from rooms.affinity import home_of
from tests.e2e.server import ServeProcess
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    postgres_database,
    postgres_service,
    redis_service,
    service_env,
)
from tests.e2e.test_scale_out import (
    SCALE_ENV,
    RoamingClient,
    RoamingTypist,
    assert_everyone_agrees,
    close_all,
    create_room,
    parse_tokens,
    tokens_in,
)

pytestmark = [pytest.mark.services, pytest.mark.e2e]

WORKERS = 2
ROOMS_PER_WORKER = 2
WAIT_S = 30  # bound on any single wait


@pytest.fixture
def serve(request, redis_service, postgres_database):  # noqa: F811
    """`serve --workers 2` (with `standby` standby workers: 1 unless the test says otherwise)."""
    standby = getattr(request, "param", 1)
    env = service_env(redis_service, postgres_database, **SCALE_ENV)
    postgres_database.ensure_migrated({**os.environ, **env})
    process = ServeProcess(env, workers=WORKERS, standby=standby).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def served_by(socket) -> int:
    """The pid of the process that accepted a WebSocket (its handshake's header)."""
    return int(socket.response.headers["X-Collab-Process"])


async def rooms_homed_on_each_worker(serve: ServeProcess, per_worker: int) -> dict[int, list]:
    """{slot: room ids whose home is that slot}, `per_worker` each (rooms created until so)."""
    homes: dict[int, list[str]] = defaultdict(list)
    for _ in range(40 * per_worker):
        if all(len(homes[slot]) >= per_worker for slot in range(WORKERS)):
            break
        room_id = await create_room(serve.http_url)
        slot = home_of(room_id, range(WORKERS))
        if len(homes[slot]) < per_worker:
            homes[slot].append(room_id)
    assert all(len(homes[slot]) == per_worker for slot in range(WORKERS)), dict(homes)
    return homes


async def test_every_connection_to_a_room_reaches_the_rooms_home_worker(serve):
    homes = await rooms_homed_on_each_worker(serve, 3)
    sockets = []
    try:
        for slot, room_ids in homes.items():
            for room_id in room_ids:
                for n in range(3):
                    socket = await websockets.connect(
                        f"{serve.ws_base}/ws/{room_id}?name=a{n}", open_timeout=10
                    )
                    sockets.append(socket)
                    assert served_by(socket) == serve.worker_pids[slot], (room_id, slot)
    finally:
        for socket in sockets:
            await socket.close()


async def test_a_request_line_that_arrives_in_pieces_is_routed_by_its_room(serve):
    homes = await rooms_homed_on_each_worker(serve, 1)
    for slot, (room_id,) in homes.items():
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        try:
            request = (
                f"GET /ws/{room_id}?name=slow HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            for piece in (request[:6], request[6:20], request[20:]):
                writer.write(piece)
                await writer.drain()
                # A slow client, not synchronisation: the pieces must arrive apart.
                await asyncio.sleep(0.05)
            async with asyncio.timeout(WAIT_S):
                head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            assert head.startswith("http/1.1 101"), head
            assert f"x-collab-process: {serve.worker_pids[slot]}\r\n" in head, (slot, head)
        finally:
            writer.close()


async def test_pages_rest_and_static_files_are_served_on_the_same_port_by_every_worker(serve):
    answered_by = set()
    # A new connection per request: a kept-alive connection stays with the worker it reached.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=serve.http_url, timeout=10, limits=fresh) as http:
        for _ in range(4):
            # (/healthz, not here: its checks may time out on a busy machine, and answer 503.)
            for path in ("/", "/rooms/create", "/static/rooms/collab-client.js", "/metrics"):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.status_code)
                answered_by.add(int(response.headers["X-Collab-Process"]))
        created = await http.post("/rooms", json={"code": "print(1)\n"})
        assert created.status_code in (200, 201), created.text
        room = await http.get(f"/rooms/{created.json()['room_id']}")
        assert room.json()["code"] == "print(1)\n"
    # Requests that name no room go to the workers in turn.
    assert answered_by == set(serve.worker_pids)


# With the standby, it takes the dead worker's slot; without (--standby 0), the parent restarts
# the worker and its rooms' connections wait for it.
@pytest.mark.parametrize("serve", [1, 0], indirect=True, ids=["standby", "restart"])
async def test_a_killed_workers_rooms_are_served_again_and_nothing_acknowledged_is_lost(
    serve,
    postgres_database,  # noqa: F811
):
    homes = await rooms_homed_on_each_worker(serve, ROOMS_PER_WORKER)
    rooms = [room_id for slot in range(WORKERS) for room_id in homes[slot]]
    bases = [serve.ws_base]
    clients = {
        room_id: [RoamingClient(bases, 0, room_id, f"r{r}c{n}kill") for n in range(2)]
        for r, room_id in enumerate(rooms)
    }
    everyone = [client for pair in clients.values() for client in pair]
    typists = [
        RoamingTypist(client, random.Random(n), deletes=False, drop_rate=0.02)
        for n, client in enumerate(everyone)
    ]
    stop = asyncio.Event()
    load: list[asyncio.Task] = []

    async def wait_while_loaded(condition, what: str) -> float:
        """Wait (bounded) until `condition()`, failing at once if a typist failed; returns the
        time it held (to within the 20 ms the check takes turns with the load)."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not condition():
                    await asyncio.wait(load, timeout=0.02)
                    for task in load:
                        if task.done():
                            task.result()
        except TimeoutError:
            raise AssertionError(f"not within {WAIT_S} s: {what}") from None
        return time.monotonic()

    try:
        for client in everyone:
            await client.connect()
        for room_id, pair in clients.items():
            home = serve.worker_pids[home_of(room_id, range(WORKERS))]
            assert {served_by(c.socket) for c in pair} == {home}, room_id
        load = [asyncio.create_task(t.run(stop=stop)) for t in typists]
        await wait_while_loaded(
            lambda: sum(len(c.acked_ops) for c in everyone) >= 60, "60 acks before the kill"
        )

        victim = serve.worker_pids[0]
        moved = [c for room_id in homes[0] for c in clients[room_id]]
        acked_at_kill = {c.client_id: len(c.acked_ops) for c in everyone}
        for client in everyone:
            client.expect_server_loss(serve.ws_base)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        successor = int(
            (
                await asyncio.to_thread(serve.wait_for_line, r"serve: worker 0 \[(\d+)\] ready", 30)
            ).group(1)
        )
        assert successor not in (victim, serve.worker_pids[1])
        served_again_at = await wait_while_loaded(
            lambda: all(len(c.acked_ops) > acked_at_kill[c.client_id] for c in moved),
            "an ack for every client of the killed worker's rooms",
        )
        # Measured, not asserted (timing belongs to benchmarks): issue 15's target is 2 s.
        print(f"killed worker's rooms served again {served_again_at - killed_at:.2f} s after")

        await wait_while_loaded(
            lambda: all(len(c.acked_ops) > acked_at_kill[c.client_id] + 5 for c in everyone),
            "every client acknowledged again after the kill",
        )
        stop.set()
        async with asyncio.timeout(60):
            for task in load:
                await task

        for room_id, pair in clients.items():
            slot = home_of(room_id, range(WORKERS))
            served = {served_by(c.socket) for c in pair}
            if serve.standby or slot == 1:
                # Every room is in one process again: the killed worker's on the standby, the
                # others where they were.
                expected = successor if slot == 0 else serve.worker_pids[1]
                assert served == {expected}, room_id
            else:
                # A restart slower than the parent's hold (HOLD_S, on a busy machine) sends
                # the waiting clients to the room's next worker: split for a while, still served.
                assert served <= {successor, serve.worker_pids[1]}, room_id
        for room_id, pair in clients.items():
            code, _, _ = await assert_everyone_agrees(
                [serve.http_url], postgres_database, room_id, pair
            )
            typed = [tok for t in typists if t.client in pair for tok in t.typed]
            assert sorted(parse_tokens(code)) == sorted(typed), room_id
            acked = set().union(*(tokens_in(op) for c in pair for op in c.acked_ops))
            assert acked <= set(parse_tokens(code)), room_id
        if serve.standby:  # the parent replaced the standby it used
            await asyncio.to_thread(serve.wait_for_line, r"serve: standby \[\d+\] ready", 60)
    finally:
        stop.set()
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        await close_all(everyone)
