"""`manage.py runserver`: daphne's development server, tuned in three ways.

- Backpressure, as uvicorn has it (`manage.py serve`). Daphne's ASGI `send` never waits: it
  writes into the connection's Twisted buffer, which grows without bound for a client that does
  not read (a text-mode client that stopped reading made the server grow by gigabytes). Here
  each WebSocket's transport gets a push producer (Twisted's IPushProducer): the transport
  pauses it once more than COLLAB_SEND_BUFFER_BYTES wait to be written and resumes it when they
  are, and the application's `send` waits while it is paused. The room's fan-out then passes
  the socket by and it catches up by version later, or is closed with 4413 (rooms/consumers.py).
  The same holds for reading: daphne queues every frame a client sends for the application,
  without bound; here reading from the client pauses while frames wait (uvicorn pauses after
  each one), so a client that sends without reading waits in its own TCP window.
- Daphne sets the message size cap (DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE, above the protocol's own
  1 MiB limit) but leaves autobahn's `failByDrop` on, so a frame over the cap drops the TCP
  connection without a close frame. Clients should see close code 1009 ("message too big").
  autobahn also held the server's own frames to that cap; it applies to clients' frames only.
- Access logs print the full URL, and private rooms' tokens may travel in `?token=`: they are
  redacted before anything is logged. A WebSocket is logged when it connects (or is refused)
  and when it ends, not also when its handshake starts.
- A frame is written to the socket at once when nothing waits before it, as uvicorn does.
  Twisted queues every write and registers the socket with the selector, and writes it on the
  reactor's next turn, then unregisters it: three system calls and a reactor turn per frame
  where one call does, paid once per socket for every broadcast (docs/benchmarks.md). autobahn's
  per-frame and per-connection debug lines, formatted even when debug logging is off, are
  skipped as well.
"""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from typing import Any

from daphne.management.commands.runserver import Command as DaphneRunserver
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from rooms.logs import redact_secrets

# Frames a client may have waiting for the application before reading from it pauses. uvicorn
# pauses after every frame; a few let a burst of small messages through without a pause each.
INBOUND_FRAMES_QUEUED = 4


# How often a closing socket is checked for data the kernel has yet to deliver.
KERNEL_QUEUE_POLL_S = 0.05
# Linux's ioctl for the bytes a socket has not had acknowledged yet (None elsewhere).
try:
    import fcntl
    import termios

    TIOCOUTQ = termios.TIOCOUTQ
except (ImportError, AttributeError):
    TIOCOUTQ = None


