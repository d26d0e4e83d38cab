"""The load generator: asyncio `websockets` clients spread over N worker processes.

The parent (bench/scenarios.py) sends each worker a job over a pipe; a job runs in two phases so
that every worker's clients are connected before the clock starts:

    parent -> worker   {"kind": ..., ...}            the job
    worker -> parent   ("ready", info)                all clients connected
    parent -> worker   ("go", {"t0": ns, ...})        start time on CLOCK_MONOTONIC
    worker -> parent   ("done", result) | ("error", traceback)

Latency is measured on ONE clock: every edit carries its send time as `t=<time.monotonic_ns()>`
inside the edit itself (the inserted string in ops mode, the first line of the code in text mode),
and the receiver subtracts it from its own `time.monotonic_ns()`. CLOCK_MONOTONIC is system-wide
on Linux, so the sender and the receiver may live in different worker processes.

Each worker reports its own CPU time over the measured window, so an overloaded generator is
visible in the results instead of being the hidden bottleneck. Every loop here is bounded in
count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import re
import time
import traceback
from collections import Counter, deque
from typing import Any

MARK_RE = re.compile(r"t=(\d+);s=(\d+);n=(\d+)")
VERSION_RE = re.compile(r'"version":(\d+)')
CONNECT_CONCURRENCY = 32
PHASE_TIMEOUT_S = 180  # the longest any worker waits for the parent between phases
LATE_SEND_NS = 10_000_000  # a send more than 10 ms behind its schedule counts as late


def _ms(ns: int) -> float:
    return ns / 1e6


# -- worker side -------------------------------------------------------------------------------


class Client:
    """One WebSocket client: optional sender, always a receiver that timestamps deliveries."""

    __slots__ = (
        "ack_lat",
        "acked",
        "acks_rx_window",
        "deliveries_rx_window",
        "dups",
        "errors",
        "fan_in_window",
        "fan_lat",
        "gid",
        "inflight",
        "known_version",
        "last_rx",
        "late",
        "mode",
        "poisson",
        "port",
        "rate",
        "received",
        "room",
        "sent",
        "sent_in_window",
        "ws",
    )

    def __init__(self, spec: dict[str, Any]) -> None:
        self.gid: int = spec["gid"]
        self.room: str = spec["room"]
        self.mode: str = spec["mode"]
        self.rate: float = spec.get("rate", 0.0)
        # Poisson arrivals (exponential gaps, same mean rate) instead of a fixed period: with
        # fixed periods, which clients' edits collide is decided once by their phases.
        self.poisson: bool = bool(spec.get("poisson", False))
        self.ws = None
        self.port = 0  # the client's local TCP port: maps it to the server process holding it
        self.known_version = 0
        self.sent = 0
        self.sent_in_window = 0
        self.acked = 0
        self.acks_rx_window = 0  # acks that arrived inside the window: the server's throughput
        self.deliveries_rx_window = 0
        self.late = 0
        self.inflight: deque[int] = deque()
        self.ack_lat: list[int] = []
        self.fan_lat: list[int] = []
        self.fan_in_window = 0
        self.received: dict[int, set[int]] = {}
        self.dups = 0
        self.errors: Counter[str] = Counter()
        self.last_rx = 0


async def _connect(ws_base: str, client: Client, sem: asyncio.Semaphore, query: str = "") -> None:
    from bench.targets import ws_connect

    async with sem:
        url = f"{ws_base}/ws/{client.room}?mode={client.mode}{query}"
        client.ws = await ws_connect(url)
        with contextlib.suppress(Exception):
            client.port = client.ws.local_address[1]
        init = json.loads(await asyncio.wait_for(client.ws.recv(), 30))
        if init.get("type") != "init":
            raise RuntimeError(f"expected init, got {init}")
        client.known_version = init["version"]


async def _receive(client: Client, window: list[int]) -> None:
    """Read every frame until the socket closes; O(1) string checks, no JSON on the hot path."""
    ws = client.ws
    received = client.received
    try:
        async for frame in ws:
            now = time.monotonic_ns()
            client.last_rx = now
            head = frame[:14]
            if head.startswith('{"type":"ack"'):
                if window[0] <= now <= window[1]:
                    client.acks_rx_window += 1
                if client.inflight:
                    sent_at = client.inflight.popleft()
                    client.acked += 1
                    if window[0] <= sent_at <= window[1]:
                        client.ack_lat.append(now - sent_at)
                match = VERSION_RE.search(frame, 0, 40)
                if match:
                    version = int(match.group(1))
                    if version > client.known_version:
                        client.known_version = version
            elif head.startswith('{"type":"op"') or head.startswith('{"type":"sync_'):
                match = MARK_RE.search(frame, 0, 400)
                if head.startswith('{"type":"op"'):
                    vmatch = VERSION_RE.search(frame, 0, 40)
                    if vmatch:
                        version = int(vmatch.group(1))
                        if version > client.known_version:
                            client.known_version = version
                if match is None:
                    continue
                sent_at = int(match.group(1))
                sender = int(match.group(2))
                seqs = received.get(sender)
                if seqs is None:
                    seqs = received[sender] = set()
                n = int(match.group(3))
                if n in seqs:
                    client.dups += 1
                    continue
                seqs.add(n)
                if window[0] <= now <= window[1]:
                    client.deliveries_rx_window += 1
                if window[0] <= sent_at <= window[1]:
                    client.fan_lat.append(now - sent_at)
                    client.fan_in_window += 1
            elif head.startswith('{"type":"error'):
                try:
                    client.errors[json.loads(frame).get("code", "?")] += 1
                except ValueError:
                    client.errors["?"] += 1
            # init / join / leave / pong / cursor / typing: nothing to measure
    except Exception as error:  # a dropped connection is a result, not a crash
        rcvd = getattr(error, "rcvd", None)  # websockets' ConnectionClosed: the server's close
        detail = f":{rcvd.code}:{rcvd.reason[:40]}" if rcvd is not None else ":no close frame"
        client.errors[f"closed:{type(error).__name__}{detail}"] += 1


def _edit(client: Client, now_ns: int, doc: str) -> str:
    client.sent += 1
    mark = f"t={now_ns};s={client.gid};n={client.sent}\n"
    if client.mode == "ops":
        # An insert at 0 is valid at any base version; the server transforms it as needed.
        return json.dumps(
            {"type": "op", "version": client.known_version, "seq": client.sent, "op": [mark]},
            separators=(",", ":"),
        )
    # No "version": the diff is taken against the head, so the result is exactly this text.
    return json.dumps({"type": "sync_code", "code": mark + doc}, separators=(",", ":"))


async def _send_loop(client: Client, t0: int, window: list[int], doc: str, phase: float) -> None:
    """Open loop: edit k goes at t0 + (k + phase) / rate whatever the acks do (or, for a
    Poisson client, after exponential gaps of mean 1 / rate); bounded."""
    interval_ns = int(1e9 / client.rate)
    end = window[1]
    next_at = t0 + int(phase * interval_ns)
    max_sends = int((end - t0) / interval_ns) + 2
    gaps = None
    if client.poisson:
        gaps = random.Random(client.gid * 1_000_003 + int(phase * 1e9))
        max_sends = 3 * max_sends + 20  # the bound; the window's end stops it first
    for _ in range(max_sends):
        if next_at >= end:
            break
        delay = next_at - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        now = time.monotonic_ns()
        if now - next_at > LATE_SEND_NS:
            client.late += 1
        frame = _edit(client, now, doc)
        client.inflight.append(now)
        if window[0] <= now <= window[1]:
            client.sent_in_window += 1
        try:
            await client.ws.send(frame)
        except Exception as error:
            client.errors[f"send:{type(error).__name__}"] += 1
            return
        if gaps is None:
            next_at += interval_ns
        else:
            next_at += max(1, int(gaps.expovariate(client.rate) * 1e9))


async def _cpu_window(window: list[int], out: dict[str, float]) -> None:
    """This worker's CPU seconds over the measured window."""
    for key, at in (("cpu0", window[0]), ("cpu1", window[1])):
        delay = at - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        out[key] = time.process_time()
        out[key + "_at"] = time.monotonic_ns()


