"""A Python ops-mode client with ShareDB's algorithm, for end-to-end convergence tests.

One op in flight, at most one pending (later local edits compose into it). Incoming ops are
transformed against them (`left` for ours, `right` for theirs). On reconnect the client resumes
with `version`, `client` and the `client_secret` its first `init` gave it; an op in `init.ops`
with our client and in-flight seq is our ack, otherwise the in-flight op is resubmitted with the
same seq. It is the same algorithm as rooms/static/rooms/collab-client.js, so these tests also
check the protocol that client relies on.

A connection the test did not end itself (with `drop` or `close`) is a failure: a server that
closes with 4500 ("the change was not acknowledged") or any other code has failed, even though a
real client would resume and the text would still converge. Every such close is kept in `closes`;
the client refuses to go on after one (`failure`) unless the test declared it with
`expect_server_loss`, the one loss a test causes on purpose: it kills the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, NamedTuple

import websockets
from websockets.frames import Close as CloseFrame
from websockets.protocol import State

from rooms import ot

RECV_TIMEOUT_S = 10
ABNORMAL_CLOSURE = 1006  # the connection ended without a close frame (a killed server)


class GapDetected(Exception):
    """A version skipped: reconnect and resume."""


class UnexpectedClose(AssertionError):
    """The server ended a connection, and the test did not say it would."""


class Close(NamedTuple):
    """The end of a connection that this client did not cause."""

    code: int
    reason: str
    ws_base: str  # the server it was connected to
    opened_at: float  # time.monotonic() when the connection was opened


class OTClient:
    def __init__(self, ws_base: str, room_id: str, client_id: str, name: str = "bot") -> None:
        self.ws_base = ws_base
        self.room_id = room_id
        self.client_id = client_id
        self.name = name
        self.text = ""
        self.version: int | None = None
        self.client_secret: str | None = None  # from the first init; binds client_id
        self.seq = 0
        self.inflight: tuple[int, ot.Op] | None = None
        self.pending: ot.Op | None = None
        self.acked_seqs: list[int] = []
        self.acked_ops: list[ot.Op] = []  # as last sent: what the server confirmed it has
        self.socket: Any = None
        self._reader: asyncio.Task | None = None
        self._settled = asyncio.Event()
        self.failure: BaseException | None = None
        self.trace: list[str] = []  # what happened, for failure messages
        self.closes: list[Close] = []
        self._losses: list[tuple[str, float]] = []  # (ws base, until): expect_server_loss
        self._opened_at = 0.0

    # -- connection --------------------------------------------------------------------------

    def url(self) -> str:
        query = f"mode=ops&client={self.client_id}&name={self.name}"
        if self.client_secret is not None:
            query += f"&client_secret={self.client_secret}"
        if self.version is not None:
            query += f"&version={self.version}"
        return f"{self.ws_base}/ws/{self.room_id}?{query}"

    def expect_server_loss(self, ws_base: str) -> None:
        """The test kills the server at `ws_base` now: a connection to it opened before this
        call may end without a close frame. Any other close still fails the test."""
        self._losses.append((ws_base, time.monotonic()))

    @property
    def unexpected_closes(self) -> list[Close]:
        return [close for close in self.closes if not self._expected(close)]

    def _expected(self, close: Close) -> bool:
        return close.code == ABNORMAL_CLOSURE and any(
            close.ws_base == ws_base and close.opened_at <= until for ws_base, until in self._losses
        )

    async def connect(self) -> None:
        if self.failure is not None:
            raise self.failure  # a real client would reconnect; the test has failed already
        self._opened_at = time.monotonic()
        socket = await websockets.connect(self.url(), open_timeout=10, max_size=None)
        self.socket = socket
        try:
            init = await self._recv("init")
        except websockets.ConnectionClosed as closed:
            self._lost(socket, closed.rcvd)
            raise self.failure or closed from None
        self.client_secret = init["client_secret"]
        self.trace.append(
            f"init v={init['version']} from={self.version} "
            f"ops={[(e['version'], e['client'][-9:], e['seq']) for e in init.get('ops', [])]} "
            f"inflight={self.inflight and self.inflight[0]}"
        )
        if self.version is None or "ops" not in init:
            if self.version is not None:
                raise AssertionError(f"resume without ops: {init}")
            self.text, self.version = init["code"], init["version"]
        else:
            for entry in init["ops"]:
                self._take_remote(entry)
        if self.inflight is not None:
            await self._send_inflight()
        else:
            await self._flush_pending()
        if self.socket is socket:
            self._reader = asyncio.create_task(self._read(socket))
        elif self.failure is not None:
            raise self.failure

    async def drop(self) -> None:
        """Lose the connection abruptly, as a network failure would (no close handshake)."""
        socket = await self._stop_reading()
        if socket is not None:
            socket.transport.abort()

    async def close(self) -> None:
        socket = await self._stop_reading()
        if socket is not None:
            await socket.close()

    async def _stop_reading(self) -> Any:
        """Stop the reader and let go of the socket; returned for the caller to end."""
        socket = self.socket
        if socket is not None and (
            socket.protocol.close_rcvd is not None or socket.protocol.state is State.CLOSED
        ):
            # The server ended it before the reader could tell: that is not the test's doing.
            self._lost(socket, socket.protocol.close_rcvd)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self.socket = None
        return socket

    def _lost(self, socket: Any, frame: CloseFrame | None) -> None:
        """Record the end of `socket` that this client did not cause (once per connection)."""
        if socket is not self.socket:
            return
        self.socket = None
        code = ABNORMAL_CLOSURE if frame is None else frame.code
        close = Close(code, "" if frame is None else frame.reason, self.ws_base, self._opened_at)
        self.closes.append(close)
        self.trace.append(f"closed by the server: {code} {close.reason!r}")
        if not self._expected(close) and self.failure is None:
            self.failure = UnexpectedClose(
                f"{self.client_id}: the server at {self.ws_base} closed the connection with "
                f"{code} {close.reason!r}; its last events:\n" + "\n".join(self.trace[-25:])
            )
        self._settled.set()

    # -- editing -----------------------------------------------------------------------------

    async def edit(self, op: ot.Op) -> None:
        """Apply a local edit now and send it when the protocol allows."""
        op = ot.normalize(op)
        self.text = ot.apply(self.text, op)
        self.pending = op if self.pending is None else ot.compose(self.pending, op)
        self._settled.clear()
        if self.socket is not None and self.inflight is None:
            await self._flush_pending()

    @property
    def settled(self) -> bool:
        return self.inflight is None and self.pending is None

    @property
    def connected(self) -> bool:
        return self.socket is not None

    async def wait_until(self, condition, timeout: float = 20) -> None:
        """Wait, bounded, until `condition()` holds; every received message re-checks it."""
        async with asyncio.timeout(timeout):
            while True:
                if self.failure is not None:
                    raise self.failure
                if condition():
                    return
                if not self.connected:
                    raise ConnectionError(f"{self.client_id} is disconnected")
                self._settled.clear()
                await self._settled.wait()

    # -- protocol ----------------------------------------------------------------------------

    async def _flush_pending(self) -> None:
        if self.pending is None:
            return
        self.seq += 1
        self.inflight = (self.seq, self.pending)
        self.pending = None
        await self._send_inflight()

    async def _send_inflight(self) -> None:
        seq, op = self.inflight
        message = {"type": "op", "version": self.version, "seq": seq, "op": op}
        self.trace.append(f"send seq={seq} base={self.version} len={ot.base_length(op)}")
        socket = self.socket
        try:
            await socket.send(json.dumps(message))
        except websockets.ConnectionClosed as closed:
            self._lost(socket, closed.rcvd)  # the op stays in flight: resent on resume

    async def _read(self, socket: Any) -> None:
        try:
            await self._read_forever(socket)
        except websockets.ConnectionClosed as closed:
            self._lost(socket, closed.rcvd)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.failure = error
            raise
        finally:
            self._settled.set()

    async def _read_forever(self, socket: Any) -> None:
        while True:
            message = json.loads(await socket.recv())
            kind = message["type"]
            self.trace.append(
                f"recv {kind} v={message.get('version')} seq={message.get('seq')} "
                f"c={str(message.get('client'))[-9:]} dup={message.get('duplicate')}"
            )
            if kind == "op":
                if message["version"] != self.version + 1:
                    raise GapDetected(f"{message['version']} after {self.version}")
                if self._take_remote(message):
                    await self._flush_pending()  # it was our in-flight op: send what waits
            elif kind == "ack":
                if message.get("duplicate") and (
                    self.inflight is None or message["seq"] < self.inflight[0]
                ):
                    # A resubmitted op whose first commit already reached us as a broadcast
                    # with our client and seq (it was in flight on the old connection).
                    continue
                self._take_ack(message)
                await self._flush_pending()
            elif kind == "error":
                raise AssertionError(f"server error: {message}\n" + "\n".join(self.trace[-40:]))
            self._settled.set()

    def _take_remote(self, entry: dict[str, Any]) -> bool:
        """Apply an op from the server; True when it was our own in-flight op (our ack)."""
        if (
            self.inflight is not None
            and entry["client"] == self.client_id
            and entry["seq"] == self.inflight[0]
        ):
            self._take_ack({"version": entry["version"], "seq": entry["seq"]})
            return True
        incoming = entry["op"]
        if self.inflight is not None:
            seq, mine = self.inflight
            self.inflight = (seq, ot.transform(mine, incoming, "left"))
            incoming = ot.transform(incoming, mine, "right")
        if self.pending is not None:
            pending = self.pending
            self.pending = ot.transform(pending, incoming, "left")
            incoming = ot.transform(incoming, pending, "right")
        self.text = ot.apply(self.text, incoming)
        self.version = entry["version"]
        return False

    def _take_ack(self, ack: dict[str, Any]) -> None:
        assert self.inflight is not None and ack["seq"] == self.inflight[0], (ack, self.inflight)
        self.acked_seqs.append(ack["seq"])
        self.acked_ops.append(self.inflight[1])
        self.inflight = None
        if not ack.get("duplicate"):
            assert ack["version"] == self.version + 1, (ack, self.version)
            self.version = ack["version"]

    async def _recv(self, kind: str) -> dict[str, Any]:
        async with asyncio.timeout(RECV_TIMEOUT_S):
            while True:
                message = json.loads(await self.socket.recv())
                if message["type"] == kind:
                    return message
                if message["type"] == "error":
                    raise AssertionError(f"server error: {message}")