@implementer(IPushProducer)
class SendWindow:
    """Whether a WebSocket's transport takes more writes: the transport pauses this producer when
    its buffer holds more than its `bufferSize` and resumes it once the buffer is written out."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self.waiting: list[asyncio.Future] = []

    async def writable(self) -> None:
        """Return at once when the transport takes writes; else once it does (or is gone)."""
        while self.paused:
            waiter = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            await waiter

    def pauseProducing(self) -> None:  # Twisted's names
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:  # in the order the sends came, so frames keep their order
            if not waiter.done():
                waiter.set_result(None)

    def stopProducing(self) -> None:  # the connection is gone: nobody waits on it
        self.stopped = True
        self.resumeProducing()

    async def delivered(self, transport: Any) -> None:
        """Return once the kernel has nothing left to deliver on this socket, or it is gone.

        autobahn gives a client one second to answer the server's close frame, then drops the
        connection, and with it whatever the kernel still held: a slow client that was reading
        its frames lost the last ones and the close code. Written once the rest is delivered,
        the close frame is all the client has left to read. (Linux only; elsewhere at once.)
        """
        fileno = getattr(transport, "fileno", None)
        while TIOCOUTQ is not None and fileno is not None and not self.stopped:
            try:
                queued = fcntl.ioctl(fileno(), TIOCOUTQ, bytes(4))
            except (OSError, ValueError):
                return  # the socket is closed already
            if not int.from_bytes(queued, sys.byteorder):
                return
            await asyncio.sleep(KERNEL_QUEUE_POLL_S)


class InboundQueue(asyncio.Queue):
    """A WebSocket's frames for the application; reading from the client pauses while
    INBOUND_FRAMES_QUEUED of them wait."""

    def __init__(self, transport: Any) -> None:
        super().__init__()
        self.transport = transport
        self.reading_paused = False

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        if not self.reading_paused and self.qsize() >= INBOUND_FRAMES_QUEUED:
            self.reading_paused = True
            self.transport.pauseProducing()

    def get_nowait(self) -> Any:  # asyncio.Queue.get() ends with this call too
        item = super().get_nowait()
        if self.reading_paused and self.qsize() < INBOUND_FRAMES_QUEUED:
            self.reading_paused = False
            self.transport.resumeProducing()
        return item


def write_now(transport: Any, data: bytes) -> None:
    """Write `data` to a TCP transport's socket now if nothing is queued before it, and queue
    what the socket did not take (or all of it, if the socket is gone) as Twisted's `write`
    does: the producer is paused once too much waits, and a lost connection is noticed on the
    next write attempt."""
    if (
        isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else the connection is lost: Twisted's write notices
            if sent == len(data):
                return
            data = data[sent:]
    transport.write(data)


class FlowControlledWebSocketProtocol(WebSocketProtocol):
    send_window: SendWindow | None = None

    def _connectionMade(self) -> None:
        # autobahn copies each option the connection does not set from the factory, then
        # pretty-prints all of them for a debug line, formatted even with debug logging off:
        # about a tenth of a connection's set-up. The options are copied here the same way, so
        # autobahn finds none left to copy and print.
        for name in self.CONFIG_ATTRS:
            if not hasattr(self, name):
                setattr(self, name, getattr(self.factory, name))
        self.CONFIG_ATTRS = ()
        try:
            super()._connectionMade()
        finally:
            del self.CONFIG_ATTRS  # the class's again

    def dataReceived(self, data: bytes) -> None:
        # autobahn's, without the debug line whose arguments it formats for every frame.
        self._dataReceived(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue or self.logOctets or self.state != self.STATE_OPEN:
            super().sendData(data, sync, chopsize)
            return
        # autobahn's, minus its per-frame debug line, with the write made at once.
        write_now(self.transport, data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    def connectionMade(self) -> None:
        super().connectionMade()
        transport = self.transport
        # The HTTP channel that served the upgrade is registered as the transport's producer
        # (for HTTP responses; it would pause reading when writes back up, never the writer).
        # The WebSocket owns the connection now: our window takes its place.
        transport.unregisterProducer()
        if hasattr(transport, "bufferSize"):  # a TCP transport (TLS wrappers keep their own)
            transport.bufferSize = settings.COLLAB_SEND_BUFFER_BYTES
        self.send_window = SendWindow()
        transport.registerProducer(self.send_window, True)

    def sendMessage(self, *args: Any, **kwargs: Any) -> None:
        # autobahn holds what we send to the cap on what clients send (4 MiB): a room's init or
        # text as JSON can be larger (escapes take up to six bytes per character), and the send
        # failed. The cap is for what we receive only.
        cap, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            super().sendMessage(*args, **kwargs)
        finally:
            self.maxMessagePayloadSize = cap


class TunedServer(Server):
    def run(self) -> None:
        from twisted.internet import reactor

        # The factory is made inside run(); tune it once the reactor starts, before it serves.
        reactor.callWhenRunning(self._tune_websockets)
        super().run()

    def _tune_websockets(self) -> None:
        self.ws_factory.protocol = FlowControlledWebSocketProtocol
        # allowNullOrigin defaults to False here, unlike daphne's setting: restate daphne's choice
        # (the application's origin policy decides, and answers 403).
        self.ws_factory.setProtocolOptions(failByDrop=False, allowNullOrigin=True)

    def create_application(self, protocol: Any, scope: dict) -> asyncio.Queue | None:
        if not isinstance(protocol, FlowControlledWebSocketProtocol):
            return super().create_application(protocol, scope)
        # daphne 4.2's create_application, with a bounded queue for the client's frames.
        assert "application_instance" not in self.connections[protocol]
        input_queue = InboundQueue(protocol.transport)
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    async def handle_reply(self, protocol: Any, message: dict) -> None:
        # Like uvicorn's: a send waits while the socket's buffer is full, then writes. It does
        # not suspend otherwise, so the room's fan-out still writes to every socket in one pass.
        window = getattr(protocol, "send_window", None)
        if window is not None and window.paused:
            await window.writable()
        if window is not None and message["type"] == "websocket.close":
            await window.delivered(protocol.transport)
        await super().handle_reply(protocol, message)


class Command(DaphneRunserver):
    server_cls = TunedServer

    def log_action(self, protocol: str, action: str, details: dict) -> None:
        if protocol == "websocket" and action == "connecting":
            # "HANDSHAKING" comes just before the same connection's CONNECT (or REJECT) line,
            # with the same path and client: one line per connection less to write.
            return
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact_secrets(details["path"])}
        super().log_action(protocol, action, details)
