"""Memory and storage budgets on a live server (docs/deploying.md, "Memory and storage budgets";
docs/protocol.md, section 2): a room's recent changes are bounded in bytes, and a room's text and
history have quotas past which edits get `too_large` and change nothing."""

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
        secret = (await next_of_type(writer, "init"))["client_secret"]
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
        f"{url}&client=rewriter-1&client_secret={secret}&version=0", max_size=None, max_queue=None
    ) as resumed:
        init = await next_of_type(resumed, "init")
        assert [entry["version"] for entry in init["ops"]] == list(range(1, REWRITES + 1))
        replayed = ""
        for entry in init["ops"]:
            replayed = ot.apply(replayed, entry["op"])
        assert replayed == init["code"] == rewritten(REWRITES - 1)


@pytest.fixture
def quota_server(tmp_path):
    server = LiveServer(
        tmp_path / "server",
        env={"COLLAB_ROOM_HISTORY_MAX_BYTES": "2000", "COLLAB_ROOM_TEXT_MAX_CODE_POINTS": "1000"},
    )
    with server:
        yield server


def room_state(server: LiveServer, room_id: str) -> tuple[str, int, int]:
    room = httpx.get(f"{server.http_url}/rooms/{room_id}", timeout=10).json()
    history = httpx.get(f"{server.http_url}/rooms/{room_id}/history", timeout=10).json()
    return room["code"], room["version"], len(history["ops"])


async def refused(ws, message: dict) -> dict:
    """The error a refused edit gets; then the connection still answers."""
    await ws.send(json.dumps(message))
    error = await next_of_type(ws, "error")
    await ws.send(json.dumps({"type": "ping"}))
    await next_of_type(ws, "pong")
    return error


async def test_an_edit_past_the_text_quota_is_refused_and_changes_nothing(quota_server):
    server = quota_server
    too_big = httpx.post(f"{server.http_url}/rooms", json={"code": "x" * 1001}, timeout=10)
    assert too_big.status_code == 413 and "1000" in too_big.json()["error"]
    room_id = httpx.post(f"{server.http_url}/rooms", json={"code": "x" * 990}, timeout=10).json()[
        "room_id"
    ]
    async with websockets.connect(f"{server.ws_base}/ws/{room_id}?mode=ops") as ws:
        await next_of_type(ws, "init")
        error = await refused(ws, {"type": "op", "version": 0, "seq": 1, "op": ["y" * 11]})
        assert error["code"] == "too_large"
        assert "text" in error["message"] and "1,000 code points" in error["message"]
        assert room_state(server, room_id) == ("x" * 990, 0, 0)
        ack = json.dumps({"type": "op", "version": 0, "seq": 1, "op": ["y" * 10]})
        await ws.send(ack)
        assert (await next_of_type(ws, "ack"))["version"] == 1  # up to the quota is fine


async def test_edits_past_the_history_quota_are_refused_and_change_nothing(quota_server):
    server = quota_server
    room_id = httpx.post(f"{server.http_url}/rooms", json={"code": ""}, timeout=10).json()[
        "room_id"
    ]
    url = f"{server.ws_base}/ws/{room_id}"
    async with (
        websockets.connect(f"{url}?mode=ops") as ws,
        websockets.connect(f"{url}?mode=text") as text_ws,
    ):
        await next_of_type(ws, "init")
        await next_of_type(text_ws, "init")
        # Each change counts its op as JSON and 100 bytes for its row: ["abc"] is 107 bytes, so
        # 18 fit in 2,000 and the 19th is refused.
        accepted = 0
        for _ in range(30):
            op = {"type": "op", "version": accepted, "seq": accepted + 1, "op": ["abc"]}
            await ws.send(json.dumps(op))
            reply = await next_of_type(ws, "ack", "error")
            if reply["type"] == "error":
                break
            accepted += 1
        assert accepted == 18
        assert reply["code"] == "too_large"
        assert "history" in reply["message"] and "2,000 bytes" in reply["message"]
        state = room_state(server, room_id)
        assert state == ("abc" * accepted, accepted, accepted)

        # Nothing more gets in, however small, in either mode.
        empty = {"type": "op", "version": accepted, "seq": accepted + 2, "op": []}
        assert (await refused(ws, empty))["code"] == "too_large"
        sync = {"type": "sync_code", "code": "", "version": accepted}
        assert (await refused(text_ws, sync))["code"] == "too_large"
        assert room_state(server, room_id) == state