async def _wait_go(conn) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ok = await loop.run_in_executor(None, conn.poll, PHASE_TIMEOUT_S)
    if not ok:
        raise TimeoutError("no 'go' from the parent")
    message = conn.recv()
    if message[0] != "go":
        raise RuntimeError(f"expected go, got {message!r}")
    return message[1]


async def _close_all(clients: list[Client], timeout: float = 20) -> None:
    sockets = [c.ws for c in clients if c.ws is not None]
    if sockets:
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), timeout
        )


async def job_load(conn, job: dict[str, Any]) -> dict[str, Any]:
    """Connect every client, then (on go) send edits open-loop and time every delivery."""
    clients = [Client(spec) for spec in job["clients"]]
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.monotonic()
    await asyncio.gather(*(_connect(job["ws_base"], c, sem) for c in clients))
    connect_s = time.monotonic() - started
    window = [0, 0]  # shared with the receive loops; set on go
    receivers = [asyncio.create_task(_receive(c, window)) for c in clients]
    conn.send(("ready", {"clients": len(clients), "connect_s": connect_s}))
    go = await _wait_go(conn)
    t0, w0, w1 = go["t0"], go["w0"], go["w1"]
    window[0], window[1] = w0, w1
    cpu: dict[str, float] = {}
    rng = random.Random(job.get("seed", 0))
    doc = job.get("doc", "")
    senders = [
        asyncio.create_task(_send_loop(c, t0, window, doc, rng.random()))
        for c in clients
        if c.rate > 0
    ]
    cpu_task = asyncio.create_task(_cpu_window(window, cpu))
    await asyncio.gather(*senders)
    await cpu_task
    # Drain: until no frame for `quiet_s`, at most `drain_s`.
    drain_end = time.monotonic_ns() + int(job["drain_s"] * 1e9)
    quiet_ns = int(job.get("quiet_s", 1.0) * 1e9)
    drain_capped = True
    for _ in range(int(job["drain_s"] / 0.05) + 1):
        now = time.monotonic_ns()
        last = max((c.last_rx for c in clients), default=0)
        if now - max(last, w1) >= quiet_ns:
            drain_capped = False
            break
        if now >= drain_end:
            break
        await asyncio.sleep(0.05)
    drained_s = (time.monotonic_ns() - w1) / 1e9
    await _close_all(clients)
    await asyncio.wait_for(asyncio.gather(*receivers, return_exceptions=True), 20)
    return {
        "connect_s": connect_s,
        "drain_capped": drain_capped,
        "drained_s": drained_s,
        "cpu_s": cpu.get("cpu1", 0) - cpu.get("cpu0", 0),
        "window_s": (cpu.get("cpu1_at", w1) - cpu.get("cpu0_at", w0)) / 1e9,
        "clients": [
            {
                "gid": c.gid,
                "room": c.room,
                "port": c.port,
                "sent": c.sent,
                "sent_in_window": c.sent_in_window,
                "acked": c.acked,
                "acks_rx_window": c.acks_rx_window,
                "deliveries_rx_window": c.deliveries_rx_window,
                "late": c.late,
                "ack_lat": c.ack_lat,
                "fan_lat": c.fan_lat,
                "fan_in_window": c.fan_in_window,
                "received": {sender: len(seqs) for sender, seqs in c.received.items()},
                "dups": c.dups,
                "errors": dict(c.errors),
            }
            for c in clients
        ],
    }


