"""Authorship across processes (Redis + PostgreSQL): every process keeps the same authorship of a
room from the changes it sees, its own and the others', equal to what the database rebuilds
from its copies and op log, and the same again after the processes restart and load the room
from the database. Each character belongs to the client that typed it, whichever process that
client was on, and a restore through one process reaches the clients of the other.
"""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest
import websockets

from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    ServiceServer,
    postgres_database,
    postgres_service,
    redis_service,
    running_processes,
    service_env,
)
from tests.e2e.test_convergence import TOKEN, Typist
from tests.support.ot_client import OTClient

pytestmark = [pytest.mark.services, pytest.mark.e2e]

ENV = {"COLLAB_VERSION_POLL_S": "0.5"}
WAIT_S = 20
CLIENTS = {"alice0client": 0, "bob00client": 1, "carol0client": 1}  # client id -> process


@pytest.fixture(scope="module")
def pair(tmp_path_factory, redis_service, postgres_database):  # noqa: F811
    with running_processes(
        tmp_path_factory, postgres_database, service_env(redis_service, postgres_database, **ENV)
    ) as servers:
        yield servers


async def rest(server: ServiceServer, path: str, **json_body) -> dict:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=WAIT_S) as http:
        if json_body:
            response = await http.post(path, json=json_body)
        else:
            response = await http.get(path)
    assert response.status_code in (200, 201), (path, response.status_code, response.text)
    return response.json()


async def ask(server: ServiceServer, room_id: str, **request) -> dict:
    """One history request over a WebSocket of that process (answered from its live room when
    it is about the head)."""
    url = f"{server.ws_base}/ws/{room_id}?mode=ops"
    async with websockets.connect(url, open_timeout=10) as socket:
        async with asyncio.timeout(WAIT_S):
            init = json.loads(await socket.recv())
            await socket.send(json.dumps({"type": "history", "id": 1, **request}))
            while True:
                message = json.loads(await socket.recv())
                if message["type"] in {"history", "error"}:
                    assert message["type"] == "history", message
                    assert message["version"] == init["version"]
                    return {k: v for k, v in message.items() if k not in {"type", "id", "get"}}


def author_of_each_character(answer: dict) -> list[str]:
    runs, authors = answer["runs"], answer["authors"]
    return [authors[runs[i + 1]]["id"] for i in range(0, len(runs), 2) for _ in range(runs[i])]


async def everyone_agrees(
    pair: list[ServiceServer], room_id: str, restorer: str | None = None
) -> dict:
    """The authorship and blame at the head are the same from every process's memory and from
    the database (REST), and every token's characters are its typist's (or all the restorer's:
    a restore writes the text back as its own change). Returns it."""
    room = await rest(pair[0], f"/rooms/{room_id}")
    answers = []
    for server in pair:
        answers.append(await ask(server, room_id, get="authorship"))
        answers.append(await rest(server, f"/rooms/{room_id}/authorship"))
    for answer in answers[1:]:
        assert answer == answers[0]
    assert answers[0]["version"] == room["version"]
    authors = author_of_each_character(answers[0])
    assert len(authors) == len(room["code"])
    for token in TOKEN.finditer(room["code"]):
        typist = token.group()[1:].split(".")[0]
        assert set(authors[token.start() : token.end()]) in ({typist}, {restorer}), token.group()
    blames = [await ask(server, room_id, get="blame") for server in pair]
    blames += [await rest(server, f"/rooms/{room_id}/blame") for server in pair]
    assert all(blame == blames[0] for blame in blames)
    names = {user["name"] for line in blames[0]["lines"] for user in line["users"]}
    assert names <= {client[:5].rstrip("0") for client in CLIENTS} | {"restorer"}
    return answers[0]


async def test_authorship_is_the_same_on_every_process_and_after_a_restart(pair):
    room_id = (await rest(pair[0], "/rooms", code=""))["room_id"]
    clients = [
        OTClient(pair[process].ws_base, room_id, client, name=client[:5].rstrip("0"))
        for client, process in CLIENTS.items()
    ]
    rng = random.Random(23)
    typists = [Typist(client, random.Random(rng.random()), deletes=True) for client in clients]
    try:
        for client in clients:
            await client.connect()
        # Past 130 versions (edits made while one is in flight go out together): the copy at
        # 100 and the op log after it are in play.
        head = 0
        async with asyncio.timeout(90):
            while head < 130:
                await asyncio.gather(*(typist.run(20) for typist in typists))
                head = (await rest(pair[0], f"/rooms/{room_id}"))["version"]
        for client in clients:
            await client.wait_until(lambda c=client: c.version == head, WAIT_S)
        before = await everyone_agrees(pair, room_id)
        assert before["version"] == head

        # A restore through process 1 while process 0's client types: it reaches everyone.
        restored, _ = await asyncio.gather(
            rest(pair[1], f"/rooms/{room_id}/restore", version=60, name="restorer"),
            typists[0].run(10),
        )
        # ... and everyone keeps typing on top of it.
        await asyncio.gather(*(typist.run(3) for typist in typists))
        head = (await rest(pair[0], f"/rooms/{room_id}"))["version"]
        assert head > restored["version"]
        for client in clients:
            await client.wait_until(lambda c=client: c.version == head, WAIT_S)
        texts = {client.text for client in clients}
        assert texts == {(await rest(pair[1], f"/rooms/{room_id}"))["code"]}
        entries = (await rest(pair[0], f"/rooms/{room_id}/history"))["ops"]
        restorer = entries[restored["version"] - 1]["client"]
        before = await everyone_agrees(pair, room_id, restorer)
        assert restorer in {author["id"] for author in before["authors"]}
    finally:
        for client in clients:
            await client.close()
    for client in clients:
        assert client.unexpected_closes == [], client.client_id

    # Both processes start again: the room is loaded from the database, copy and ops after it.
    for server in pair:
        server.restart()
    assert await everyone_agrees(pair, room_id, restorer) == before
