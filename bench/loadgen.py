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
        "acks",
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
        # False for a server that never acks (the prototype): no in-flight bookkeeping.
        self.acks: bool = spec.get("acks", True)
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


async def _connect(
    ws_base: str, client: Client, sem: asyncio.Semaphore, query: str = "", origin: str | None = None
) -> dict[str, Any]:
    from bench.targets import ws_connect

    async with sem:
        url = f"{ws_base}/ws/{client.room}?mode={client.mode}{query}"
        client.ws = await ws_connect(url, origin=origin)
        with contextlib.suppress(Exception):
            client.port = client.ws.local_address[1]
        init = json.loads(await asyncio.wait_for(client.ws.recv(), 30))
        if init.get("type") != "init":
            raise RuntimeError(f"expected init, got {init}")
        client.known_version = init["version"]
        return init


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


def _mark(client: Client, now_ns: int) -> str:
    """What an edit carries so that any receiver can time it and tell it apart."""
    return f"t={now_ns};s={client.gid};n={client.sent}\n"


def _edit(client: Client, now_ns: int, doc: str) -> str:
    client.sent += 1
    mark = _mark(client, now_ns)
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
        if client.acks:
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


async def _close_sockets(sockets: list, timeout: float = 20) -> None:
    if sockets:
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), timeout
        )


async def _close_all(clients: list[Client], timeout: float = 20) -> None:
    await _close_sockets([c.ws for c in clients if c.ws is not None], timeout)


async def _drain(clients: list[Client], since_ns: int, drain_s: float, quiet_s: float):
    """Wait until no frame arrived for `quiet_s`, at most `drain_s`: (capped, seconds since
    `since_ns`). A late delivery is not a missing one."""
    drain_end = time.monotonic_ns() + int(drain_s * 1e9)
    quiet_ns = int(quiet_s * 1e9)
    capped = True
    for _ in range(int(drain_s / 0.05) + 1):
        now = time.monotonic_ns()
        last = max((c.last_rx for c in clients), default=0)
        if now - max(last, since_ns) >= quiet_ns:
            capped = False
            break
        if now >= drain_end:
            break
        await asyncio.sleep(0.05)
    return capped, (time.monotonic_ns() - since_ns) / 1e9


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
    drain_capped, drained_s = await _drain(clients, w1, job["drain_s"], job.get("quiet_s", 1.0))
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


def _origin(ws_base: str) -> str:
    """The Origin a browser on the server's own page sends (ws://host -> http://host)."""
    return "http" + ws_base[len("ws") :]


async def _phase_done(conn, payload: dict[str, Any]) -> dict[str, Any]:
    """Tell the parent a phase is over ("back") and wait for its go for the next one."""
    conn.send(("back", payload))
    return await _wait_go(conn)


