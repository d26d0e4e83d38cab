"""Concurrent edits are never lost (issue: operational transformation), against a live server.

Clients type unique tokens at token boundaries (and ops clients delete whole tokens), with random
pauses, random dropped connections and resumes. Afterwards every client's text equals the room's
code, the version equals the number of accepted changes, and every token typed is there exactly
once unless it was deleted. The clients drop connections themselves; a connection the server
closes (a failed commit's 4500 among them) fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re

import httpx
import pytest
import websockets

from tests.support.ot_client import OTClient

pytestmark = pytest.mark.e2e

TOKEN = re.compile(r"<[a-z0-9]+\.[0-9]+>")


def boundaries(text: str) -> list[int]:
    """Positions between tokens (the text is only ever a sequence of tokens)."""
    return [0] + [m.end() for m in TOKEN.finditer(text)]


def at(position: int, part: str | dict) -> list:
    """An op doing `part` at `position` (ops never carry a zero skip)."""
    return [position, part] if position else [part]


def parse_tokens(text: str) -> list[str]:
    tokens = TOKEN.findall(text)
    assert "".join(tokens) == text, f"text is not a sequence of intact tokens: {text!r}"
    return tokens


class Typist:
    """Drives one OTClient: inserts and deletes whole tokens, sometimes loses its connection."""

    def __init__(self, client: OTClient, rng: random.Random, deletes: bool) -> None:
        self.client = client
        self.rng = rng
        self.deletes = deletes
        self.typed: list[str] = []
        self.deleted: set[str] = set()

    async def run(self, edits: int) -> None:
        for number in range(edits):
            if not self.client.connected:
                await self.client.connect()
            text = self.client.text
            tokens = list(TOKEN.finditer(text))
            if self.deletes and tokens and self.rng.random() < 0.25:
                victim = self.rng.choice(tokens)
                self.deleted.add(victim.group())
                await self.client.edit(at(victim.start(), {"d": victim.end() - victim.start()}))
            else:
                token = f"<{self.client.client_id}.{number}>"
                self.typed.append(token)
                await self.client.edit(at(self.rng.choice(boundaries(text)), token))
            if self.rng.random() < 0.08:
                await self.client.drop()
            await asyncio.sleep(self.rng.random() * 0.01)  # uneven typing, not synchronisation
        if not self.client.connected:
            await self.client.connect()
        await self.client.wait_until(lambda: self.client.settled)


class TextTypist:
    """A text-mode client: sends its whole text with the version it was made on."""

    def __init__(self, ws_url: str, name: str, rng: random.Random) -> None:
        self.ws_url = ws_url
        self.name = name
        self.rng = rng
        self.typed: list[str] = []
        self.text = ""
        self.version = 0

    async def run(self, edits: int) -> None:
        async with websockets.connect(self.ws_url, open_timeout=10, max_size=None) as socket:
            init = json.loads(await socket.recv())
            self.text, self.version = init["code"], init["version"]
            for number in range(edits):
                token = f"<{self.name}.{number}>"
                self.typed.append(token)
                at = self.rng.choice(boundaries(self.text))
                sent = self.text[:at] + token + self.text[at:]
                await socket.send(
                    json.dumps({"type": "sync_code", "code": sent, "version": self.version})
                )
                async with asyncio.timeout(20):
                    while True:
                        message = json.loads(await socket.recv())
                        if message["type"] == "sync_code":
                            assert message["version"] == self.version + 1
                            self.text, self.version = message["code"], message["version"]
                        elif message["type"] == "ack":
                            assert message["version"] == self.version + 1
                            self.text = message.get("code", sent)
                            self.version = message["version"]
                            break
                        else:
                            assert message["type"] in {"join", "leave"}, message
                await asyncio.sleep(self.rng.random() * 0.01)


async def converge(clients: list[OTClient], http_url: str, room_id: str) -> dict:
    async with httpx.AsyncClient(timeout=10) as http:
        room = (await http.get(f"{http_url}/rooms/{room_id}")).json()
    for client in clients:
        if not client.connected:
            await client.connect()
        await client.wait_until(lambda c=client: c.version >= room["version"])
    return room


@pytest.mark.parametrize("seed", [1, 2])
async def test_ops_clients_with_drops_and_resumes_converge_without_losing_a_token(
    shared_server, seed
):
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=10) as http:
        room_id = (await http.get(f"{shared_server.http_url}/rooms/create")).json()["room_id"]
    clients = [OTClient(shared_server.ws_base, room_id, f"c{seed}n{i}client") for i in range(4)]
    typists = [Typist(c, random.Random(rng.random()), deletes=True) for c in clients]
    try:
        await asyncio.gather(*(t.run(40) for t in typists))
        room = await converge(clients, shared_server.http_url, room_id)
        for client in clients:
            assert client.text == room["code"]
        tokens = parse_tokens(room["code"])
        deleted = set().union(*(t.deleted for t in typists))
        expected = [tok for t in typists for tok in t.typed if tok not in deleted]
        assert sorted(tokens) == sorted(expected)
        changes = sum(len(t.typed) + len(t.deleted) for t in typists)
        # Composed pending edits make fewer ops than edits; each acked op is one version.
        assert room["version"] == sum(len(c.acked_seqs) for c in clients) <= changes
        async with httpx.AsyncClient(timeout=10) as http:
            history = (await http.get(f"{shared_server.http_url}/rooms/{room_id}/history")).json()
        assert len(history["ops"]) == room["version"]
        for client in clients:
            assert client.unexpected_closes == [], client.client_id
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


async def test_text_and_ops_clients_share_a_room_and_converge(shared_server):
    rng = random.Random(7)
    async with httpx.AsyncClient(timeout=10) as http:
        room_id = (await http.get(f"{shared_server.http_url}/rooms/create")).json()["room_id"]
    clients = [OTClient(shared_server.ws_base, room_id, f"mixed{i}client") for i in range(3)]
    typists = [Typist(c, random.Random(rng.random()), deletes=False) for c in clients]
    texts = [
        TextTypist(f"{shared_server.ws_base}/ws/{room_id}", f"text{i}", random.Random(i))
        for i in range(2)
    ]
    try:
        await asyncio.gather(*(t.run(30) for t in typists), *(t.run(15) for t in texts))
        room = await converge(clients, shared_server.http_url, room_id)
        for client in clients:
            assert client.text == room["code"]
        expected = [tok for t in typists for tok in t.typed] + [
            tok for t in texts for tok in t.typed
        ]
        assert sorted(parse_tokens(room["code"])) == sorted(expected)
        acked = sum(len(c.acked_seqs) for c in clients) + sum(len(t.typed) for t in texts)
        assert room["version"] == acked
        for client in clients:
            assert client.unexpected_closes == [], client.client_id
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
