"""Restore against a real server while people type (docs/protocol.md, "History").

Two ops-mode editors type whole lines (one token each) at line boundaries, all the time; a
restore of an older version, decided at version B, lands in the middle. The restore must take
back exactly what was committed up to B and is not in the old version, and keep everything the
editors committed after B, whatever order the server saw things in.
"""

from __future__ import annotations

import asyncio
import random
import re

import httpx
import pytest

from rooms import ot
from tests.e2e.test_convergence import at
from tests.support.ot_client import OTClient

pytestmark = pytest.mark.e2e

LINE = re.compile(r"<[a-z]+\.[0-9]+>\n")
WAIT_S = 20
# Lines one editor types at most while waiting for the restore (a bound, not a pace).
MAX_LINES_TYPED = 2000


def lines_of(text: str) -> list[str]:
    found = LINE.findall(text)
    assert "".join(found) == text, f"not whole lines of tokens: {text!r}"
    return found


async def type_line(client: OTClient, rng: random.Random, token: str) -> None:
    """Insert one token line at a random line start, then pause unevenly."""
    starts = [0] + [m.end() for m in LINE.finditer(client.text)]
    await client.edit(at(rng.choice(starts), f"<{token}>\n"))
    await asyncio.sleep(rng.random() * 0.01)  # uneven typing, not synchronisation


async def type_lines(client: OTClient, rng: random.Random, prefix: str, count: int) -> None:
    """Insert `count` token lines at random line starts, with uneven pauses."""
    for number in range(count):
        await type_line(client, rng, f"{prefix}.{number}")


async def type_until(
    client: OTClient, rng: random.Random, prefix: str, done: asyncio.Event, more: int
) -> None:
    """Type lines until `done` is set, then `more` lines after it (bounded in all)."""
    number = 0
    while not done.is_set():
        assert number < MAX_LINES_TYPED, "the restore never happened"
        await type_line(client, rng, f"{prefix}.{number}")
        number += 1
    for _ in range(more):
        await type_line(client, rng, f"{prefix}.{number}")
        number += 1


async def delete_lines(client: OTClient, rng: random.Random, count: int) -> None:
    for _ in range(count):
        victim = rng.choice(list(LINE.finditer(client.text)))
        await client.edit(at(victim.start(), {"d": victim.end() - victim.start()}))


async def settle(*clients: OTClient) -> None:
    for client in clients:
        await client.wait_until(lambda c=client: c.settled, WAIT_S)


async def test_restore_while_two_editors_type_loses_nothing_of_theirs(shared_server):
    http = httpx.AsyncClient(base_url=shared_server.http_url, timeout=WAIT_S)
    initial = "".join(f"<init.{n}>\n" for n in range(5))
    room_id = (await http.post("/rooms", json={"code": initial})).json()["room_id"]
    alice = OTClient(shared_server.ws_base, room_id, "alice-client", name="alice")
    bob = OTClient(shared_server.ws_base, room_id, "bob-client1", name="bob")
    rng = random.Random(17)
    try:
        await alice.connect()
        await bob.connect()
        # Up to V: both type. Between V and B: more typing, and lines of V deleted (the
        # restore must bring them back).
        await asyncio.gather(type_lines(alice, rng, "aa", 8), type_lines(bob, rng, "bb", 8))
        await settle(alice, bob)
        old = (await http.get(f"/rooms/{room_id}")).json()
        await asyncio.gather(type_lines(alice, rng, "ab", 6), delete_lines(bob, rng, 3))
        await settle(alice, bob)
        base = (await http.get(f"/rooms/{room_id}")).json()["version"]

        # After B: both keep typing while the restore (decided at B) is committed: it is sent
        # once some of their lines have landed after B, and they type on after its answer.
        restore_answered = asyncio.Event()

        async def restore_meanwhile() -> dict:
            await alice.wait_until(lambda: alice.version >= base + 6, WAIT_S)
            try:
                response = await http.post(
                    f"/rooms/{room_id}/restore", json={"version": old["version"], "base": base}
                )
            finally:
                restore_answered.set()
            assert response.status_code == 200, response.text
            return response.json()

        _, _, restored = await asyncio.gather(
            type_until(alice, rng, "ac", restore_answered, more=5),
            type_until(bob, rng, "bc", restore_answered, more=5),
            restore_meanwhile(),
        )
        await settle(alice, bob)

        now = (await http.get(f"/rooms/{room_id}")).json()
        for client in (alice, bob):
            await client.wait_until(lambda c=client: c.version == now["version"], WAIT_S)
            assert client.text == now["code"], client.client_id
        history = (await http.get(f"/rooms/{room_id}/history")).json()["ops"]
        after_base = [
            line
            for entry in history
            if entry["version"] > base and entry["version"] != restored["version"]
            for part in entry["op"]
            if isinstance(part, str)
            for line in lines_of(part)
        ]
        assert any(entry["version"] > restored["version"] for entry in history), (
            "the restore landed after the typing: nothing concurrent was tested"
        )
        assert any(base < entry["version"] < restored["version"] for entry in history), (
            "the restore landed before any concurrent typing"
        )
        assert sorted(lines_of(now["code"])) == sorted(lines_of(old["code"]) + after_base)
        # The history still holds every version: replaying it gives the text.
        text = initial
        for entry in history:
            text = ot.apply(text, entry["op"])
        assert text == now["code"]
    finally:
        await alice.close()
        await bob.close()
        await http.aclose()
