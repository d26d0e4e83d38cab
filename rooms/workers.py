"""`manage.py serve --workers N`: a small accepting parent that sends each room's connections to
one worker, and keeps N uvicorn workers (plus a warm standby) alive. docs/deploying.md, "Room
affinity", says why and how to run it.

The parent owns the public port. For each connection it peeks (MSG_PEEK: nothing is consumed)
at the request line; a room's WebSocket (`GET /ws/<room_id>`) goes to the room's home worker
(rooms/affinity.py: rendezvous hashing over the worker slots), anything else (pages, REST,
static files) to the next worker in turn. The socket itself is passed to the worker over a
Unix socket (SCM_RIGHTS) and the parent closes its copy: after the request line the parent
never sees a byte of the connection, so routing costs one peek per connection, nothing per
message.

Workers are started as `manage.py serve --worker-channel FD`: fresh interpreters (not forks of
this one, which runs threads). One extra worker waits, started and idle, as a standby: when a
worker dies (a crash, kill -9) the standby takes its slot at once, so the dead worker's rooms
are served again as soon as their clients reconnect, all in one process again, and a new
standby starts. Connections for a slot without a ready worker wait in the parent (bounded:
after HOLD_S they go to the room's next-best slot rather than wait longer).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rooms.affinity import home_of, room_of_request_line

logger = logging.getLogger(__name__)

ROUTE_ROOM = "room"
ROUTE_RANDOM = "random"  # every connection to a random worker: to measure what affinity saves
ROUTES = (ROUTE_ROOM, ROUTE_RANDOM)

# A request line longer than this is handed on unread to a worker, which refuses it (414/400).
REQUEST_LINE_MAX = 8192
# A connection that has not sent its request line by then is closed (uvicorn's own timeouts
# only start once the worker has it).
HEAD_TIMEOUT_S = 10.0
# A request line that arrived in pieces is peeked at again this often (MSG_PEEK leaves the
# bytes readable, so waiting for "readable" again would spin).
PEEK_RETRY_S = 0.005
# How long a connection waits for its slot's worker before it goes to the room's next slot:
# a restart takes about 1-3 s, a worker that cannot start must not hold its rooms' clients.
HOLD_S = 3.0
RESTART_BACKOFF_MAX_S = 10.0
# After the standby took a dead worker's slot, the next standby starts this much later.
STANDBY_RESTART_DELAY_S = 2.0
# How long workers get to close their connections on SIGTERM before they are killed.
STOP_TIMEOUT_S = 30.0
READY_MESSAGE = b"ready"


@dataclass(eq=False)
class Worker:
    process: subprocess.Popen
    channel: socket.socket  # the parent's end of a SOCK_SEQPACKET pair
    started: float
    ready: bool = False
    slot: int | None = None  # None: the standby

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(eq=False)
class Slot:
    index: int
    worker: Worker | None = None
    # Connections for this slot, waiting for its worker to be ready (or its channel to drain),
    # with the time each arrived.
    queue: deque[tuple[socket.socket, float, str | None]] = field(default_factory=deque)
    failures: int = 0  # starts that failed in a row


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    deadline: float


class Router:
    """The accepting parent. `run()` serves until SIGTERM/SIGINT, then stops the workers."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        workers: int,
        route: str = ROUTE_ROOM,
        standby: int = 1,
        worker_command: list[str],
    ) -> None:
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}")
        self.host, self.port = host, port
        self.route = route
        self.standby_count = standby
        self.worker_command = worker_command
        self.slots = [Slot(index) for index in range(workers)]
        self.standbys: list[Worker] = []
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = 0
        self.retry_peek: list[_Pending] = []
        self._turn = 0
        self.stopping = False
        self.listener: socket.socket | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.listener = socket.create_server((self.host, self.port), family=family, backlog=2048)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        self.selector.register(wake_read, selectors.EVENT_READ, lambda: _drain(wake_read))
        signal.set_wakeup_fd(wake_write.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)
        for slot in self.slots:
            self._start_worker(slot.index)
        for _ in range(self.standby_count):
            self._start_worker(None)
        logger.info(
            "serve: routing by %s to %d workers (+%d standby) on http://%s:%d (parent [%d])",
            self.route,
            len(self.slots),
            self.standby_count,
            self.host,
            self.listener.getsockname()[1],
            os.getpid(),
        )
        try:
            while not self.stopping:
                self._run_once()
        finally:
            signal.set_wakeup_fd(-1)
            self._stop_all()
            wake_read.close()
            wake_write.close()

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _run_once(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        if self.retry_peek:
            timeout = PEEK_RETRY_S
        if self.timers:
            timeout = max(0.0, min(timeout, self.timers[0][0] - now))
        for key, events in self.selector.select(timeout):
            if self.stopping:
                return
            callback = key.data
            if isinstance(callback, _Pending):
                self._peek(callback)
            elif isinstance(callback, Worker):
                self._worker_event(callback, events)
            else:
                callback()
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, action = heapq.heappop(self.timers)
            action()
        retry, self.retry_peek = self.retry_peek, []
        for pending in retry:
            self._peek(pending)
        self._release_held(now)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        self._timer_seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self._timer_seq, action))

    # -- connections -------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(64):  # a burst at a time, so the workers' channels get their turn
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of file descriptors and the like: try again later
                logger.warning("serve: accept failed: %s", error)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending = _Pending(sock, time.monotonic() + HEAD_TIMEOUT_S)
            self.selector.register(sock, selectors.EVENT_READ, pending)

    def _peek(self, pending: _Pending) -> None:
        """Route the connection once its request line is in; until then, look again."""
        sock = pending.sock
        try:
            head = sock.recv(REQUEST_LINE_MAX, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            head = b""
        end = head.find(b"\n")
        if not head or (end < 0 and time.monotonic() > pending.deadline):
            self._forget_pending(pending)
            sock.close()
            return
        if end < 0 and len(head) < REQUEST_LINE_MAX:
            # Part of the line: stop watching for "readable" (it stays so) and look again soon.
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            self.retry_peek.append(pending)
            return
        self._forget_pending(pending)
        room = room_of_request_line(head[:end].rstrip(b"\r")) if end >= 0 else None
        self._hand(sock, room, time.monotonic())

    def _forget_pending(self, pending: _Pending) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(pending.sock)

    def _ready_slots(self) -> list[int]:
        return [s.index for s in self.slots if s.worker is not None and s.worker.ready]

    def _slot_for(self, room: str | None) -> int:
        ready = self._ready_slots()
        if room is not None and self.route == ROUTE_ROOM:
            return home_of(room, range(len(self.slots)))
        if room is not None:  # ROUTE_RANDOM
            return random.choice(ready or range(len(self.slots)))
        # Not a room's socket: any worker, in turn, preferring the ready ones.
        self._turn += 1
        candidates = ready or [s.index for s in self.slots]
        return candidates[self._turn % len(candidates)]

    def _hand(self, sock: socket.socket, room: str | None, since: float) -> None:
        slot = self.slots[self._slot_for(room)]
        slot.queue.append((sock, since, room))
        self._flush(slot)

    def _flush(self, slot: Slot) -> None:
        """Pass the slot's waiting connections to its worker, as far as its channel takes."""
        worker = slot.worker
        if worker is None or not worker.ready:
            return
        while slot.queue:
            sock = slot.queue[0][0]
            try:
                socket.send_fds(worker.channel, [b"c"], [sock.fileno()])
            except (BlockingIOError, InterruptedError):
                self._watch(worker, write=True)
                return
            except OSError:
                return  # the worker is gone: its channel's end-of-file restarts the slot
            slot.queue.popleft()
            sock.close()  # the worker has its own copy now
        self._watch(worker, write=False)

    def _release_held(self, now: float) -> None:
        """Connections that waited HOLD_S for their slot's worker go to the room's next slot."""
        ready = self._ready_slots()
        if not ready:
            return
        for slot in self.slots:
            if slot.worker is not None and slot.worker.ready:
                continue
            while slot.queue and now - slot.queue[0][1] > HOLD_S:
                sock, since, room = slot.queue.popleft()
                target = home_of(room, ready) if room is not None else random.choice(ready)
                self.slots[target].queue.append((sock, since, room))
                self._flush(self.slots[target])

    # -- workers -----------------------------------------------------------------------------

    def _start_worker(self, slot: int | None) -> None:
        if self.stopping:
            return
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [*self.worker_command, "--worker-channel", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
            )
        finally:
            child_end.close()
        parent_end.setblocking(False)
        worker = Worker(process, parent_end, time.monotonic(), slot=slot)
        self.selector.register(parent_end, selectors.EVENT_READ, worker)
        if slot is None:
            self.standbys.append(worker)
        else:
            self.slots[slot].worker = worker

    def _watch(self, worker: Worker, *, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(worker.channel, events, worker)

    def _worker_event(self, worker: Worker, events: int) -> None:
        if events & selectors.EVENT_WRITE and worker.slot is not None:
            self._flush(self.slots[worker.slot])
        if not events & selectors.EVENT_READ:
            return
        try:
            message = worker.channel.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            message = b""
        if message == READY_MESSAGE:
            worker.ready = True
            if worker.slot is None:
                logger.info("serve: standby [%d] ready", worker.pid)
            else:
                logger.info("serve: worker %d [%d] ready", worker.slot, worker.pid)
                self.slots[worker.slot].failures = 0
                self._flush(self.slots[worker.slot])
            return
        if not message:
            self._worker_exited(worker)

    def _worker_exited(self, worker: Worker) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.channel)
        worker.channel.close()
        if worker.process.poll() is None:  # closed its channel but still running: end it
            worker.process.kill()
        status = worker.process.wait()
        how = f"signal {-status}" if status < 0 else f"code {status}"
        if self.stopping:
            return
        if worker.slot is None:
            self.standbys.remove(worker)
            logger.warning("serve: standby [%d] exited (%s); starting another", worker.pid, how)
            self._later(self._backoff(worker, None), lambda: self._start_worker(None))
            return
        slot = self.slots[worker.slot]
        slot.worker = None
        standby = next((w for w in self.standbys if w.ready), None)
        if standby is not None:
            self.standbys.remove(standby)
            standby.slot = slot.index
            slot.worker = standby
            logger.warning(
                "serve: worker %d [%d] ready (the standby, taking the rooms of [%d], %s)",
                slot.index,
                standby.pid,
                worker.pid,
                how,
            )
            self._flush(slot)
            # Not at once: a new worker's start (about a second of CPU importing Django) would
            # compete with the standby serving the dead worker's reconnecting clients.
            self._later(STANDBY_RESTART_DELAY_S, lambda: self._start_worker(None))
            return
        delay = self._backoff(worker, slot)
        logger.warning(
            "serve: worker %d [%d] exited (%s); restarting it in %.1f s",
            slot.index,
            worker.pid,
            how,
            delay,
        )
        self._later(delay, lambda: self._start_worker(slot.index))

    def _backoff(self, worker: Worker, slot: Slot | None) -> float:
        """0 after a worker that had started; doubling after ones that died while starting
        (a worker that cannot start must not make the parent spin)."""
        if worker.ready:
            return 0.0
        if slot is None:
            return 1.0
        slot.failures += 1
        return min(0.5 * 2 ** (slot.failures - 1), RESTART_BACKOFF_MAX_S)

    def _stop_all(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for key in list(self.selector.get_map().values()):
            if isinstance(key.data, _Pending):
                key.data.sock.close()
        for pending in self.retry_peek:
            pending.sock.close()
        for slot in self.slots:
            for sock, _, _ in slot.queue:
                sock.close()
            slot.queue.clear()
        workers = [s.worker for s in self.slots if s.worker is not None] + self.standbys
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.channel.close()
        self.selector.close()


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while sock.recv(512):
            pass


# -- the worker side ----------------------------------------------------------------------------


def run_worker(config: object, channel_fd: int) -> None:
    """Serve the connections the parent passes over `channel_fd`, with uvicorn's `config`,
    until SIGTERM or until the parent goes away."""
    import uvicorn

    class RoutedServer(uvicorn.Server):
        """uvicorn's server, fed sockets over the channel instead of listening itself."""

        channel: socket.socket

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                sys.exit(3)
            loop = asyncio.get_running_loop()
            self.servers = []
            self.adopting: set[asyncio.Task] = set()
            self.channel = socket.socket(fileno=channel_fd)
            self.channel.setblocking(False)
            loop.add_reader(self.channel.fileno(), self._receive)
            self.started = True
            self.channel.send(READY_MESSAGE)

        def _protocol(self) -> asyncio.Protocol:
            return self.config.http_protocol_class(  # type: ignore[call-arg]
                config=self.config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
            )

        def _receive(self) -> None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(self.channel, 16, 16)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    message, fds = b"", []
                if not message and not fds:  # the parent is gone: stop, as on SIGTERM
                    loop.remove_reader(self.channel.fileno())
                    self.should_exit = True
                    return
                for fd in fds:
                    sock = socket.socket(fileno=fd)
                    if self.should_exit:
                        sock.close()
                        continue
                    sock.setblocking(False)
                    task = loop.create_task(loop.connect_accepted_socket(self._protocol, sock))
                    self.adopting.add(task)
                    task.add_done_callback(self._adopted)

        def _adopted(self, task: asyncio.Task) -> None:
            self.adopting.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                logger.warning("serve: could not take a connection: %s", error)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
            await super().shutdown(sockets)

    RoutedServer(config).run()  # type: ignore[arg-type]