async def job_connect(conn, job: dict[str, Any]) -> dict[str, Any]:
    """Open-loop connections: connection i (numbered over all workers) starts at
    t0 + i / rate, with the Origin a browser sends, and waits for its init. They stay open
    until the parent has read the server's CPU, then close. With `until_ns` in go (a profile),
    rounds repeat, each closing its connections, until that time."""
    from bench.targets import ws_connect

    specs = job["clients"]
    interval_ns = 1e9 / job["rate"]
    origin = _origin(job["ws_base"])
    errors: Counter[str] = Counter()
    conn.send(("ready", {"clients": len(specs)}))
    go = await _wait_go(conn)
    t0, until = go["t0"], go.get("until_ns")

    async def one(spec: dict[str, Any], start_at: int, sockets: list) -> tuple[int, int] | None:
        delay = start_at - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        started = time.monotonic_ns()
        try:
            ws = await ws_connect(
                f"{job['ws_base']}/ws/{spec['room']}?mode={spec['mode']}", origin=origin
            )
        except Exception as error:
            errors[f"connect:{type(error).__name__}"] += 1
            return None
        sockets.append(ws)
        try:
            frame = await asyncio.wait_for(ws.recv(), 60)
        except Exception as error:
            errors[f"init:{type(error).__name__}"] += 1
            return None
        if not frame.startswith('{"type":"init"'):
            errors["first frame not init"] += 1
            return None
        return started, time.monotonic_ns()

    rounds = 0
    max_rounds = 1 if until is None else 10_000
    for _ in range(max_rounds):
        sockets: list = []
        times = await asyncio.gather(
            *(one(spec, t0 + int(spec["index"] * interval_ns), sockets) for spec in specs)
        )
        rounds += 1
        if until is None:
            break
        await _close_sockets(sockets)
        t0 = time.monotonic_ns()
        if t0 >= until:
            break
    done = [t for t in times if t is not None]
    last_init = max((end for _, end in done), default=0)
    if until is None:
        await _phase_done(conn, {"opened": len(done), "last_init_ns": last_init})
        await _close_sockets(sockets)
    return {
        "rounds": rounds,
        "opened": len(done),
        "first_start_ns": min((start for start, _ in done), default=0),
        "last_init_ns": last_init,
        "init_ns": [end - start for start, end in done],
        "errors": dict(errors),
    }


# -- the reconnect storm -----------------------------------------------------------------------

SEQ_RE = re.compile(r'"seq":(\d+)')
RECONNECT_ATTEMPTS = 5
STORM_MAX_S = 900  # no storm phase lasts longer (bounds every loop below)


class StormClient(Client):
    """A client that comes back after the drop, as the real ones do. An ops client keeps
    typing while it is away (its edits wait in `pending`), resumes with `version` = the last
    version it saw and `client` = its stable id, then sends everything not acked (the op in
    flight at the drop, same seq, and what was typed meanwhile). A text client types nothing
    while away, reconnects and takes the whole text from init. Until everyone is back (the
    parent's go), what is typed waits, so that the storm's window holds no live typing. An ops
    client resumes with the client secret its first init gave it, as real clients do."""

    __slots__ = (
        "back_ns",
        "client_id",
        "client_secret",
        "flushed",
        "live",
        "lost",
        "n_drop",
        "pending",
        "receiver",
        "regressions",
        "sent_at",
        "sent_on_resume",
        "tracks_acks",
    )

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__({**spec, "acks": False})  # acks are matched in `pending` instead
        self.tracks_acks: bool = spec.get("acks", True)
        self.client_id: str = spec["client_id"]
        self.client_secret: str | None = None  # from the first init (servers that bind ids)
        # Edits not acked yet, in order: n -> mark (ops acks carry the seq, text acks come in
        # order). For a server that never acks (the prototype) it stays empty.
        self.pending: dict[int, str] = {}
        self.sent_at: list[int] = []  # edit n's send (or, away, typing) time is sent_at[n - 1]
        self.live = False  # edits go out as they are typed (else an ops client queues them)
        self.flushed = 0  # the last n sent on the current connection
        self.n_drop = 0
        self.back_ns = 0
        self.lost = 0  # text: unacked at the drop, fate unknown (text mode has no resume)
        self.sent_on_resume = 0
        self.regressions = 0  # an init older than what the client had already seen
        self.receiver: asyncio.Task | None = None

    def query(self, resume: bool) -> str:
        if self.mode != "ops":
            return ""
        query = f"&client={self.client_id}"
        if resume and self.client_secret is not None:
            query += f"&client_secret={self.client_secret}"
        return query + (f"&version={self.known_version}" if resume else "")

    def op_frame(self, seq: int, mark: str) -> str:
        frame = {"type": "op", "version": self.known_version, "seq": seq, "op": [mark]}
        return json.dumps(frame, separators=(",", ":"))


