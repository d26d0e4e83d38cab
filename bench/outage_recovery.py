"""Recovery after a Redis outage: how long editors wait for their first acknowledged edit once
Redis is back.

    python -m bench.outage_recovery                 # 20 editors, Redis down 15 s (~1 minute)
    python -m bench.outage_recovery --editors 20 --down 15

One server process (`manage.py runserver`) on a Redis of its own (a redis-server on a free port,
stopped and started again: the machine's Redis is never touched) and a fresh database on the
local PostgreSQL (BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432). N editors in
one room, each in ops mode: connected, it inserts one character every 0.2 s (each after the ack
of the one before); when its connection closes (or cannot open) it reconnects after a delay its
policy picks:

- `4503 retry` (collab-client.js): after close 4503, 0.5-1 s; otherwise exponential backoff from
  0.25 s, doubling, capped at 10 s, with jitter (half to all of the delay);
- `backoff only` (the baseline; the client before 4503 existed): that backoff whatever the code.

Both groups edit the same room at the same time, so they meet the same outage. Redis is stopped
after 3 s, started again after --down seconds; printed per policy: how long after Redis came
back each editor got its first ack (p50, max, and how many waited more than 1 s and 10 s), and
the close codes seen. Results also go to bench/results/outage-<UTC time>.json. Only 127.0.0.1;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import websockets

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.e2e.own_services import OwnRedis  # noqa: E402
from tests.e2e.services import PostgresDatabase, ServiceServer  # noqa: E402

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
POLICIES = ("4503 retry", "backoff only")
EDIT_EVERY_S = 0.2
MIN_DELAY_S = 0.25
MAX_DELAY_S = 10.0
UNAVAILABLE_RETRY_S = 1.0
BEFORE_S = 3.0
AFTER_BOUND_S = 60.0
WAIT_S = 10.0
SERVER_ENV = {"COLLAB_RATE_BURST": "1000000000", "COLLAB_RATE_PER_S": "1000000000"}


class Editor:
    def __init__(self, url: str, policy: str) -> None:
        self.url = url
        self.policy = policy
        self.attempt = 0
        self.closes: Counter[str] = Counter()
        self.acks: list[float] = []  # perf_counter times
        self.acked = asyncio.Event()

    def delay(self, code: int | None) -> float:
        """The wait before the next connection, after a close with `code` (None: no socket)."""
        cap = MAX_DELAY_S
        if self.policy == "4503 retry" and code == 4503:
            cap = UNAVAILABLE_RETRY_S
        delay = min(cap, MIN_DELAY_S * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return delay * (0.5 + random.random() / 2)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            code = await self.session(stop)
            self.closes[str(code)] += 1
            with contextlib.suppress(TimeoutError):
                # The backoff itself: what is measured is how long it makes the editor wait.
                await asyncio.wait_for(stop.wait(), self.delay(code))

    async def session(self, stop: asyncio.Event) -> int | None:
        try:
            async with websockets.connect(self.url, open_timeout=WAIT_S, max_size=None) as ws:
                async with asyncio.timeout(WAIT_S):
                    init = json.loads(await ws.recv())
                if init["type"] != "init":
                    return ws.close_code
                version, seq = init["version"], 0
                started = time.perf_counter()
                while not stop.is_set():
                    seq += 1
                    await ws.send(
                        json.dumps({"type": "op", "version": version, "seq": seq, "op": ["x"]})
                    )
                    async with asyncio.timeout(WAIT_S):
                        while (message := json.loads(await ws.recv()))["type"] != "ack":
                            version = max(version, message.get("version", version))
                    version = max(version, message["version"])
                    self.acks.append(time.perf_counter())
                    self.acked.set()
                    if time.perf_counter() - started > 5:
                        self.attempt = 0  # a connection that stayed up starts the backoff over
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), EDIT_EVERY_S)
                return 1000
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 1006
        except (OSError, TimeoutError, websockets.WebSocketException):
            return None


async def outage(server: ServiceServer, redis: OwnRedis, editors: int, down_s: float) -> dict:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        room_id = (await http.post(f"{server.http_url}/rooms", json={"code": ""})).json()["room_id"]
    url = f"{server.ws_base}/ws/{room_id}?mode=ops"
    group = [Editor(url, POLICIES[number % 2]) for number in range(editors)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(editor.run(stop)) for editor in group]
    await asyncio.sleep(BEFORE_S)  # editing before the outage (a measured window, not a sync)
    redis.stop()
    down_at = time.perf_counter()
    await asyncio.sleep(down_s)  # the outage's length
    redis.start()
    back_at = time.perf_counter()
    # Until every editor has an ack after Redis came back (bounded).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(AFTER_BOUND_S):
            for editor in group:
                while not any(t > back_at for t in editor.acks):
                    editor.acked.clear()
                    await editor.acked.wait()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    rows = []
    for policy in POLICIES:
        members = [e for e in group if e.policy == policy]
        waits = sorted(
            min((t for t in e.acks if t > back_at), default=float("inf")) - back_at for e in members
        )
        closes: Counter[str] = Counter()
        for editor in members:
            closes.update(editor.closes)
        rows.append(
            {
                "policy": policy,
                "editors": len(members),
                "down_s": round(back_at - down_at, 2),
                "first_ack_p50_s": round(waits[len(waits) // 2], 2),
                "first_ack_max_s": round(waits[-1], 2),
                "over_1s": sum(w > 1 for w in waits),
                "over_10s": sum(w > 10 for w in waits),
                "closes": dict(closes),
            }
        )
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--editors", type=int, default=20)
    parser.add_argument("--down", type=float, default=15.0, help="seconds Redis stays down")
    args = parser.parse_args(argv)
    postgres = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
    database = PostgresDatabase(postgres, f"collab_bench_{secrets.token_hex(6)}")
    database.create()
    with tempfile.TemporaryDirectory() as folder:
        redis = OwnRedis(Path(folder) / "redis").start()
        server = ServiceServer(
            Path(folder) / "server",
            database,
            {"REDIS_URL": redis.url, "DATABASE_URL": database.url, **SERVER_ENV},
        )
        try:
            server.start()
            result = asyncio.run(outage(server, redis, args.editors, args.down))
        finally:
            server.stop()
            redis.stop()
            database.drop()
    for row in result["rows"]:
        print("BENCH", json.dumps(row), flush=True)
    print("| policy | editors | down s | first ack p50 s | max s | > 1 s | > 10 s | closes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in result["rows"]:
        print(
            f"| {row['policy']} | {row['editors']} | {row['down_s']} | {row['first_ack_p50_s']} "
            f"| {row['first_ack_max_s']} | {row['over_1s']} | {row['over_10s']} | {row['closes']} |"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"outage-{stamp}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
