"""Failover under `manage.py serve --workers 2` (issue 15): a worker killed with SIGKILL under
load, and how soon its rooms are served again, with the warm standby (serve's default) and
without it (`--standby 0`, the baseline: the slot waits for its worker's restart), in one run.

    python -m bench.failover [--rounds 2] [--rooms 8] [--rate 4]

Each round starts `serve --workers 2` on Redis and a fresh PostgreSQL database, creates `rooms`
rooms whose home is worker 0 and as many whose home is worker 1 (rooms/affinity.py), and puts
two text-mode writers in each, every writer appending a token `rate` times a second and waiting
for its ack. After a warm-up it kills worker 0 (SIGKILL). Every writer whose connection ends
reconnects at once (then every 20 ms, as an eager client would) and goes on; its "served again"
time is from the kill to its first acknowledged edit after it. At the end every acknowledged
token must be in the room's text in the database ("lost" counts those that are not; the target
is 0), and the writers of worker 1's rooms should not have noticed ("disturbed").

Rounds alternate standby and baseline, so both see the machine's drifting load alike. Needs
Redis and PostgreSQL as the `scale` scenario does (BENCH_REDIS_URL, BENCH_POSTGRES_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import websockets

from bench.targets import PgDatabase, ServeTarget, postgres_server_url, redis_url, services_problem
from rooms import ot
from rooms.affinity import home_of

RECONNECT_PAUSE_S = 0.02  # between failed reconnects: an eager client
ACK_TIMEOUT_S = 10.0
AFTER_KILL_S = 6.0  # the load goes on this long after the kill (bounded by the slowest below)
SERVED_AGAIN_MAX_S = 60.0


@dataclass
class Writer:
    room: str
    name: str
    killed_room: bool
    acked: list[str] = field(default_factory=list)
    disconnects: int = 0
    reconnected_s: float | None = None  # from the kill to its first `init` after it
    served_again_s: float | None = None  # from the kill to its first ack after it


async def run_writer(writer: Writer, base: str, rate: float, stop: asyncio.Event, kill: dict):
    """Append tokens, one in flight at a time; reconnect at once whenever the connection ends."""
    number = 0
    while not stop.is_set():
        try:
            async with websockets.connect(
                f"{base}/ws/{writer.room}?name={writer.name}", open_timeout=10, max_size=None
            ) as socket:
                init = json.loads(await asyncio.wait_for(socket.recv(), ACK_TIMEOUT_S))
                text, version = init["code"], init["version"]
                if kill.get("at") is not None and writer.reconnected_s is None:
                    writer.reconnected_s = time.monotonic() - kill["at"]
                while not stop.is_set():
                    token = f"[{writer.name}.{number}]"
                    number += 1
                    sent = text + token
                    await socket.send(
                        json.dumps({"type": "sync_code", "code": sent, "version": version})
                    )
                    async with asyncio.timeout(ACK_TIMEOUT_S):
                        while True:
                            message = json.loads(await socket.recv())
                            if message["type"] == "sync_code":
                                text, version = message["code"], message["version"]
                            elif message["type"] == "ack":
                                break
                    text, version = message.get("code", sent), message["version"]
                    writer.acked.append(token)
                    killed_at = kill.get("at")
                    if killed_at is not None and writer.served_again_s is None:
                        writer.served_again_s = time.monotonic() - killed_at
                    await asyncio.sleep(1 / rate)  # the writer's pace: load, not synchronisation
        except (OSError, TimeoutError, websockets.ConnectionClosed, websockets.InvalidHandshake):
            writer.disconnects += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)


def room_text(db: PgDatabase, room: str) -> str:
    code, code_version, version = db.query(
        "SELECT code, code_version, version FROM rooms_room WHERE id = %s", (room,)
    )[0]
    for (op,) in db.query(
        "SELECT op FROM rooms_op WHERE room_id = %s AND version > %s AND version <= %s"
        " ORDER BY version",
        (room, code_version, version),
    ):
        code = ot.apply(code, op)
    return code


async def homed_rooms(target: ServeTarget, per_worker: int) -> dict[int, list[str]]:
    homes: dict[int, list[str]] = {0: [], 1: []}
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(40 * per_worker):
            if all(len(rooms) >= per_worker for rooms in homes.values()):
                break
            room = await target.create_room(client=client)
            slot = home_of(room, range(2))
            if len(homes[slot]) < per_worker:
                homes[slot].append(room)
    return homes


async def one_round(target: ServeTarget, args: argparse.Namespace) -> dict:
    homes = await homed_rooms(target, args.rooms)
    writers = [
        Writer(room, f"w{slot}r{r}u{u}", killed_room=slot == 0)
        for slot, rooms in homes.items()
        for r, room in enumerate(rooms)
        for u in range(2)
    ]
    stop = asyncio.Event()
    kill: dict = {}
    tasks = [
        asyncio.create_task(run_writer(w, target.ws_base, args.rate, stop, kill)) for w in writers
    ]
    await asyncio.sleep(args.warm)  # the load before the kill
    victim = target.worker_pids[0]
    kill["at"] = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    killed = [w for w in writers if w.killed_room]
    deadline = time.monotonic() + SERVED_AGAIN_MAX_S
    while time.monotonic() < deadline and (
        any(w.served_again_s is None for w in killed)
        or time.monotonic() - kill["at"] < AFTER_KILL_S
    ):
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait(tasks, timeout=ACK_TIMEOUT_S + 5)
    for task in tasks:
        task.cancel()
    lost = 0
    for room in {w.room for w in writers}:
        text = await asyncio.to_thread(room_text, target.database, room)
        lost += sum(1 for w in writers if w.room == room for token in w.acked if token not in text)
    times = [w.served_again_s for w in killed if w.served_again_s is not None]
    inits = [w.reconnected_s for w in killed if w.reconnected_s is not None]
    return {
        "standby": target.standby,
        "writers_of_killed_rooms": len(killed),
        "served_again": len(times),
        "served_again_p50_s": round(statistics.median(times), 3) if times else None,
        "served_again_max_s": round(max(times), 3) if times else None,
        "reconnected_p50_s": round(statistics.median(inits), 3) if inits else None,
        "acked": sum(len(w.acked) for w in writers),
        "lost": lost,
        "disturbed_elsewhere": sum(1 for w in writers if not w.killed_room and w.disconnects),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each (default 2)")
    parser.add_argument("--rooms", type=int, default=8, help="rooms per worker (default 8)")
    parser.add_argument("--rate", type=float, default=4.0, help="edits/s per writer")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of load before the kill")
    args = parser.parse_args(argv)
    if problem := services_problem():
        print(f"failover: {problem}", file=sys.stderr)
        return 2
    token = secrets.token_hex(4)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as folder:
        for index in range(args.rounds * 2):
            standby = 1 if index % 2 == 0 else 0
            database = PgDatabase(postgres_server_url(), f"bench_failover_{token}_{index}")
            target = ServeTarget(
                f"failover-{index}",
                2,
                Path(folder) / str(index),
                database=database,
                redis=redis_url(),
                standby=standby,
            )
            try:
                target.start()
                result = asyncio.run(one_round(target, args))
            finally:
                target.close()
            result["load_average"] = [round(x, 2) for x in os.getloadavg()]
            result["machine_busy_cores"] = round(
                psutil.cpu_percent(interval=0.5) / 100 * (psutil.cpu_count() or 1), 2
            )
            results.append(result)
            print(json.dumps(result), flush=True)
    for standby in (1, 0):
        rounds = [r for r in results if r["standby"] == standby]
        p50 = [r["served_again_p50_s"] for r in rounds if r["served_again_p50_s"] is not None]
        worst = [r["served_again_max_s"] for r in rounds if r["served_again_max_s"] is not None]
        print(
            f"standby {standby}{' (baseline)' if not standby else ''}: served again p50 "
            f"{statistics.median(p50) if p50 else '-'} s, worst {max(worst) if worst else '-'} s; "
            f"lost {sum(r['lost'] for r in rounds)} of {sum(r['acked'] for r in rounds)} acked; "
            f"writers of other rooms disturbed {sum(r['disturbed_elsewhere'] for r in rounds)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