async def _storm_send_loop(
    client: StormClient, t0: int, end: list[int], doc: str, phase: float
) -> None:
    """Type at `client.rate` from t0 until end[0] (which the parent sets once everyone is
    back): edits go out while the client is live; otherwise an ops client queues them."""
    interval_ns = int(1e9 / client.rate)
    next_at = t0 + int(phase * interval_ns)
    for _ in range(int(STORM_MAX_S * client.rate) + 2):
        if next_at >= end[0]:
            break
        delay = next_at - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
            if next_at >= end[0]:
                break
        now = time.monotonic_ns()
        next_at += interval_ns
        if not client.live and client.mode != "ops":
            continue  # a text client away types nothing it could send
        client.sent += 1
        client.sent_at.append(now)
        mark = _mark(client, now)
        if client.tracks_acks:
            client.pending[client.sent] = mark
        if not client.live:
            continue  # queued: sent on resume and once everyone is back
        client.flushed = client.sent
        if client.mode == "ops":
            frame = client.op_frame(client.sent, mark)
        else:
            frame = json.dumps({"type": "sync_code", "code": mark + doc}, separators=(",", ":"))
        try:
            await client.ws.send(frame)
        except Exception as error:
            client.errors[f"send:{type(error).__name__}"] += 1


def _storm_seen(client: StormClient, text: str) -> None:
    """An edit's mark, wherever it came from (a broadcast or a resumed op)."""
    match = MARK_RE.search(text, 0, 400)
    if match is None:
        return
    seqs = client.received.setdefault(int(match.group(2)), set())
    n = int(match.group(3))
    if n in seqs:
        client.dups += 1
    else:
        seqs.add(n)


def _storm_version(client: StormClient, match: re.Match | None) -> None:
    if match:
        client.known_version = max(client.known_version, int(match.group(1)))


async def _storm_receive(client: StormClient, ws) -> None:
    try:
        async for frame in ws:
            client.last_rx = time.monotonic_ns()
            head = frame[:14]
            if head.startswith('{"type":"ack"'):
                _storm_version(client, VERSION_RE.search(frame, 0, 40))
                if client.pending:
                    seq = SEQ_RE.search(frame) if client.mode == "ops" else None
                    key = int(seq.group(1)) if seq else next(iter(client.pending))
                    if client.pending.pop(key, None) is not None:
                        client.acked += 1
            elif head.startswith('{"type":"op"'):
                _storm_version(client, VERSION_RE.search(frame, 0, 40))
                _storm_seen(client, frame)
            elif head.startswith('{"type":"sync_'):
                # A text broadcast carries its version after the whole code.
                _storm_version(client, VERSION_RE.search(frame, max(0, len(frame) - 120)))
                _storm_seen(client, frame)
            elif head.startswith('{"type":"error'):
                try:
                    client.errors[json.loads(frame).get("code", "?")] += 1
                except ValueError:
                    client.errors["?"] += 1
    except Exception as error:
        if ws is client.ws:  # not the drop we caused
            client.errors[f"closed:{type(error).__name__}"] += 1


def _storm_init(client: StormClient, init: dict[str, Any]) -> None:
    """Take in a (re)connection's init: its version, and on resume the ops missed (one with
    our client id and a pending seq is our ack)."""
    if init["version"] < client.known_version:
        client.regressions += 1
    for entry in init.get("ops") or []:
        if entry.get("client") == client.client_id:
            if client.pending.pop(entry.get("seq"), None) is not None:
                client.acked += 1
            continue
        for part in entry.get("op") or []:
            if isinstance(part, str):
                _storm_seen(client, part)
    client.known_version = init["version"]


async def _storm_flush(client: StormClient) -> int:
    """Send, in seq order, the pending ops not sent on this connection yet (more may be typed
    while these go out: bounded rounds). Returns how many were sent."""
    sent = 0
    for _ in range(100):
        todo = [n for n in client.pending if n > client.flushed]
        if not todo:
            break
        for n in todo:
            client.flushed = n
            mark = client.pending.get(n)
            if mark is None:  # acked meanwhile (it had been committed)
                continue
            sent += 1
            try:
                await client.ws.send(client.op_frame(n, mark))
            except Exception as error:
                client.errors[f"resend:{type(error).__name__}"] += 1
    return sent


