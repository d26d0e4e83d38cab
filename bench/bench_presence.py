"""Presence at scale: N connections join one room; what presence costs each member per join.

    python -m bench.bench_presence                       # 100, 200 and 500 users (~3 minutes)
    python -m bench.bench_presence --users 100,500 --launchers runserver,serve

For each launcher and room size, on a fresh server (SQLite, the default settings) two runs:

- deltas: the server as shipped (COLLAB_PRESENCE_FULL_LIST_MAX=50): whole lists up to 50 users,
  `presence` deltas above;
- full lists: COLLAB_PRESENCE_FULL_LIST_MAX raised above the room, so every `join` carries the
  whole list, as before deltas existed (the baseline; skipped above --full-max users, where the
  client here would spend minutes parsing it: the issue measured 1.87 GB at 500).

The N connections are opened open-loop at --rate per second (connection i at t0 + i / rate,
whether or not earlier ones are done), each with a 10 s handshake timeout, and read everything.
A watcher connection, in the room first, pings every 100 ms meanwhile (its pong delay shows the
server stalling). Done when every connection has heard of everyone who came after it.

Printed per run: handshake timeouts; the presence bytes the members received (join, leave and
presence frames; the joiners' own init lists apart), and per join per member, i.e. divided by the
N(N-1)/2 (arrival, member already there) pairs; the frames per member; the watcher's pong p50 and
max; the time until everyone knew everyone; the server process's CPU per arrival over that
time; the machine's load average (it is shared, so timeouts depend on it). Results also go to
bench/results/presence-<UTC time>.json. Only 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.e2e.server import launched  # noqa: E402

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
HANDSHAKE_TIMEOUT_S = 10
EVERYONE_KNOWN_TIMEOUT_S = 180
PING_EVERY_S = 0.1
TARGET_BYTES_PER_JOIN_PER_MEMBER = 2048
# Rate limits and the room cap are not what is measured.
SERVER_ENV = {
    "COLLAB_RATE_BURST": "1000000000",
    "COLLAB_RATE_PER_S": "1000000000",
    "COLLAB_ROOM_MAX_CONNECTIONS": "100000",
}
PRESENCE_PREFIXES = ('{"type":"join"', '{"type":"leave"', '{"type":"presence"')


class Member:
    """One connection: counts the presence bytes it receives and whom it has heard of."""

    def __init__(self) -> None:
        self.ws: Any = None
        self.init_bytes = 0
        self.known: set[str] = set()
        self.presence_bytes = 0
        self.presence_frames = 0
        self.failed: str | None = None
        self.progress = asyncio.Event()

    async def run(self, url: str, opened: asyncio.Future) -> None:
        try:
            self.ws = await websockets.connect(
                url, open_timeout=HANDSHAKE_TIMEOUT_S, max_size=None, ping_interval=None
            )
            first = await asyncio.wait_for(self.ws.recv(), HANDSHAKE_TIMEOUT_S)
        except (TimeoutError, OSError, websockets.WebSocketException) as error:
            self.failed = type(error).__name__
            opened.set_result(False)
            return
        init = json.loads(first)
        self.init_bytes = len(first.encode())
        self.known = {user["id"] for user in init["users"]}
        opened.set_result(True)
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.ws:
                if frame.startswith(PRESENCE_PREFIXES):
                    self.presence_bytes += len(frame.encode())
                    self.presence_frames += 1
                    message = json.loads(frame)
                    if message["type"] == "join":
                        self.known.add(message["user"]["id"])
                    elif message["type"] == "presence":
                        self.known.update(user["id"] for user in message["joined"])
                    self.progress.set()


async def watch(url: str, stop: asyncio.Event) -> list[float]:
    """Pong delays of a connection pinging every PING_EVERY_S until `stop`."""
    delays = []
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        await ws.recv()  # init
        while not stop.is_set():
            sent = time.perf_counter()
            await ws.send('{"type":"ping"}')
            async with asyncio.timeout(60):
                while not (await ws.recv()).startswith('{"type":"pong"'):
                    pass
            delays.append(time.perf_counter() - sent)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PING_EVERY_S)
    return delays


async def join_run(server: Any, users: int, rate: float) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        room_id = (await http.post(f"{server.http_url}/rooms", json={"code": ""})).json()["room_id"]
    url = f"{server.ws_base}/ws/{room_id}?mode=ops"
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(url + "&name=watcher", stop))
    members = [Member() for _ in range(users)]
    process = psutil.Process(server.pid)
    cpu_before = sum(process.cpu_times()[:2])
    loop = asyncio.get_running_loop()
    opened = [loop.create_future() for _ in members]
    readers = []
    start = time.perf_counter()
    for number, (member, done) in enumerate(zip(members, opened, strict=True)):
        delay = start + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # open-loop pacing of the arrivals, not synchronisation
        readers.append(asyncio.create_task(member.run(f"{url}&name=u{number}", done)))
    await asyncio.gather(*opened)
    joined = [m for m in members if m.failed is None]
    everyone = set().union(*(m.known for m in joined)) if joined else set()
    # Everyone has heard of everyone who came after them: bounded, woken by each message.
    async with asyncio.timeout(EVERYONE_KNOWN_TIMEOUT_S):
        for member in joined:
            while not everyone <= member.known:
                member.progress.clear()
                await member.progress.wait()
    known_after_s = time.perf_counter() - start
    cpu_s = sum(process.cpu_times()[:2]) - cpu_before
    # Counted now: the leaves of the closes below are not part of joining.
    presence_bytes = sum(m.presence_bytes for m in joined)
    presence_frames = sum(m.presence_frames for m in joined)
    init_bytes = sum(m.init_bytes for m in joined)
    stop.set()
    pongs = await watcher
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*(m.ws.close() for m in joined), return_exceptions=True)
    pairs = len(joined) * (len(joined) - 1) / 2
    pongs.sort()
    return {
        "users": users,
        "joined": len(joined),
        "handshake_timeouts": sum(m.failed is not None for m in members),
        "presence_mb": round(presence_bytes / 1e6, 3),
        "bytes_per_join_per_member": round(presence_bytes / pairs) if pairs else None,
        "init_mb": round(init_bytes / 1e6, 3),
        "with_init_per_join_per_member": round((presence_bytes + init_bytes) / pairs)
        if pairs
        else None,
        "frames_per_member": round(presence_frames / len(joined), 1),
        "pong_p50_ms": round(pongs[len(pongs) // 2] * 1e3, 1) if pongs else None,
        "pong_max_ms": round(pongs[-1] * 1e3, 1) if pongs else None,
        "everyone_known_s": round(known_after_s, 2),
        # The serving process's CPU (user + system) from the first arrival until everyone knew
        # everyone, per arrival: what a join costs the server, whatever else the machine does.
        "server_cpu_ms_per_join": round(cpu_s / max(1, len(joined)) * 1e3, 2),
        # This machine is shared: the load average over the last minute, for context.
        "load_1min": round(os.getloadavg()[0], 1),
    }


def table(rows: list[dict]) -> str:
    columns = (
        ("launcher", "launcher"),
        ("mode", "mode"),
        ("users", "users"),
        ("handshake_timeouts", "timeouts"),
        ("presence_mb", "presence MB"),
        ("bytes_per_join_per_member", "B/join/member"),
        ("with_init_per_join_per_member", "+init B/j/m"),
        ("frames_per_member", "frames/member"),
        ("pong_p50_ms", "pong p50 ms"),
        ("pong_max_ms", "pong max ms"),
        ("everyone_known_s", "all known s"),
        ("server_cpu_ms_per_join", "server CPU ms/join"),
        ("load_1min", "load"),
    )
    lines = [" | ".join(title for _, title in columns), " | ".join("---" for _ in columns)]
    lines += [" | ".join(str(row.get(key, "")) for key, _ in columns) for row in rows]
    return "\n".join(f"| {line} |" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="100,200,500")
    parser.add_argument("--launchers", default="runserver")
    parser.add_argument("--rate", type=float, default=100.0, help="arrivals per second")
    parser.add_argument("--full-max", type=int, default=200, help="largest full-list run")
    args = parser.parse_args(argv)
    rows = []
    for launcher in args.launchers.split(","):
        for users in [int(n) for n in args.users.split(",")]:
            modes = [("deltas", {})]
            if users <= args.full_max:
                modes.append(("full lists", {"COLLAB_PRESENCE_FULL_LIST_MAX": str(users + 10)}))
            for mode, env in modes:
                with (
                    tempfile.TemporaryDirectory() as folder,
                    launched(launcher, Path(folder), env={**SERVER_ENV, **env}) as server,
                ):
                    row = asyncio.run(join_run(server, users, args.rate))
                row = {"launcher": launcher, "mode": mode, **row}
                print("BENCH", json.dumps(row), flush=True)
                rows.append(row)
    print(table(rows))
    deltas = [row for row in rows if row["mode"] == "deltas"]
    worst = max(row["bytes_per_join_per_member"] or 0 for row in deltas)
    timeouts = sum(row["handshake_timeouts"] for row in deltas)
    held = worst <= TARGET_BYTES_PER_JOIN_PER_MEMBER and timeouts == 0
    print(
        f"target (<= {TARGET_BYTES_PER_JOIN_PER_MEMBER} B per join per member, no handshake "
        f"timeout) with deltas: {'PASS' if held else 'FAIL'} (worst {worst} B, {timeouts} timeouts)"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"presence-{stamp}.json").write_text(json.dumps(rows, indent=2))
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
