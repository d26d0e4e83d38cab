"""A socket that stops reading holds up nobody, and later gets every version in order.

The room's fan-out writes to every socket from one pass (rooms/live.py); under uvicorn a
write to a socket whose buffers are full waits for it to drain. This runs the production server
(`manage.py serve`) with a text-mode client whose receive window is tiny and which reads
nothing while another client makes 100 edits to a 200 KB document: about 20 MB of frames for
it, far more than the kernel and server buffers hold, so its sends must wait.
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.e2e.server import ServeProcess, migrate

pytestmark = pytest.mark.e2e

DOCUMENT = "x" * 200_000
EDITS = 100
WAIT_S = 30  # generous bound for each phase; the test ends as soon as the data is there


@pytest.fixture
def uvicorn_server(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "COLLAB_RATE_BURST": "100000",
        "COLLAB_RATE_PER_S": "100000",
    }
    server = ServeProcess(env, workers=1)
    migrate(server.env)
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def edit(number: int) -> str:
    return f"e{number};"


class StalledClient:
    """A WebSocket client that reads only when asked, over a socket with a tiny receive window.

    Client libraries keep reading into memory; this one leaves unread data in the kernel, so
    the server's writes back up as they would to a stalled phone or a paused tab.
    """

    def __init__(self, url: str, port: int) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.port = port
        self.frames: list[dict] = []

    async def open(self) -> StalledClient:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=raw, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        self.writer.write(b"".join(self.protocol.data_to_send()))
        while not self.frames:  # the handshake, then at least `init`
            await self.read_some()
        return self

    async def read_some(self) -> None:
        data = await self.reader.read(65536)
        assert data, "the server closed the connection"
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                assert event.status_code == 101, event
            elif event.opcode is Opcode.TEXT:
                self.frames.append(json.loads(event.data))

    async def recv(self) -> str:
        while not self.frames:
            await self.read_some()
        return json.dumps(self.frames.pop(0))

    async def close(self) -> None:
        self.writer.close()


async def next_of_type(ws, kind: str) -> dict:
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == kind:
            return message


async def test_a_socket_that_stops_reading_holds_up_nobody_and_catches_up_in_order(
    uvicorn_server,
):
    created = httpx.post(f"{uvicorn_server.http_url}/rooms", json={"code": DOCUMENT}, timeout=5)
    assert created.status_code == 201, created.text
    url = f"{uvicorn_server.ws_base}/ws/{created.json()['room_id']}"

    slow = await asyncio.wait_for(
        StalledClient(f"{url}?mode=text", uvicorn_server.port).open(), WAIT_S
    )
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
        room = httpx.get(f"{uvicorn_server.http_url}/rooms/{created.json()['room_id']}", timeout=5)
        assert room.json()["code"] == frames[-1]["code"]
    finally:
        for ws in (slow, reader, writer):
            await ws.close()
