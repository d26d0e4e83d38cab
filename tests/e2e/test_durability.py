"""An acknowledged change is never lost, not even when the server process is killed (kill -9)."""

from __future__ import annotations

import asyncio
import contextlib
import random

import httpx
import pytest

from tests.e2e.test_convergence import TOKEN, Typist, parse_tokens
from tests.support.ot_client import OTClient

pytestmark = pytest.mark.e2e


def tokens_in(op: list) -> set[str]:
    return {token for part in op if isinstance(part, str) for token in TOKEN.findall(part)}


async def test_every_acked_change_survives_kill_9_and_clients_resume(server):
    async with httpx.AsyncClient(timeout=10) as http:
        room_id = (await http.get(f"{server.http_url}/rooms/create")).json()["room_id"]
    clients = [OTClient(server.ws_base, room_id, f"durable{i}client") for i in range(3)]
    typists = [Typist(c, random.Random(i), deletes=False) for i, c in enumerate(clients)]
    for client in clients:
        await client.connect()
    load = [asyncio.create_task(t.run(10_000)) for t in typists]
    try:
        # Kill in the middle of the load, once a good number of changes were acknowledged.
        async with asyncio.timeout(30):
            while sum(len(c.acked_ops) for c in clients) < 150:
                await asyncio.wait(load, timeout=0.05)
                for task in load:
                    if task.done():
                        task.result()
        for client in clients:
            client.expect_server_loss(server.ws_base)
        server.kill()
        acked = set().union(*(tokens_in(op) for c in clients for op in c.acked_ops))
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)

        server.start()  # same port, same database
        async with httpx.AsyncClient(timeout=10) as http:
            after_restart = (await http.get(f"{server.http_url}/rooms/{room_id}")).json()
        assert acked <= set(parse_tokens(after_restart["code"]))

        # Clients resume: their unacknowledged edits are resubmitted, none applied twice.
        for client in clients:
            await client.drop()
            await client.connect()
        for client in clients:
            await client.wait_until(lambda c=client: c.settled)
        async with httpx.AsyncClient(timeout=10) as http:
            room = (await http.get(f"{server.http_url}/rooms/{room_id}")).json()
        for client in clients:
            await client.wait_until(lambda c=client: c.version >= room["version"])
            assert client.text == room["code"]
        typed = [token for t in typists for token in t.typed]
        assert sorted(parse_tokens(room["code"])) == sorted(typed)
        for client in clients:
            assert client.unexpected_closes == [], client.client_id
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