async def job_idle(conn, job: dict[str, Any]) -> dict[str, Any]:
    """Open many connections and keep them silent until the parent says go."""
    clients = [Client(spec) for spec in job["clients"]]
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.monotonic()
    results = await asyncio.gather(
        *(_connect(job["ws_base"], c, sem) for c in clients), return_exceptions=True
    )
    connect_s = time.monotonic() - started
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    window = [0, 0]
    receivers = [asyncio.create_task(_receive(c, window)) for c in clients if c.ws is not None]
    conn.send(("ready", {"clients": len(clients) - len(failed), "connect_s": connect_s}))
    await _wait_go(conn)
    await _close_all(clients, timeout=60)
    await asyncio.wait_for(asyncio.gather(*receivers, return_exceptions=True), 30)
    errors: Counter[str] = Counter()
    for c in clients:
        errors.update(c.errors)
    return {
        "connected": len(clients) - len(failed),
        "failed": failed[:5],
        "failed_count": len(failed),
        "connect_s": connect_s,
        "errors": dict(errors),
    }


async def job_pingpong(conn, job: dict[str, Any]) -> dict[str, Any]:
    """One client, sequential ping -> pong; RTT of each on this process's monotonic clock."""
    from bench.targets import ws_connect

    async with ws_connect(f"{job['ws_base']}/ws/{job['room']}?mode=text") as ws:
        await asyncio.wait_for(ws.recv(), 30)
        conn.send(("ready", {}))
        await _wait_go(conn)
        rtts = []
        deadline = time.monotonic() + job["max_s"]
        for _ in range(job["count"]):
            if time.monotonic() > deadline:
                break
            start = time.monotonic_ns()
            await ws.send('{"type":"ping"}')
            for _ in range(100):  # skip anything that is not the pong (bounded)
                frame = await asyncio.wait_for(ws.recv(), 10)
                if '"pong"' in frame:
                    break
            rtts.append(time.monotonic_ns() - start)
    return {"rtt": rtts}


