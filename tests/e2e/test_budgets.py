"""Memory budgets on a live server (docs/deploying.md, "Memory and storage budgets"): a room's
recent changes are bounded in bytes."""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
import pytest
import websockets

from rooms import ot
from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

WAIT_S = 30
MIB = 1024 * 1024
REWRITES = 80
REWRITE_CODE_POINTS = 512_000
RECENT_BUDGET_MIB = 8
# Each rewrite holds about 1.5 MB while it is a recent change (its insert, its encoded frame and
# its inverse): kept by count alone, 80 of them grew the server by more than 120 MB. Within the
# budget the growth is the budget and the frames in flight, plus allocator noise.
RSS_GROWTH_LIMIT_MIB = 48


def rewritten(number: int) -> str:
    return chr(ord("a") + number % 26) * REWRITE_CODE_POINTS


async def next_of_type(ws, *kinds: str) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        if message["type"] in kinds:
            return message


def metric(server: LiveServer, name: str) -> float:
    for line in httpx.get(f"{server.http_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


@pytest.fixture
def budget_server(tmp_path):
    server = LiveServer(
        tmp_path / "server",
        env={
            "COLLAB_RATE_BURST": "100000",
            "COLLAB_RATE_PER_S": "100000",
            "COLLAB_RECENT_CHANGES_BYTES": f"{RECENT_BUDGET_MIB}M",
            # Big blocks are mmapped and returned when freed: resident memory is live memory.
            "MALLOC_MMAP_THRESHOLD_": "65536",
        },
    )
    with server:
        yield server


async def test_a_room_rewritten_with_large_texts_keeps_its_recent_changes_within_the_budget(
    budget_server,
):
    server = budget_server
    created = httpx.post(f"{server.http_url}/rooms", json={"code": ""}, timeout=10)
    room_id = created.json()["room_id"]
    url = f"{server.ws_base}/ws/{room_id}?mode=ops"
    async with (
        websockets.connect(f"{url}&client=rewriter-1", max_size=None, max_queue=None) as writer,
        websockets.connect(url, max_size=None, max_queue=None) as reader,
    ):
        await next_of_type(writer, "init")
        await next_of_type(reader, "init")
        # Jedi loads in the background at start; a completion waits for it to be in.
        await writer.send(json.dumps({"type": "complete", "id": 1, "line": 1, "column": 0}))
        await next_of_type(writer, "completions")
        process = psutil.Process(server.pid)
        before = process.memory_info().rss

        text = ""
        for number in range(REWRITES):
            op = [{"d": len(text)}, rewritten(number)] if text else [rewritten(number)]
            message = {"type": "op", "version": number, "seq": number + 1, "op": op}
            await writer.send(json.dumps(message))
            assert (await next_of_type(writer, "ack"))["version"] == number + 1
            assert (await next_of_type(reader, "op"))["version"] == number + 1
            text = rewritten(number)

        growth_mib = (process.memory_info().rss - before) / MIB
        assert growth_mib < RSS_GROWTH_LIMIT_MIB, f"the server grew by {growth_mib:.0f} MiB"
        assert metric(server, "collab_recent_changes_bytes") <= RECENT_BUDGET_MIB * MIB

    # Resuming from the start still gets every change, from the op log.
    async with websockets.connect(
        f"{url}&client=rewriter-1&version=0", max_size=None, max_queue=None
    ) as resumed:
        init = await next_of_type(resumed, "init")
        assert [entry["version"] for entry in init["ops"]] == list(range(1, REWRITES + 1))
        replayed = ""
        for entry in init["ops"]:
            replayed = ot.apply(replayed, entry["op"])
        assert replayed == init["code"] == rewritten(REWRITES - 1)
