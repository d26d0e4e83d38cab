"""A socket that stops reading holds up nobody, and later gets every version in order.

The room's fan-out writes to every socket from one pass (rooms/live.py); a write to a socket
whose buffers are full waits for it to drain, under `manage.py serve` (uvicorn) and
`manage.py runserver` (daphne, tuned for it) alike. This runs each with a text-mode client whose
receive window is tiny and which reads nothing while another client makes 100 edits to a 200 KB
document: about 20 MB of frames for it, far more than the kernel and server buffers hold, so its
sends must wait. Its send backlog budget is raised above those 20 MB, so it catches up instead of
being closed with 4413 (tests/e2e/test_backpressure.py covers that).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.e2e.server import LAUNCHERS, launched
from tests.support.stalled_client import StalledClient

pytestmark = pytest.mark.e2e

DOCUMENT = "x" * 200_000
EDITS = 100
WAIT_S = 30  # generous bound for each phase; the test ends as soon as the data is there


@pytest.fixture(params=LAUNCHERS)
def server(request, tmp_path):
    env = {
        "COLLAB_RATE_BURST": "100000",
        "COLLAB_RATE_PER_S": "100000",
        "COLLAB_SEND_BACKLOG_BYTES": "64M",
    }
    with launched(request.param, tmp_path / "server", env=env) as server:
        yield server


def edit(number: int) -> str:
    return f"e{number};"


async def next_of_type(ws, kind: str) -> dict:
    while True:
        message = await ws.recv()  # the stalled client's come parsed
        message = json.loads(message) if isinstance(message, str) else message
        if message["type"] == kind:
            return message


async def test_a_socket_that_stops_reading_holds_up_nobody_and_catches_up_in_order(server):
    created = httpx.post(f"{server.http_url}/rooms", json={"code": DOCUMENT}, timeout=5)
    assert created.status_code == 201, created.text
    url = f"{server.ws_base}/ws/{created.json()['room_id']}"

    slow = await asyncio.wait_for(StalledClient(f"{url}?mode=text", server.port).open(), WAIT_S)
    reader = await websockets.connect(f"{url}?mode=ops", max_size=None, open_timeout=5)
    writer = await websockets.connect(f"{url}?mode=ops", max_size=None, open_timeout=5)
    try:
        assert (await asyncio.wait_for(next_of_type(slow, "init"), WAIT_S))["version"] == 0
        await asyncio.wait_for(next_of_type(reader, "init"), WAIT_S)
        await asyncio.wait_for(next_of_type(writer, "init"), WAIT_S)

        for number in range(EDITS):
            await writer.send(
                json.dumps(
                    {"type": "op", "version": number, "seq": number + 1, "op": [edit(number)]}
                )
            )

        async def acks() -> list[int]:
            return [(await next_of_type(writer, "ack"))["version"] for _ in range(EDITS)]

        async def ops() -> list[int]:
            return [(await next_of_type(reader, "op"))["version"] for _ in range(EDITS)]

        # The writer and the other reader are served in full while the slow socket is stuck.
        assert await asyncio.wait_for(acks(), WAIT_S) == list(range(1, EDITS + 1))
        assert await asyncio.wait_for(ops(), WAIT_S) == list(range(1, EDITS + 1))

        async def slow_versions() -> list[dict]:
            frames = []
            while not frames or frames[-1]["version"] < EDITS:
                frames.append(await next_of_type(slow, "sync_code"))
            return frames

        frames = await asyncio.wait_for(slow_versions(), WAIT_S)
        assert [frame["version"] for frame in frames] == list(range(1, EDITS + 1))
        for frame in frames:
            expected = "".join(edit(n) for n in reversed(range(frame["version"]))) + DOCUMENT
            assert frame["code"] == expected, f"wrong text at version {frame['version']}"
        room = httpx.get(f"{server.http_url}/rooms/{created.json()['room_id']}", timeout=5)
        assert room.json()["code"] == frames[-1]["code"]
    finally:
        for ws in (slow, reader, writer):
            await ws.close()