async def _storm_resume(
    ws_base: str, client: StormClient, sem: asyncio.Semaphore, origin: str
) -> bool:
    """Reconnect (bounded retries), take init, send again what is pending (ops)."""
    from bench.targets import ws_connect

    url = f"{ws_base}/ws/{client.room}?mode={client.mode}{client.query(resume=True)}"
    for attempt in range(RECONNECT_ATTEMPTS):
        ws = frame = None
        async with sem:
            try:
                ws = await ws_connect(url, origin=origin)
                frame = await asyncio.wait_for(ws.recv(), 60)
            except Exception as error:
                client.errors[f"reconnect:{type(error).__name__}"] += 1
        if frame is None or not frame.startswith('{"type":"init"'):
            if ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
            await asyncio.sleep(0.2 * (attempt + 1))
            continue
        client.back_ns = time.monotonic_ns()
        client.ws = ws
        _storm_init(client, json.loads(frame))
        client.receiver = asyncio.create_task(_storm_receive(client, ws))
        client.flushed = 0
        if client.mode == "ops":
            client.sent_on_resume += await _storm_flush(client)
        return True
    return False


async def job_storm(conn, job: dict[str, Any]) -> dict[str, Any]:
    """Connect every client; on go, type from t0; at t_drop every connection is aborted at
    once (no close frame, as a network blip or a proxy restart looks to the server) and every
    client comes back (`concurrency` handshakes in flight per worker; ops clients send what was
    in flight and typed while away). Report when the last is back; on the next go (with the end
    of typing), send what was typed meanwhile, type live until then, drain, and report what
    each client sent and got."""
    clients = [StormClient(spec) for spec in job["clients"]]
    origin = _origin(job["ws_base"])
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    inits = await asyncio.gather(
        *(_connect(job["ws_base"], c, sem, c.query(resume=False), origin) for c in clients)
    )
    for c, init in zip(clients, inits, strict=True):
        c.client_secret = init.get("client_secret")
        c.live = True
        c.receiver = asyncio.create_task(_storm_receive(c, c.ws))
    conn.send(("ready", {"clients": len(clients)}))
    go = await _wait_go(conn)
    t0, t_drop = go["t0"], go["t_drop"]
    rng = random.Random(job.get("seed", 0))
    doc = job.get("doc", "")
    end = [t0 + int(STORM_MAX_S * 1e9)]  # set by the parent once everyone is back
    senders = [
        asyncio.create_task(_storm_send_loop(c, t0, end, doc, rng.random()))
        for c in clients
        if c.rate > 0
    ]
    delay = t_drop - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)

    # The drop: every connection at once, then everyone comes back.
    old = [c.ws for c in clients]
    for c in clients:
        c.live = False
        c.n_drop = c.sent
        c.ws = None  # the receive loops now know this close is ours
    for ws in old:
        with contextlib.suppress(Exception):
            ws.transport.abort()
    for c in clients:
        c.receiver.cancel()
    await asyncio.gather(*(c.receiver for c in clients), return_exceptions=True)
    for c in clients:
        if c.mode != "ops":
            c.lost = len(c.pending)
            c.pending.clear()
    storm_sem = asyncio.Semaphore(job["concurrency"])
    back = await asyncio.gather(
        *(_storm_resume(job["ws_base"], c, storm_sem, origin) for c in clients)
    )
    go = await _phase_done(
        conn, {"back": sum(back), "last_back_ns": max((c.back_ns for c in clients), default=0)}
    )
    end[0] = go["t_end"]
    for c in clients:  # everyone is back: what was typed meanwhile goes out, then live typing
        if c.ws is not None and c.mode == "ops":
            await _storm_flush(c)
        c.live = c.ws is not None
    await asyncio.wait_for(asyncio.gather(*senders), STORM_MAX_S)
    drain_capped, drained_s = await _drain(clients, end[0], job["drain_s"], job.get("quiet_s", 1.0))
    await _close_all(clients)
    receivers = [c.receiver for c in clients if c.receiver is not None]
    await asyncio.wait_for(asyncio.gather(*receivers, return_exceptions=True), 20)
    return {
        "drain_capped": drain_capped,
        "drained_s": drained_s,
        "clients": [
            {
                "gid": c.gid,
                "room": c.room,
                "sent": c.sent,
                "sent_at": c.sent_at,
                "n_drop": c.n_drop,
                "acked": c.acked,
                # Text edits pending at the drop were moved to `lost`: these are later ones.
                "unacked": len(c.pending),
                "lost": c.lost,
                "sent_on_resume": c.sent_on_resume,
                "regressions": c.regressions,
                "back_ns": c.back_ns,
                "received": {sender: sorted(seqs) for sender, seqs in c.received.items()},
                "dups": c.dups,
                "errors": dict(c.errors),
            }
            for c in clients
        ],
    }


