"""No client can make the server grow by not reading, under `runserver` (daphne) and `serve`
(uvicorn) alike (docs/deploying.md, "Memory budgets"; docs/protocol.md, close code 4413).

A text-mode client that stops reading is sent the whole text after every change, far more than
the kernel and the server's send buffer hold. The server must keep its memory flat meanwhile
(measured as the serving process's resident memory, with psutil), keep serving the rest of the
room, and let the slow client have every version in order up to the point where it is closed
with 4413, the documented code for a connection that fell too far behind.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
import pytest
import websockets

from rooms.protocol import CLOSE_TOO_FAR_BEHIND
from tests.e2e.server import LAUNCHERS, launched
from tests.support.stalled_client import ServerClosed, StalledClient

pytestmark = pytest.mark.e2e

DOCUMENT = "def f(x):\n    return x\n" * 8_000  # 200 KB
WARMUP_EDITS = 20
EDITS = 400  # about 80 MB of text-mode frames for a client that does not read
WAIT_S = 30  # any single phase; each ends as soon as its data is there
# Without backpressure the server kept every frame for the stalled client: its memory grew by
# more than the 80 MB of frames. With it, the growth is the socket's send buffer and a frame or
# two (a few MB) plus allocator noise.
RSS_GROWTH_LIMIT_MIB = 32
MIB = 1024 * 1024

SERVER_ENV = {
    "COLLAB_RATE_BURST": "100000",
    "COLLAB_RATE_PER_S": "100000",
    # Blocks above 64 KiB (every frame here) are mmapped and returned when freed, so resident
    # memory measures what is alive, not the allocator's high-water mark.
    "MALLOC_MMAP_THRESHOLD_": "65536",
}


@pytest.fixture(params=LAUNCHERS)
def server(request, tmp_path):
    with launched(request.param, tmp_path / "server", env=SERVER_ENV) as server:
        yield server


def edit(number: int) -> str:
    return f"e{number};"


def text_at(version: int) -> str:
    return "".join(edit(n) for n in reversed(range(version))) + DOCUMENT


async def next_of_type(ws, kind: str) -> dict:
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == kind:
            return message


async def edit_and_watch(writer, watcher, first: int, count: int) -> None:
    """The writer makes `count` edits; it gets every ack and the watcher every version."""
    for number in range(first, first + count):
        await writer.send(
            json.dumps({"type": "op", "version": number, "seq": number + 1, "op": [edit(number)]})
        )
    versions = list(range(first + 1, first + count + 1))

    async def acks() -> list[int]:
        return [(await next_of_type(writer, "ack"))["version"] for _ in versions]

    async def seen() -> list[int]:
        return [(await next_of_type(watcher, "sync_code"))["version"] for _ in versions]

    # Both read at once: a client that reads late is a slow reader too.
    got_acks, got_versions = await asyncio.wait_for(asyncio.gather(acks(), seen()), WAIT_S)
    assert got_acks == versions
    assert got_versions == versions


async def test_a_client_that_never_reads_cannot_grow_the_server(server):
    created = httpx.post(f"{server.http_url}/rooms", json={"code": DOCUMENT}, timeout=10)
    assert created.status_code == 201, created.text
    url = f"{server.ws_base}/ws/{created.json()['room_id']}"
    stalled = await asyncio.wait_for(StalledClient(f"{url}?mode=text", server.port).open(), WAIT_S)
    # These two read everything as it comes (max_queue=None: the library never stops reading).
    watcher = await websockets.connect(
        f"{url}?mode=text", max_size=None, max_queue=None, open_timeout=10
    )
    writer = await websockets.connect(
        f"{url}?mode=ops", max_size=None, max_queue=None, open_timeout=10
    )
    try:
        assert (await asyncio.wait_for(stalled.recv(), WAIT_S))["type"] == "init"
        await asyncio.wait_for(next_of_type(watcher, "init"), WAIT_S)
        await asyncio.wait_for(next_of_type(writer, "init"), WAIT_S)
        # The server loads Jedi in the background at start (about 15 MB); a completion waits for
        # it, so what loads once is in before memory is measured.
        await writer.send(json.dumps({"type": "complete", "id": 1, "line": 1, "column": 3}))
        await asyncio.wait_for(next_of_type(writer, "completions"), WAIT_S)
        await edit_and_watch(writer, watcher, 0, WARMUP_EDITS)
        process = psutil.Process(server.pid)
        before = process.memory_info().rss

        # The rest of the room is served in full while the stalled socket reads nothing.
        await edit_and_watch(writer, watcher, WARMUP_EDITS, EDITS)

        growth_mib = (process.memory_info().rss - before) / MIB
        assert growth_mib < RSS_GROWTH_LIMIT_MIB, f"the server grew by {growth_mib:.0f} MiB"

        # Reading now, it gets consecutive versions with the right texts, then the close.
        frames = []
        with pytest.raises(ServerClosed) as closed:
            while True:
                frames.append(await asyncio.wait_for(stalled.recv(), WAIT_S))
        versions = [frame["version"] for frame in frames if frame["type"] == "sync_code"]
        assert versions == list(range(1, len(versions) + 1))
        assert len(versions) < WARMUP_EDITS + EDITS, "it was not closed but caught up"
        for frame in frames:
            if frame["type"] == "sync_code":
                assert frame["code"] == text_at(frame["version"]), frame["version"]
        assert closed.value.code == CLOSE_TOO_FAR_BEHIND
    finally:
        for ws in (stalled, watcher, writer):
            await ws.close()


async def test_frames_to_clients_are_not_held_to_the_cap_on_frames_from_clients(server):
    # A room of a million control characters: as JSON its text takes six bytes per character,
    # so `init` is a 6 MB frame, above the 4 MiB cap on what clients send (docs/protocol.md,
    # section 2). Under runserver autobahn applied that cap to what the server sends as well,
    # and the client never got its init.
    code = "\x01" * 1_000_000
    created = httpx.post(f"{server.http_url}/rooms", json={"code": code}, timeout=30)
    assert created.status_code == 201, created.text
    url = f"{server.ws_base}/ws/{created.json()['room_id']}?mode=text"
    async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
        init = await asyncio.wait_for(next_of_type(ws, "init"), WAIT_S)
        assert init["code"] == code


FLOOD_FRAME = "x" * 1_000_000  # within the message limit, and not JSON: each gets bad_json
FLOOD_FRAMES = 200
FLOOD_STALL_S = 2  # a send the server has not taken by then means it stopped reading


async def test_a_client_that_sends_without_reading_cannot_grow_the_server(server):
    # Once a send to a socket waits, that connection's handler waits with it: the frames its
    # client sends meanwhile must wait in the client's TCP window, not in the server (daphne
    # queued every one for the application: 200 MB here, when sends began to wait).
    created = httpx.post(f"{server.http_url}/rooms", json={"code": DOCUMENT}, timeout=10)
    assert created.status_code == 201, created.text
    url = f"{server.ws_base}/ws/{created.json()['room_id']}"
    flooder = await asyncio.wait_for(StalledClient(f"{url}?mode=text", server.port).open(), WAIT_S)
    writer = await websockets.connect(
        f"{url}?mode=ops", max_size=None, max_queue=None, open_timeout=10
    )
    try:
        assert (await asyncio.wait_for(flooder.recv(), WAIT_S))["type"] == "init"
        await asyncio.wait_for(next_of_type(writer, "init"), WAIT_S)
        await writer.send(json.dumps({"type": "complete", "id": 1, "line": 1, "column": 3}))
        await asyncio.wait_for(next_of_type(writer, "completions"), WAIT_S)
        # 50 edits fill the flooder's buffers with texts it does not read (10 MB, within its
        # backlog budget): from then on each reply to it waits, and so does its connection.
        for number in range(50):
            op = {"type": "op", "version": number, "seq": number + 1, "op": [edit(number)]}
            await writer.send(json.dumps(op))
            await asyncio.wait_for(next_of_type(writer, "ack"), WAIT_S)
        process = psutil.Process(server.pid)
        before = process.memory_info().rss

        sent = 0
        while sent < FLOOD_FRAMES and await flooder.send_text(FLOOD_FRAME, FLOOD_STALL_S):
            sent += 1

        growth_mib = (process.memory_info().rss - before) / MIB
        assert growth_mib < RSS_GROWTH_LIMIT_MIB, (
            f"the server grew by {growth_mib:.0f} MiB taking {sent} frames of 1 MB"
        )
        # The room is still served.
        op = {"type": "op", "version": 50, "seq": 51, "op": ["done"]}
        await writer.send(json.dumps(op))
        assert (await asyncio.wait_for(next_of_type(writer, "ack"), WAIT_S))["version"] == 51
    finally:
        for ws in (flooder, writer):
            await ws.close()