async def job_join(conn, job: dict[str, Any]) -> dict[str, Any]:
    """Sequential joins: open a socket, wait for init (the room's whole code), close."""
    from bench.targets import ws_connect

    holder = None
    if job.get("holder"):
        holder = await ws_connect(f"{job['ws_base']}/ws/{job['room']}?mode=text")
        await asyncio.wait_for(holder.recv(), 30)
    conn.send(("ready", {}))
    await _wait_go(conn)
    times = []
    sizes = set()
    deadline = time.monotonic() + job["max_s"]
    try:
        for _ in range(job["count"]):
            if time.monotonic() > deadline:
                break
            start = time.monotonic_ns()
            ws = await ws_connect(f"{job['ws_base']}/ws/{job['room']}?mode=text")
            frame = await asyncio.wait_for(ws.recv(), 30)
            times.append(time.monotonic_ns() - start)
            sizes.add(len(json.loads(frame)["code"]))
            await ws.close()
            if holder is not None:
                # Drain the holder's join/leave notices so its buffer stays empty (bounded).
                for _ in range(4):
                    try:
                        await asyncio.wait_for(holder.recv(), 0.001)
                    except TimeoutError:
                        break
    finally:
        if holder is not None:
            await holder.close()
    return {"join": times, "code_sizes": sorted(sizes)}


JOBS = {"load": job_load, "idle": job_idle, "pingpong": job_pingpong, "join": job_join}


def _new_loop():
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def worker_main(conn, index: int, use_uvloop: bool) -> None:
    """A worker process: run jobs from the parent until told to stop (None)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = _new_loop if use_uvloop else asyncio.new_event_loop
    while True:
        if not conn.poll(3600):
            return
        job = conn.recv()
        if job is None:
            return
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                result = runner.run(JOBS[job["kind"]](conn, job))
            conn.send(("done", result))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


# -- parent side -------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class WorkerPool:
    """N long-lived generator processes (spawned, so they share nothing with the parent)."""

    def __init__(self, count: int, use_uvloop: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self.count = count
        self.uvloop = use_uvloop
        self.workers = []
        for index in range(count):
            parent_end, child_end = ctx.Pipe()
            process = ctx.Process(
                target=worker_main, args=(child_end, index, use_uvloop), daemon=True
            )
            process.start()
            self.workers.append((process, parent_end))

    def _recv(self, index: int, timeout: float) -> tuple[str, Any]:
        _process, conn = self.workers[index]
        if not conn.poll(timeout):
            raise WorkerError(f"worker {index} did not answer in {timeout:.0f} s")
        kind, payload = conn.recv()
        if kind == "error":
            raise WorkerError(f"worker {index} failed:\n{payload}")
        return kind, payload

    def run(self, jobs: list[dict | None], on_ready, timeout: float = 300) -> list[Any]:
        """Send jobs[i] to worker i; once all are ready, `on_ready(infos)` returns the go
        parameters (and may block, e.g. to sample the server); returns (go result, results)."""
        active = [i for i, job in enumerate(jobs) if job is not None]
        for i in active:
            self.workers[i][1].send(jobs[i])
        infos = {}
        failure: WorkerError | None = None
        for i in active:
            try:
                _kind, info = self._recv(i, timeout)
            except WorkerError as error:
                failure = failure or error
                continue
            infos[i] = info
        if failure is not None:
            for i in infos:  # release the ready ones so their next job starts clean
                self.workers[i][1].send(("go", {"t0": 0, "w0": 0, "w1": 0}))
            for i in infos:
                with contextlib.suppress(WorkerError):
                    self._recv(i, timeout)
            raise failure
        go, after = on_ready(infos)
        for i in active:
            self.workers[i][1].send(("go", go))
        results = {}
        if after is not None:
            after()
        for i in active:
            _kind, result = self._recv(i, timeout)
            results[i] = result
        return [results.get(i) for i in range(len(jobs))]

    def close(self) -> None:
        for _process, conn in self.workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for process, _conn in self.workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        self.workers = []