JOBS = {
    "load": job_load,
    "idle": job_idle,
    "pingpong": job_pingpong,
    "join": job_join,
    "connect": job_connect,
    "storm": job_storm,
}


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


# Every phase of every job ends at once with these (used to release workers after a failure).
EMPTY_GO = {"t0": 0, "w0": 0, "w1": 0, "t_drop": 0, "t_end": 0}


class WorkerPool:
    """N long-lived generator processes (spawned, so they share nothing with the parent)."""

    def __init__(self, count: int, use_uvloop: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self.count = count
        self.uvloop = use_uvloop
        self.finished: set[int] = set()
        self.waiting: set[int] = set()
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
        parameters and `after` (or None); `after()` runs while the workers work (it may sample
        the server, or step a phased job with `phase_reports` and `send`). Returns each
        worker's result."""
        active = [i for i, job in enumerate(jobs) if job is not None]
        self.finished = set()  # workers whose job of this run ended early (an error)
        self.waiting = set()  # workers waiting for a go
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
            self.waiting.add(i)
        if failure is not None:
            self._release(list(infos), timeout)
            raise failure
        go, after = on_ready(infos)
        self.send(active, ("go", go))
        results = {}
        if after is not None:
            try:
                after()
            except BaseException:
                self._release([i for i in active if i not in self.finished], timeout)
                raise
        for i in active:
            _kind, result = self._recv(i, timeout)
            results[i] = result
        return [results.get(i) for i in range(len(jobs))]

    def phase_reports(self, indices: list[int], timeout: float) -> dict[int, Any]:
        """One "back" report (a phase is over) from each of these workers."""
        out = {}
        failure: WorkerError | None = None
        for i in indices:
            try:
                kind, payload = self._recv(i, timeout)
            except WorkerError as error:
                self.finished.add(i)
                failure = failure or error
                continue
            if kind != "back":
                self.finished.add(i)
                failure = failure or WorkerError(f"worker {i}: expected a phase's end, got {kind}")
                continue
            out[i] = payload
            self.waiting.add(i)
        if failure is not None:
            raise failure
        return out

    def send(self, indices: list[int], message: tuple[str, Any]) -> None:
        for i in indices:
            self.workers[i][1].send(message)
            if message[0] == "go":
                self.waiting.discard(i)

    def _release(self, indices: list[int], timeout: float) -> None:
        """After a failure: walk these workers through their remaining phases with an empty
        go, each sent only once the worker waits for it, and read until each has finished,
        so that their next job starts clean (bounded: a job has at most a few phases)."""
        for i in indices:
            if i in self.waiting:
                self.send([i], ("go", EMPTY_GO))
            for _ in range(4):
                try:
                    kind, _payload = self._recv(i, timeout)
                except WorkerError:
                    break
                if kind != "back":
                    break
                self.send([i], ("go", EMPTY_GO))

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
