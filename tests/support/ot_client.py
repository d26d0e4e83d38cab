"""A Python ops-mode client with ShareDB's algorithm, for end-to-end convergence tests.

One op in flight, at most one pending (later local edits compose into it). Incoming ops are
transformed against them (`left` for ours, `right` for theirs). On reconnect the client resumes
with `version` and `client`; an op in `init.ops` with our client and in-flight seq is our ack,
otherwise the in-flight op is resubmitted with the same seq. It is the same algorithm as
rooms/static/rooms/collab-client.js, so these tests also check the protocol that client relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import websockets

from rooms import ot

RECV_TIMEOUT_S = 10


class GapDetected(Exception):
    """A version skipped: reconnect and resume."""


class OTClient:
    def __init__(self, ws_base: str, room_id: str, client_id: str, name: str = "bot") -> None:
        self.ws_base = ws_base
        self.room_id = room_id
        self.client_id = client_id
        self.name = name
        self.text = ""
        self.version: int | None = None
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

    # -- connection --------------------------------------------------------------------------

    def url(self) -> str:
        query = f"mode=ops&client={self.client_id}&name={self.name}"
        if self.version is not None:
            query += f"&version={self.version}"
        return f"{self.ws_base}/ws/{self.room_id}?{query}"

    async def connect(self) -> None:
        self.socket = await websockets.connect(self.url(), open_timeout=10, max_size=None)
        init = await self._recv("init")
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
        self._reader = asyncio.create_task(self._read())

    async def drop(self) -> None:
        """Lose the connection abruptly, as a network failure would (no close handshake)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.socket is not None:
            self.socket.transport.abort()
            self.socket = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.socket is not None:
            await self.socket.close()
            self.socket = None

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
            while not condition():
                if self.failure is not None:
                    raise self.failure
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
        await self.socket.send(json.dumps(message))

    async def _read(self) -> None:
        try:
            await self._read_forever()
        except websockets.ConnectionClosed:
            self.socket = None
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.failure = error
            raise
        finally:
            self._settled.set()

    async def _read_forever(self) -> None:
        while True:
            message = json.loads(await self.socket.recv())
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
