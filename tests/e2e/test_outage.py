"""Connecting while Redis or the database is down (docs/protocol.md section 4): the socket is
accepted and closed with 4503, never answered with an HTTP 500 or dropped without a close
frame; the first connection after the service is back works and its edits are acknowledged.

Each test runs its own redis-server or PostgreSQL on a port of its own (tests/e2e/own_services.py)
and stops it; the machine's shared services are never touched. Both launchers are tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.e2e.own_services import OwnPostgres, OwnRedis
from tests.e2e.server import LAUNCHERS, LiveServer, ServeProcess, migrate
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    PostgresDatabase,
    postgres_database,
    postgres_service,
)

pytestmark = [pytest.mark.services, pytest.mark.e2e]

WAIT_S = 20


@contextlib.contextmanager
def running(launcher: str, folder, env: dict[str, str]) -> Iterator[LiveServer | ServeProcess]:
    """A server under `launcher` on the given services (the database already migrated)."""
    if launcher == "runserver":
        server = LiveServer(folder, env=env)
        server.migrate = lambda: None  # migrated by the test, on its own database
        server.start()
        try:
            yield server
        finally:
            server.stop()
        return
    process = ServeProcess(env, workers=1).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def create_room(server) -> str:
    response = httpx.post(f"{server.http_url}/rooms", json={"code": "abc"}, timeout=WAIT_S)
    assert response.status_code == 201, response.text
    return response.json()["room_id"]


async def close_code_at_connect(server, room_id: str) -> int:
    """Connect and read until the server closes: the code of its close frame (1006: none)."""
    async with websockets.connect(
        f"{server.ws_base}/ws/{room_id}?mode=ops", open_timeout=WAIT_S, close_timeout=WAIT_S
    ) as ws:
        async with asyncio.timeout(WAIT_S):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    message = json.loads(await ws.recv())
                    assert message["type"] != "init", message
    return ws.close_code


async def edit_once(server, room_id: str) -> None:
    """A fresh connection gets init and an ack for its first op."""
    async with websockets.connect(
        f"{server.ws_base}/ws/{room_id}?mode=ops", open_timeout=WAIT_S
    ) as ws:
        async with asyncio.timeout(WAIT_S):
            init = json.loads(await ws.recv())
            assert init["type"] == "init", init
            await ws.send(
                json.dumps({"type": "op", "version": init["version"], "seq": 1, "op": ["x"]})
            )
            while (message := json.loads(await ws.recv()))["type"] != "ack":
                assert message["type"] in {"op", "join", "leave"}, message


# What daphne and uvicorn log when an application fails a connection (an HTTP 500, or a close
# without our code). Libraries may log the outage itself (channels-redis does, with tracebacks).
APPLICATION_FAILED = ("Exception inside application", "Exception in ASGI application")


def no_application_failure(server) -> None:
    failures = [line for line in server.log if line.strip().startswith(APPLICATION_FAILED)]
    assert not failures, "".join(server.log[-80:])


@pytest.mark.parametrize("launcher", LAUNCHERS)
async def test_redis_down_at_connect_closes_with_4503_then_the_next_connect_works(
    launcher,
    tmp_path,
    postgres_database,  # noqa: F811
):
    redis = OwnRedis(tmp_path / "redis").start()
    env = {"REDIS_URL": redis.url, "DATABASE_URL": postgres_database.url}
    postgres_database.ensure_migrated(env)
    try:
        with running(launcher, tmp_path / "server", env) as server:
            room_id = create_room(server)
            await edit_once(server, room_id)
            redis.stop()
            for _ in range(3):
                assert await close_code_at_connect(server, room_id) == 4503
            redis.start()
            await edit_once(server, room_id)
            no_application_failure(server)
    finally:
        redis.stop()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    database = OwnPostgres().create()
    try:
        yield database
    finally:
        database.destroy()


@pytest.mark.parametrize("launcher", LAUNCHERS)
async def test_database_down_at_connect_closes_with_4503_then_the_next_connect_works(
    launcher, tmp_path, own_postgres
):
    env = {"DATABASE_URL": own_postgres.url}
    migrate({**os.environ, **env})
    with running(launcher, tmp_path / "server", env) as server:
        room_id = create_room(server)
        await edit_once(server, room_id)
        own_postgres.stop()
        for _ in range(3):
            assert await close_code_at_connect(server, room_id) == 4503
        own_postgres.start()
        await edit_once(server, room_id)
        no_application_failure(server)
