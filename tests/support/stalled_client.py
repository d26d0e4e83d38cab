"""A WebSocket client that reads only when asked, over a socket with a tiny receive window.

Client libraries keep reading into memory; this one leaves unread data in the kernel, so the
server's writes back up as they would to a stalled phone or a paused tab. Used by the slow-reader
and backpressure tests and by the non-reader soak (bench/soak_nonreader.py).
"""

from __future__ import annotations

import asyncio
import json
import socket

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

RECEIVE_WINDOW_BYTES = 4096


class ServerClosed(Exception):
    """The server closed the WebSocket (`code`) or dropped the connection (`code` None)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed by the server with {code}")
        self.code = code


class StalledClient:
    def __init__(self, url: str, port: int) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.port = port
        self.frames: list[dict] = []
        self.close_code: int | None = None
        self.ended = False  # the server closed or dropped the connection

    async def open(self) -> StalledClient:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_WINDOW_BYTES)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=raw, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        self.flush()
        while not self.frames:  # the handshake, then at least `init`
            await self.read_some()
        return self

    def flush(self) -> None:
        """Write what the protocol owes the server (the handshake, pongs, a close reply)."""
        data = b"".join(self.protocol.data_to_send())
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def read_some(self) -> None:
        try:
            data = await self.reader.read(65536)
        except ConnectionResetError:
            data = b""  # servers may reset once the close handshake is done (autobahn does)
        if not data:
            self.ended = True
            raise ServerClosed(self.close_code)
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                assert event.status_code == 101, event
            elif event.opcode is Opcode.TEXT:
                self.frames.append(json.loads(event.data))
            elif event.opcode is Opcode.CLOSE and self.protocol.close_rcvd is not None:
                self.close_code = self.protocol.close_rcvd.code
        self.flush()

    async def send_text(self, text: str, timeout: float) -> bool:
        """Send one text frame; False if the server has not taken it within `timeout` seconds
        (it stopped reading from us)."""
        self.protocol.send_text(text.encode())
        self.flush()
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except TimeoutError:
            return False
        return True

    async def recv(self) -> dict:
        """The next frame; ServerClosed once the server ended the connection."""
        while not self.frames:
            await self.read_some()
        return self.frames.pop(0)

    async def close(self) -> None:
        self.writer.close()
