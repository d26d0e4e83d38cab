"""The benchmark scenarios. Each takes a started target, the worker pool and the run's settings,
and returns one flat-ish dict of figures (times in ms, CPU in µs or fractions of one core).

Server CPU is the user+system time of the server process tree (psutil, threads and children
included) between two samples taken at the edges of the measured window; the generator workers
sample their own CPU over the same window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.loadgen import WorkerPool
from bench.targets import Target

SETTLE_S = 1.0


@dataclass
class Settings:
    quick: bool
    workers: int = 2
    pings: int = 2000
    rooms: int = 50
    rooms_rate: float = 10.0  # edits/s per user
    rooms_warm_s: float = 2.0
    rooms_s: float = 8.0
    fanout_users: int = 50
    fanout_rate: float = 20.0
    fanout_s: float = 10.0
    # Text mode (issue 18): the prototype's clients. rooms_text, fanout_text and capacity_text
    # use these documents; rooms_text and capacity_text these rooms (x 2 users).
    text_doc_bytes: int = 1024
    text_rooms: int = 20
    fanout_text_users: int = 20
    # connect: connections opened open-loop at a fixed rate into rooms of `connect_room_size`
    # (each holding a text_doc_bytes document, loaded from the database by its first user).
    connect_count: int = 300
    connect_rate: float = 1000.0
    connect_room_size: int = 2
    connect_tail_s: float = 0.3  # after the last init: the join notices it sets off
    # storm: clients in rooms of `storm_room_size`, `storm_writers` of each room typing at
    # `storm_rate` edits/s throughout; all dropped at once after `storm_warm_s`, all come back;
    # typing goes on `storm_after_s` after the last is back (see scenario_storm).
    storm_clients: int = 500
    storm_big_clients: int = 2000  # a second, bigger storm (0: none)
    storm_room_size: int = 10
    storm_writers: int = 2
    storm_rate: float = 1.0
    storm_warm_s: float = 3.0
    storm_after_s: float = 3.0
    storm_margin_s: float = 0.5  # text edits sent this close to the drop are not owed to others
    storm_concurrency: int = 24  # handshakes in flight per generator worker while coming back
    storm_tail_s: float = 0.3
    idle_conns: int = 2000
    idle_room_size: int = 10
    idle_s: float = 8.0
    cap_start: float = 200.0
    cap_factor: float = 1.6
    cap_steps: int = 10
    cap_max: float = 10000.0  # edits/s: past this the 2-core machine measures the generator
    cap_refine: int = 2  # bisection steps between the last rate held and the first failed
    cap_warm_s: float = 1.0
    cap_s: float = 5.0
    cap_p99_ms: float = 50.0
    joins: int = 200
    join_bytes: int = 100 * 1024
    drain_s: float = (
        45.0  # a late delivery is not a missing one: wait up to this (quiet 1 s ends it)
    )
    profile_s: float = 20.0
    # scale (issue 4): `manage.py serve --workers N` on Redis + PostgreSQL vs the in-memory default
    scale_workers: tuple[int, ...] = (1, 2, 4)
    scale_rooms: int = 50  # x 2 users, ops mode
    scale_rate: float = 200.0  # the fixed offered load, edits/s in total
    scale_warm_s: float = 1.0
    scale_s: float = 5.0
    scale_start: float = 100.0  # step-up: edits/s in total, x scale_factor per step
    scale_factor: float = 2.0
    scale_steps: int = 6
    scale_max: float = 3200.0
    scale_refine: int = 2
    scale_step_s: float = 4.0
    scale_hammer_users: int = 8  # one room, every user a writer
    scale_hammer_rate: float = 100.0  # edits/s in total
    scale_hammer_s: float = 5.0
    scale_drain_s: float = 15.0
    # issue 15: each N > 1 routed by room (serve's default) and, to measure what that saves,
    # at random; the random configurations run the fixed loads only.
    scale_routes: tuple[str, ...] = ("room", "random")
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_mode(cls, quick: bool, workers: int) -> Settings:
        if not quick:
            return cls(quick=False, workers=workers)
        return cls(
            quick=True,
            workers=workers,
            pings=300,
            rooms_warm_s=1.0,
            rooms_s=3.0,
            fanout_s=4.0,
            idle_s=3.0,
            cap_start=125.0,
            cap_factor=4.0,
            cap_steps=4,
            cap_refine=0,
            cap_s=2.0,
            joins=30,
            drain_s=20.0,
            profile_s=6.0,
            storm_big_clients=0,
            storm_warm_s=2.0,
            storm_after_s=2.0,
            scale_workers=(1, 2),
            scale_s=2.0,
            scale_steps=3,
            scale_factor=3.0,
            scale_refine=0,
            scale_step_s=2.0,
            scale_hammer_s=2.0,
            scale_drain_s=10.0,
        )


# -- helpers -----------------------------------------------------------------------------------


def pct(values_ns: list[int], q: float) -> float | None:
    """Nearest-rank percentile, in ms."""
    if not values_ns:
        return None
    ordered = sorted(values_ns)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return round(ordered[index] / 1e6, 3)


def system_busy() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole machine, all cores."""
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def code_text(size: int) -> str:
    """Plausible source code of exactly `size` characters."""
    lines = []
    total = 0
    i = 0
    while total < size:
        line = f"def handler_{i}(request, value={i}):\n    return compute(value * {i % 97}) + {i}\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines)[:size]


def create_rooms(target: Target, count: int, code: str = "") -> list[str]:
    return asyncio.run(target.create_rooms(count, code))


def _split(specs: list[dict], workers: int) -> list[list[dict]]:
    buckets: list[list[dict]] = [[] for _ in range(workers)]
    for spec in specs:
        buckets[spec["gid"] % workers].append(spec)
    return buckets


# -- the generic load run ----------------------------------------------------------------------


def run_load(
    target: Target,
    pool: WorkerPool,
    s: Settings,
    *,
    rooms: list[str],
    users_per_room: int,
    writers_per_room: int,
    rate: float,
    mode: str,
    warm_s: float,
    duration_s: float,
    doc: str = "",
    on_window=None,
    drain_s: float | None = None,
    owners=None,
    services: dict[str, Any] | None = None,
    poisson: bool = False,
) -> dict[str, Any]:
    """Open-loop load: `writers_per_room` users of each room send `rate` edits/s each; every
    user receives. Returns latency, delivery, CPU and generator figures for the window.

    `owners()` (optional) is called once every client is connected and returns {client's local
    port: server pid}: the result then says how the clients spread over server processes.
    `services` (optional) maps a name to an object with `.cpu()` ({pid: CPU seconds}, e.g. the
    PostgreSQL backends and Redis): their CPU over the window is reported as `<name>_cores`.
    `poisson`: writers send after exponential gaps (same mean rate) instead of a fixed period.

    A target that never acks (the prototype) has its edits counted as done when they reach
    the room's other members: CPU per edit divides by deliveries / (users per room - 1)."""
    specs = []
    gid = 0
    for room in rooms:
        for user in range(users_per_room):
            specs.append(
                {
                    "gid": gid,
                    "room": room,
                    "mode": mode,
                    "rate": rate if user < writers_per_room else 0,
                    "poisson": poisson,
                    "acks": target.acks,
                }
            )
            gid += 1
    buckets = _split(specs, pool.count)
    jobs = [
        {
            "kind": "load",
            "ws_base": target.ws_base,
            "clients": bucket,
            "doc": doc,
            "drain_s": s.drain_s if drain_s is None else drain_s,
            "quiet_s": 1.0,
            "seed": index,
        }
        if bucket
        else None
        for index, bucket in enumerate(buckets)
    ]
    tree = target.tree()
    samples: dict[str, Any] = {}

    def on_ready(infos):
        samples["connect_s"] = max(info["connect_s"] for info in infos.values())
        if owners is not None:
            samples["owners"] = owners()
        t0 = time.monotonic_ns() + 200_000_000
        w0 = t0 + int(warm_s * 1e9)
        w1 = w0 + int(duration_s * 1e9)

        def after():
            for key, at in (("0", w0), ("1", w1)):
                delay = (at - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                samples["cpu" + key] = tree.cpu()
                for name, probe in (services or {}).items():
                    samples[f"{name}{key}"] = probe.cpu()
                samples["sys" + key] = system_busy()
                samples["at" + key] = time.monotonic_ns()
                if key == "0" and on_window is not None:
                    on_window(duration_s)

        return {"t0": t0, "w0": w0, "w1": w1}, after

    results = pool.run(jobs, on_ready, timeout=max(300, duration_s * 3 + 120))
    results = [r for r in results if r is not None]
    window_s = (samples["at1"] - samples["at0"]) / 1e9
    server_cpu = tree.cpu_delta(samples["cpu0"], samples["cpu1"])
    busy = (samples["sys1"][0] - samples["sys0"][0]) / max(
        1e-9, samples["sys1"][1] - samples["sys0"][1]
    )

    clients = [c for r in results for c in r["clients"]]
    by_room: dict[str, list[dict]] = {}
    for c in clients:
        by_room.setdefault(c["room"], []).append(c)
    missing = 0
    for members in by_room.values():
        for receiver in members:
            for sender in members:
                if sender is receiver or not sender["sent"]:
                    continue
                got = receiver["received"].get(sender["gid"], 0)
                missing += max(0, sender["sent"] - got)
    fan = [x for c in clients for x in c["fan_lat"]]
    ack = [x for c in clients for x in c["ack_lat"]]
    sent_window = sum(c["sent_in_window"] for c in clients)
    # Work the server finished inside the window (by arrival time): under overload it is less
    # than what was sent, and CPU per edit must divide by what was done.
    acked_window = sum(c["acks_rx_window"] for c in clients)
    delivered_window = sum(c["deliveries_rx_window"] for c in clients)
    done_window = (
        acked_window if target.acks else round(delivered_window / max(1, users_per_room - 1))
    )
    errors: dict[str, int] = {}
    for c in clients:
        for code, count in c["errors"].items():
            errors[code] = errors.get(code, 0) + count
    gen_cpu = [r["cpu_s"] / max(1e-9, r["window_s"]) for r in results]
    writers = len(rooms) * writers_per_room
    out = {
        "mode": mode,
        "rooms": len(rooms),
        "users_per_room": users_per_room,
        "writers": writers,
        "offered_edits_s": round(writers * rate, 1),
        "achieved_edits_s": round(sent_window / window_s, 1),
        "window_s": round(window_s, 2),
        "edits_sent": sum(c["sent"] for c in clients),
        "edits_in_window": sent_window,
        "acks_in_window": acked_window,
        "edits_done_in_window": done_window,
        "deliveries_in_window": delivered_window,
        "committed_edits_s": round(done_window / window_s, 1),
        "fanout_p50_ms": pct(fan, 0.50),
        "fanout_p90_ms": pct(fan, 0.90),
        "fanout_p99_ms": pct(fan, 0.99),
        "fanout_max_ms": pct(fan, 1.0),
        "ack_p50_ms": pct(ack, 0.50),
        "ack_p90_ms": pct(ack, 0.90),
        "ack_p99_ms": pct(ack, 0.99),
        "missing": missing,
        "duplicates": sum(c["dups"] for c in clients),
        "acks": target.acks,
        "unacked": sum(c["sent"] - c["acked"] for c in clients) if target.acks else None,
        "errors": errors,
        "late_sends": sum(c["late"] for c in clients),
        "server_cpu_s": round(server_cpu, 3),
        "server_cores": round(server_cpu / window_s, 3),
        "server_cpu_per_edit_us": round(server_cpu / done_window * 1e6, 1) if done_window else None,
        "server_cpu_per_delivery_us": (
            round(server_cpu / delivered_window * 1e6, 1) if delivered_window else None
        ),
        "generator_cores": [round(x, 3) for x in gen_cpu],
        "generator_max_core": round(max(gen_cpu), 3) if gen_cpu else None,
        "machine_busy": round(busy, 3),
        # CPU used by neither the server nor the generator (other work on a shared machine).
        "other_cores": round(
            max(0.0, busy * (psutil.cpu_count() or 1) - server_cpu / window_s - sum(gen_cpu)), 3
        ),
        "connect_s": round(samples["connect_s"], 2),
        # Deliveries still arriving when the drain gave up: "missing" may then include late ones.
        "drain_s": round(max(r["drained_s"] for r in results), 1),
        "drain_capped": any(r["drain_capped"] for r in results),
    }
    out["ok"] = out["missing"] == 0 and not out["unacked"] and not errors
    if services:
        for name in services:
            used = tree.cpu_delta(samples[name + "0"], samples[name + "1"])
            out[f"{name}_cores"] = round(used / window_s, 3)
        # "other" above counted the services as other work: take them out of it.
        out["other_cores"] = round(
            max(0.0, out["other_cores"] - sum(out[f"{name}_cores"] for name in services)), 3
        )
    if owners is not None or services:
        out["server_process_cores"] = {
            str(pid): round((value - samples["cpu0"].get(pid, 0.0)) / window_s, 3)
            for pid, value in samples["cpu1"].items()
        }
    if owners is not None:
        out.update(_spread(clients, samples.get("owners") or {}))
    return out


def _spread(clients: list[dict], owners: dict[int, int]) -> dict[str, Any]:
    """How the clients landed on server processes: connections per process, and the share of
    rooms whose users are on more than one process (their edits cross Redis and the database)."""
    per_process: dict[str, int] = {}
    rooms: dict[str, set[int]] = {}
    unknown = 0
    for c in clients:
        pid = owners.get(c.get("port", 0))
        if pid is None:
            unknown += 1
            continue
        per_process[str(pid)] = per_process.get(str(pid), 0) + 1
        rooms.setdefault(c["room"], set()).add(pid)
    split = sum(1 for pids in rooms.values() if len(pids) > 1)
    return {
        "conns_per_process": dict(sorted(per_process.items())),
        "conns_unmapped": unknown,
        "server_processes_used": len(per_process),
        "rooms_split": split,
        "rooms_split_share": round(split / len(rooms), 3) if rooms else None,
    }


# -- scenarios ---------------------------------------------------------------------------------


def scenario_pingpong(target: Target, pool: WorkerPool, s: Settings) -> dict[str, Any]:
    room = create_rooms(target, 1)[0]
    jobs = [None] * pool.count
    jobs[0] = {
        "kind": "pingpong",
        "ws_base": target.ws_base,
        "room": room,
        "count": s.pings,
        "max_s": 60,
    }
    result = pool.run(jobs, lambda infos: ({}, None))[0]
    rtt = result["rtt"]
    return {"pings": len(rtt), "rtt_p50_ms": pct(rtt, 0.5), "rtt_p99_ms": pct(rtt, 0.99)}


def text_doc(s: Settings, mode: str) -> str:
    """The document a scenario's rooms start with and every text-mode edit sends (after its
    mark line): empty in ops mode, where edits are small inserts."""
    return code_text(s.text_doc_bytes) if mode == "text" else ""


def scenario_rooms(
    target: Target,
    pool: WorkerPool,
    s: Settings,
    mode: str,
    on_window=None,
    duration_s: float | None = None,
    drain_s: float | None = None,
) -> dict[str, Any]:
    """Many rooms of 2 users, both writing: ops mode in `s.rooms` rooms, text mode (issue 18's
    shape) in `s.text_rooms` rooms holding a `s.text_doc_bytes` document."""
    doc = text_doc(s, mode)
    rooms = create_rooms(target, s.text_rooms if mode == "text" else s.rooms, doc)
    return run_load(
        target,
        pool,
        s,
        rooms=rooms,
        users_per_room=2,
        writers_per_room=2,
        rate=s.rooms_rate,
        mode=mode,
        warm_s=s.rooms_warm_s,
        duration_s=duration_s or s.rooms_s,
        doc=doc,
        on_window=on_window,
        drain_s=drain_s,
    )


def scenario_fanout(
    target: Target,
    pool: WorkerPool,
    s: Settings,
    mode: str,
    on_window=None,
    duration_s=None,
    drain_s=None,
) -> dict[str, Any]:
    """One room, one writer, everyone else receiving: `s.fanout_users` in ops mode,
    `s.fanout_text_users` in text mode."""
    doc = text_doc(s, mode)
    rooms = create_rooms(target, 1, doc)
    return run_load(
        target,
        pool,
        s,
        rooms=rooms,
        users_per_room=s.fanout_text_users if mode == "text" else s.fanout_users,
        writers_per_room=1,
        rate=s.fanout_rate,
        mode=mode,
        warm_s=s.rooms_warm_s,
        duration_s=duration_s or s.fanout_s,
        doc=doc,
        on_window=on_window,
        drain_s=drain_s,
    )


def scenario_idle(target: Target, pool: WorkerPool, s: Settings) -> dict[str, Any]:
    room_count = max(1, s.idle_conns // s.idle_room_size)
    rooms = create_rooms(target, room_count)
    specs = [
        {"gid": i, "room": rooms[i % room_count], "mode": "ops", "rate": 0}
        for i in range(s.idle_conns)
    ]
    buckets = _split(specs, pool.count)
    jobs = [
        {"kind": "idle", "ws_base": target.ws_base, "clients": bucket} if bucket else None
        for bucket in buckets
    ]
    tree = target.tree()
    time.sleep(SETTLE_S)
    rss_before = tree.rss()
    figures: dict[str, Any] = {}

    def on_ready(infos):
        time.sleep(SETTLE_S)  # let join broadcasts finish
        figures["rss_after"] = tree.rss()
        cpu0, at0 = tree.cpu(), time.monotonic()
        time.sleep(s.idle_s)
        cpu1, at1 = tree.cpu(), time.monotonic()
        figures["idle_cores"] = tree.cpu_delta(cpu0, cpu1) / (at1 - at0)
        figures["connect_s"] = max(info["connect_s"] for info in infos.values())
        figures["connected"] = sum(info["clients"] for info in infos.values())
        return {}, None

    results = [r for r in pool.run(jobs, on_ready, timeout=600) if r is not None]
    connected = figures["connected"]
    failed = sum(r["failed_count"] for r in results)
    delta = figures["rss_after"] - rss_before
    return {
        "connections": connected,
        "failed": failed,
        "rooms": room_count,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(figures["rss_after"] / 2**20, 1),
        "rss_per_conn_kb": round(delta / max(1, connected) / 1024, 2),
        "idle_cpu_cores": round(figures["idle_cores"], 4),
        "idle_window_s": s.idle_s,
        "connects_per_s": round(connected / max(1e-9, figures["connect_s"]), 1),
        "errors": {k: v for r in results for k, v in r["errors"].items()},
        "ok": failed == 0,
    }


def scenario_capacity(
    target: Target, pool: WorkerPool, s: Settings, log=print, mode: str = "ops"
) -> dict[str, Any]:
    """Raise the total edit rate (ops mode: `s.rooms` rooms x 2 users; text mode:
    `s.text_rooms` rooms x 2 users, `s.text_doc_bytes` documents) until p99 fan-out > limit or
    a delivery goes missing, then bisect between the last rate held and the first failed;
    report the highest rate held and its CPU per edit."""
    room_count = s.text_rooms if mode == "text" else s.rooms
    users = room_count * 2
    doc = text_doc(s, mode)

    first = [True]

    def step_at(rate: float) -> dict[str, Any]:
        if not first[0]:
            target.restart()  # each step on a fresh process: no stale state from the last one
        first[0] = False
        rooms = create_rooms(target, room_count, doc)
        step = run_load(
            target,
            pool,
            s,
            rooms=rooms,
            users_per_room=2,
            writers_per_room=2,
            rate=rate / users,
            mode=mode,
            warm_s=s.cap_warm_s,
            duration_s=s.cap_s,
            doc=doc,
        )
        reasons = []
        if step["fanout_p99_ms"] is None or step["fanout_p99_ms"] > s.cap_p99_ms:
            reasons.append(f"p99 {step['fanout_p99_ms']} ms > {s.cap_p99_ms:g}")
        if not step["ok"]:
            reasons.append(
                f"missing {step['missing']}, unacked {step['unacked']}, errors {step['errors']}"
            )
        if step["achieved_edits_s"] < 0.95 * step["offered_edits_s"]:
            reasons.append(f"sent only {step['achieved_edits_s']}/s")
        step["held"] = not reasons
        step["fail_reasons"] = reasons
        step["generator_bound"] = (step["generator_max_core"] or 0) > 0.9 or step[
            "machine_busy"
        ] > 0.95
        log(
            f"    capacity {mode} {target.name}: {rate:7.0f} edits/s  p50 {step['fanout_p50_ms']} "
            f"p99 {step['fanout_p99_ms']} ms  server {step['server_cores']} cores  "
            f"gen {step['generator_cores']}  other {step['other_cores']}  "
            + ("held" if step["held"] else "FAILED: " + "; ".join(reasons))
        )
        return step

    steps: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    rate = s.cap_start
    for _ in range(s.cap_steps):
        step = step_at(rate)
        steps.append(step)
        if not step["held"]:
            failed = step
            break
        held = step
        rate = round(rate * s.cap_factor)
        if rate > s.cap_max:
            break
    if failed is not None:
        low = held["offered_edits_s"] if held else 0.0
        high = failed["offered_edits_s"]
        for _ in range(s.cap_refine):
            mid = round((low + high) / 2)
            if mid <= low or high - low < 0.1 * high:
                break
            step = step_at(mid)
            step["refine"] = True
            steps.append(step)
            if step["held"]:
                held, low = step, mid
            else:
                high = mid
        stop_reason = f"{high:.0f} edits/s failed: " + "; ".join(
            next(st for st in steps if st["offered_edits_s"] == high)["fail_reasons"]
        )
    else:
        stop_reason = f"held every step up to {steps[-1]['offered_edits_s']:.0f} edits/s (the cap)"
    out: dict[str, Any] = {
        "mode": mode,
        "steps": steps,
        "stop_reason": stop_reason,
        "p99_limit_ms": s.cap_p99_ms,
    }
    if held is not None:
        out.update(
            {
                "held_edits_s": held["offered_edits_s"],
                "held_committed_edits_s": held["committed_edits_s"],
                "held_p99_ms": held["fanout_p99_ms"],
                "held_server_cores": held["server_cores"],
                "held_cpu_per_edit_us": held["server_cpu_per_edit_us"],
                "projected_edits_s_per_core": (
                    round(held["committed_edits_s"] / held["server_cores"], 1)
                    if held["server_cores"]
                    else None
                ),
                "held_generator_bound": held["generator_bound"],
                "held_other_cores": held["other_cores"],
            }
        )
    else:
        # Not even the first step held: the server's saturated throughput per core is the
        # best projection there is (flagged).
        first = steps[0]
        out.update(
            {
                "held_edits_s": 0,
                "held_cpu_per_edit_us": first["server_cpu_per_edit_us"],
                "projected_edits_s_per_core": (
                    round(first["committed_edits_s"] / first["server_cores"], 1)
                    if first["server_cores"]
                    else None
                ),
                "projected_from_failed_step": True,
            }
        )
    return out


def scenario_join(target: Target, pool: WorkerPool, s: Settings) -> dict[str, Any]:
    code = code_text(s.join_bytes)
    out: dict[str, Any] = {"code_chars": len(code)}
    for label, holder in (("warm", True), ("cold", False)):
        room = asyncio.run(target.create_room(code))
        jobs = [None] * pool.count
        jobs[0] = {
            "kind": "join",
            "ws_base": target.ws_base,
            "room": room,
            "count": s.joins,
            "max_s": 60,
            "holder": holder,
        }
        result = pool.run(jobs, lambda infos: ({}, None))[0]
        times = result["join"]
        out[f"{label}_joins"] = len(times)
        out[f"{label}_p50_ms"] = pct(times, 0.5)
        out[f"{label}_p99_ms"] = pct(times, 0.99)
        out[f"{label}_code_sizes"] = result["code_sizes"]
    out["ok"] = out["warm_code_sizes"] == [len(code)] and out["cold_code_sizes"] == [len(code)]
    return out


def _sleep_until(at_ns: int) -> None:
    delay = (at_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def scenario_connect(
    target: Target, pool: WorkerPool, s: Settings, on_window=None, duration_s: float | None = None
) -> dict[str, Any]:
    """`s.connect_count` connections opened open-loop at `s.connect_rate`/s (connection i at
    t0 + i / rate, whether or not earlier ones are done), each with the Origin a browser on
    the server's page sends, into rooms of `s.connect_room_size` that hold a text document
    and are not live yet (connection i goes to room i % rooms, so the first of each room loads
    it). Server CPU from t0 until `s.connect_tail_s` after the last init, per connection: the
    handshake, origin check, routing, room load, presence, init and the join notices.

    With `on_window` (a profile): rounds of the same connections, each closed once all have
    their init, repeat for `duration_s`; `on_window` is called as they start."""
    room_count = max(1, s.connect_count // s.connect_room_size)
    rooms = create_rooms(target, room_count, code_text(s.text_doc_bytes))
    specs = [
        {"index": i, "room": rooms[i % room_count], "mode": "text"} for i in range(s.connect_count)
    ]
    jobs = [
        {
            "kind": "connect",
            "ws_base": target.ws_base,
            "rate": s.connect_rate,
            "clients": [spec for spec in specs if spec["index"] % pool.count == w],
        }
        for w in range(pool.count)
    ]
    active = [w for w, job in enumerate(jobs) if job["clients"]]
    tree = target.tree()
    figures: dict[str, Any] = {}
    profiling = on_window is not None

    def on_ready(infos):
        t0 = time.monotonic_ns() + 200_000_000
        figures["t0"] = t0
        go = {"t0": t0}
        if profiling:
            go["until_ns"] = t0 + int((duration_s or s.profile_s) * 1e9)

        def after():
            _sleep_until(t0 - 2_000_000)
            if profiling:
                on_window(duration_s or s.profile_s)
                return
            figures["cpu0"], figures["sys0"], figures["at0"] = (
                tree.cpu(),
                system_busy(),
                time.monotonic_ns(),
            )
            reports = pool.phase_reports(active, timeout=300)
            last = max(r["last_init_ns"] for r in reports.values())
            _sleep_until(last + int(s.connect_tail_s * 1e9))
            figures["cpu1"], figures["sys1"], figures["at1"] = (
                tree.cpu(),
                system_busy(),
                time.monotonic_ns(),
            )
            pool.send(active, ("go", {}))

        return go, after

    results = [r for r in pool.run(jobs, on_ready, timeout=600) if r is not None]
    opened = sum(r["opened"] for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    init_ns = [x for r in results for x in r["init_ns"]]
    out: dict[str, Any] = {
        "connections": s.connect_count,
        "rooms": room_count,
        "offered_per_s": s.connect_rate,
        "opened": opened,
        "failed": s.connect_count - opened if not profiling else None,
        "errors": dict(errors),
        "init_p50_ms": pct(init_ns, 0.5),
        "init_p99_ms": pct(init_ns, 0.99),
    }
    if profiling:
        out["rounds"] = sum(r["rounds"] for r in results)
        return out
    window_s = (figures["at1"] - figures["at0"]) / 1e9
    cpu = tree.cpu_delta(figures["cpu0"], figures["cpu1"])
    last_init = max(r["last_init_ns"] for r in results)
    busy = (figures["sys1"][0] - figures["sys0"][0]) / max(
        1e-9, figures["sys1"][1] - figures["sys0"][1]
    )
    out.update(
        {
            "last_init_s": round((last_init - figures["t0"]) / 1e9, 3),
            "connects_per_s": round(opened / max(1e-9, (last_init - figures["t0"]) / 1e9), 1),
            "window_s": round(window_s, 3),
            "server_cpu_s": round(cpu, 4),
            "cpu_per_connect_ms": round(cpu / opened * 1e3, 3) if opened else None,
            # Everything but the server, the load generator included (not measured apart here).
            "machine_other_cores": round(
                max(0.0, busy * (psutil.cpu_count() or 1) - cpu / max(1e-9, window_s)), 3
            ),
            "ok": opened == s.connect_count and not errors,
        }
    )
    return out


def scenario_storm(
    target: Target, pool: WorkerPool, s: Settings, mode: str, clients: int
) -> dict[str, Any]:
    """A reconnect storm: `clients` users in rooms of `s.storm_room_size` (each room holds a
    text document), `s.storm_writers` of each room typing `s.storm_rate` edits/s, in `mode`.
    At t_drop every connection is aborted at once and every client comes back: ops clients
    resume (`version` + `client`) and send what is not acked (the op in flight, what was typed
    while away); text clients type nothing while away and reconnect. Typing then waits (ops
    clients queue it) until everyone is back, so the storm's window holds no live typing.

    Measured: the time from the drop until the last client has its init, and the server's CPU
    from the drop until `s.storm_tail_s` after that, per client: disconnects, handshakes, room
    loads, resumes, inits, join notices, the ops sent on resume. Then what was typed meanwhile
    goes out, `s.storm_after_s` more of typing, and the check that nothing was missed: every
    receiver has every edit of its room's other writers (ops: all of them, live or in the
    resumed init; text: those sent before `s.storm_margin_s` ahead of the drop, and those sent
    after its own init came back: the text in between it gets whole in init), every edit is
    acked, no init went back in time, and everyone came back."""
    import secrets

    room_count = max(1, clients // s.storm_room_size)
    doc = code_text(s.text_doc_bytes)
    rooms = create_rooms(target, room_count, doc)
    token = secrets.token_hex(4)
    specs = [
        {
            "gid": gid,
            "room": rooms[gid % room_count],
            "mode": mode,
            "rate": s.storm_rate if gid // room_count < s.storm_writers else 0,
            "acks": target.acks,
            "client_id": f"storm-{token}-{gid}",
        }
        for gid in range(clients)
    ]
    buckets = _split(specs, pool.count)
    jobs = [
        {
            "kind": "storm",
            "ws_base": target.ws_base,
            "clients": bucket,
            "doc": doc if mode == "text" else "",
            "concurrency": s.storm_concurrency,
            "drain_s": s.drain_s,
            "quiet_s": 1.0,
            "seed": index,
        }
        if bucket
        else None
        for index, bucket in enumerate(buckets)
    ]
    active = [w for w, job in enumerate(jobs) if job is not None]
    tree = target.tree()
    figures: dict[str, Any] = {}

    def sample(key: str) -> None:
        figures["cpu" + key], figures["sys" + key], figures["at" + key] = (
            tree.cpu(),
            system_busy(),
            time.monotonic_ns(),
        )

    def on_ready(infos):
        t0 = time.monotonic_ns() + 200_000_000
        t_drop = t0 + int(s.storm_warm_s * 1e9)
        figures["t_drop"] = t_drop

        def after():
            _sleep_until(t_drop)
            sample("0")
            reports = pool.phase_reports(active, timeout=300 + clients * 0.1)
            figures["back"] = sum(r["back"] for r in reports.values())
            figures["last_back_ns"] = max(r["last_back_ns"] for r in reports.values())
            _sleep_until(figures["last_back_ns"] + int(s.storm_tail_s * 1e9))
            sample("1")
            pool.send(active, ("go", {"t_end": time.monotonic_ns() + int(s.storm_after_s * 1e9)}))

        return {"t0": t0, "t_drop": t_drop}, after

    results = [r for r in pool.run(jobs, on_ready, timeout=600 + clients * 0.1) if r is not None]
    members = [c for r in results for c in r["clients"]]
    t_drop = figures["t_drop"]
    cut = t_drop - int(s.storm_margin_s * 1e9)
    by_room: dict[str, list[dict]] = {}
    for c in members:
        by_room.setdefault(c["room"], []).append(c)
    missing = 0
    for room_members in by_room.values():
        for receiver in room_members:
            for sender in room_members:
                if sender is receiver or not sender["sent"]:
                    continue
                got = set(receiver["received"].get(sender["gid"], ()))
                back = receiver["back_ns"] or float("inf")
                for n, at in enumerate(sender["sent_at"], start=1):
                    owed = mode == "ops" or at < cut or at > back
                    if owed and n not in got:
                        missing += 1
    errors: Counter[str] = Counter()
    for c in members:
        errors.update(c["errors"])
    back_ns = sorted(c["back_ns"] - t_drop for c in members if c["back_ns"])
    window_s = (figures["at1"] - figures["at0"]) / 1e9
    cpu = tree.cpu_delta(figures["cpu0"], figures["cpu1"])
    back = figures["back"]
    busy = (figures["sys1"][0] - figures["sys0"][0]) / max(
        1e-9, figures["sys1"][1] - figures["sys0"][1]
    )
    unacked = sum(c["unacked"] for c in members) if target.acks else None
    regressions = sum(c["regressions"] for c in members)
    last_back_s = (figures["last_back_ns"] - t_drop) / 1e9
    out = {
        "mode": mode,
        "clients": clients,
        "rooms": room_count,
        "writers": sum(1 for spec in specs if spec["rate"]),
        "back": back,
        "not_back": clients - back,
        "last_back_s": round(last_back_s, 3),
        "back_p50_s": round(back_ns[len(back_ns) // 2] / 1e9, 3) if back_ns else None,
        "reconnects_per_s": round(back / max(1e-9, last_back_s), 1),
        "window_s": round(window_s, 3),
        "server_cpu_s": round(cpu, 3),
        "cpu_per_connect_ms": round(cpu / back * 1e3, 3) if back else None,
        # Everything but the server, the load generator included (not measured apart here).
        "machine_other_cores": round(
            max(0.0, busy * (psutil.cpu_count() or 1) - cpu / max(1e-9, window_s)), 3
        ),
        "edits_before_drop": sum(c["n_drop"] for c in members),
        "edits_after_drop": sum(c["sent"] - c["n_drop"] for c in members),
        "sent_on_resume": sum(c["sent_on_resume"] for c in members),
        "lost_at_drop": sum(c["lost"] for c in members),
        "missing": missing,
        "unacked": unacked,
        "dups": sum(c["dups"] for c in members),
        "init_regressions": regressions,
        "errors": dict(errors),
        "drain_capped": any(r["drain_capped"] for r in results),
    }
    out["ok"] = back == clients and missing == 0 and not unacked and not regressions and not errors
    return out


# -- scale-out (issue 4) -----------------------------------------------------------------------


def _held_reasons(step: dict[str, Any], p99_limit_ms: float) -> list[str]:
    """Why a fixed-rate step did not hold (empty: it held): the capacity scenario's rule."""
    reasons = []
    if step["fanout_p99_ms"] is None or step["fanout_p99_ms"] > p99_limit_ms:
        reasons.append(f"p99 {step['fanout_p99_ms']} ms > {p99_limit_ms:g}")
    if not step["ok"]:
        reasons.append(
            f"missing {step['missing']}, unacked {step['unacked']}, errors {step['errors']}"
        )
    if step["achieved_edits_s"] < 0.95 * step["offered_edits_s"]:
        reasons.append(f"sent only {step['achieved_edits_s']}/s")
    return reasons


def _scale_load(
    target,
    pool: WorkerPool,
    s: Settings,
    rooms: list[str],
    users: int,
    total_rate: float,
    window_s,
    poisson: bool = False,
    mode: str = "ops",
) -> dict[str, Any]:
    """Every user of every room a writer (ops or text mode), `total_rate` edits/s offered in
    all; with the clients' server processes and (scaled out) the CPU of PostgreSQL and Redis."""
    from bench.targets import PidSet, redis_server_pids

    log_mark = len(target.log)
    services = {}
    if target.database is not None:
        services = {
            "postgres": PidSet(target.database.backend_pids),
            "redis": PidSet(redis_server_pids),
        }
    out = run_load(
        target,
        pool,
        s,
        rooms=rooms,
        users_per_room=users,
        writers_per_room=users,
        rate=total_rate / (len(rooms) * users),
        mode=mode,
        warm_s=s.scale_warm_s,
        duration_s=window_s,
        drain_s=s.scale_drain_s,
        owners=target.connection_owners,
        services=services,
        poisson=poisson,
    )
    # Each edit reaches the room's other users: deliveries per second, as the users saw them.
    out["delivered_edits_s"] = round(out["deliveries_in_window"] / out["window_s"], 1)
    # Whole-system CPU per edit (issue 15): every server process (the routing parent and the
    # standby included) plus the PostgreSQL backends and Redis (none in the embedded default).
    done = out["edits_done_in_window"]
    system_cores = out["server_cores"] + sum(out.get(f"{name}_cores", 0.0) for name in services)
    out["system_cores"] = round(system_cores, 3)
    out["system_cpu_per_edit_us"] = (
        round(system_cores * out["window_s"] / done * 1e6, 1) if done else None
    )
    failures = _log_failures(target.log[log_mark:])
    if failures:
        out["server_log_errors"] = failures
    out["worker_max_cores"] = max(
        (
            out["server_process_cores"].get(str(pid), 0.0)
            for pid in target.worker_pids or [target.pid]
        ),
        default=None,
    )
    return out


def _service_floors(db, redis: str, count: int = 200) -> dict[str, Any]:
    """What the services cost bare, from Python on this machine: one PostgreSQL transaction
    shaped like a commit of one edit (INSERT a row, UPDATE another, COMMIT: a WAL flush), and
    one Redis PUBLISH until a subscriber has the message. Sequential, `count` of each."""
    import secrets

    import psycopg
    import redis as redis_lib

    out: dict[str, Any] = {"count": count}
    with psycopg.connect(db.url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE bench_probe (id bigserial PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO bench_probe (v) VALUES ('head')")
        times = []
        for _ in range(count):
            start = time.perf_counter_ns()
            with conn.transaction():
                conn.execute("INSERT INTO bench_probe (v) VALUES (%s)", ("x" * 40,))
                conn.execute("UPDATE bench_probe SET v = %s WHERE id = 1", ("y" * 40,))
            times.append(time.perf_counter_ns() - start)
        conn.execute("DROP TABLE bench_probe")
    out["pg_commit_p50_ms"], out["pg_commit_p99_ms"] = pct(times, 0.5), pct(times, 0.99)

    client = redis_lib.Redis.from_url(redis, socket_timeout=5)
    sub = client.pubsub()
    channel = f"bench-probe-{secrets.token_hex(4)}"
    try:
        sub.subscribe(channel)
        for _ in range(50):  # the subscribe confirmation first
            if (m := sub.get_message(timeout=0.1)) and m["type"] == "subscribe":
                break
        times = []
        for _ in range(count):
            start = time.perf_counter_ns()
            client.publish(channel, b"x" * 200)
            for _ in range(100):
                message = sub.get_message(timeout=1.0)
                if message and message["type"] == "message":
                    times.append(time.perf_counter_ns() - start)
                    break
    finally:
        sub.close()
        client.close()
    out["redis_pubsub_p50_ms"], out["redis_pubsub_p99_ms"] = pct(times, 0.5), pct(times, 0.99)
    return out


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Conflict|Exit|Violation|Timeout)\b")


def _log_failures(lines: list[str]) -> dict[str, Any]:
    """What the server logged as failing during a run: messages it gave up on (it then closes
    the connection with 4500) and the exceptions that ended its tracebacks, most common first."""
    failed = sum(1 for line in lines if "message failed" in line)
    exceptions = Counter(
        line.strip()[:160] for line in lines if EXCEPTION_LINE.match(line) and line[:1] != " "
    )
    if not failed and not exceptions:
        return {}
    return {"message_failed": failed, "exceptions": dict(exceptions.most_common(3))}


def _scale_config(
    target, pool: WorkerPool, s: Settings, log=print, fixed_only: bool = False
) -> dict[str, Any]:
    """One configuration: the fixed load (ops mode, then text mode), the one-room hammer, then
    the step-up (`fixed_only`: the fixed loads alone). Each phase on freshly started (and
    quiet) server processes; the database stays."""
    import os

    db = target.database
    res: dict[str, Any] = {
        "label": target.label,
        "command": target.command,
        "processes": target.workers,
        "route": target.route if target.workers > 1 else None,
        "backend": "redis+postgres" if db is not None else "memory+sqlite",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    target.prepare()
    if db is not None:
        try:
            res["service_floors"] = _service_floors(db, target.redis)
        except Exception as error:
            res["service_floors"] = {"error": f"{type(error).__name__}: {error}"}
        log(f"  -- scale {target.name}: bare service round trips {res['service_floors']}")

    def rollbacks() -> tuple[int, int] | None:
        """(committed, rolled back) transactions in the configuration's database so far, read
        once the servers are stopped (then PostgreSQL's counts are complete)."""
        if db is None:
            return None
        db.wait_disconnected()
        return db.xacts()

    def fresh() -> None:
        target.stop()
        target.start()
        target.settle()
        res.setdefault("settle_s", []).append(target.settle_s)

    def ops_committed(rooms: list[str]) -> int | None:
        if db is None:
            import sqlite3

            marks = ",".join("?" * len(rooms))
            with contextlib.closing(sqlite3.connect(target.data_dir / "db.sqlite3")) as lite:
                sql = f"SELECT count(*) FROM rooms_op WHERE room_id IN ({marks})"
                return int(lite.execute(sql, rooms).fetchone()[0])
        rows = db.query("SELECT count(*) FROM rooms_op WHERE room_id = ANY(%s)", (rooms,))
        return int(rows[0][0])

    def conflicts(phase: dict[str, Any], before, rooms: list[str]):
        """A version conflict rolls its transaction back (and the change is retried), so the
        rollbacks of a phase, read from outside, count its conflicts. In a transaction of
        several rooms' changes (group commit) one conflict costs two rollbacks: the batch's,
        then the change's own when the batch is retried change by change. With one room per
        phase (the hammer) each process commits one change at a time: rollbacks == conflicts.
        """
        after = rollbacks()
        committed = ops_committed(rooms)
        phase["ops_committed"] = committed
        if before is None or after is None:
            # One process commits each room's changes one at a time: no conflict is possible.
            phase["pg_rollbacks"] = None
            phase["conflicts_per_commit"] = 0.0 if target.workers == 1 else None
            return after
        phase["pg_rollbacks"] = after[1] - before[1]
        phase["pg_commits"] = after[0] - before[0]
        phase["conflicts_per_commit"] = (
            round((after[1] - before[1]) / committed, 4) if committed else None
        )
        # Every transaction (group commits, the reads on joining and the version watcher's
        # polls, room creation) per edit committed: how much the group commit batches.
        phase["pg_xacts_per_edit"] = (
            round((after[0] - before[0]) / committed, 3) if committed else None
        )
        return after

    # 1. The fixed offered load: many rooms, two users each.
    r0 = rollbacks()
    fresh()
    rooms = create_rooms(target, s.scale_rooms)
    log(f"  -- scale {target.name}: fixed {s.scale_rate:g} edits/s (pids {target.worker_pids})")
    fixed = _scale_load(target, pool, s, rooms, 2, s.scale_rate, s.scale_s)
    target.stop()
    r1 = conflicts(fixed, r0, rooms)
    fixed["held"] = not (reasons := _held_reasons(fixed, s.cap_p99_ms))
    fixed["fail_reasons"] = reasons
    res["fixed"] = fixed
    log(
        f"    fixed: delivered {fixed['delivered_edits_s']}/s  p50 {fixed['fanout_p50_ms']} "
        f"p99 {fixed['fanout_p99_ms']} ms  ack p99 {fixed['ack_p99_ms']} ms  server "
        f"{fixed['server_cores']} cores (busiest worker {fixed['worker_max_cores']})  pg "
        f"{fixed.get('postgres_cores')}  redis {fixed.get('redis_cores')}  other "
        f"{fixed['other_cores']}  split rooms {fixed['rooms_split']}/{s.scale_rooms}  conns "
        f"{fixed['conns_per_process']}  rollbacks {fixed['pg_rollbacks']}  PG transactions "
        f"per edit {fixed.get('pg_xacts_per_edit')}  system CPU per edit "
        f"{fixed['system_cpu_per_edit_us']} us"
    )

    # 1b. The same load in text mode (each edit sends, and each delivery carries, the text).
    fresh()
    rooms = create_rooms(target, s.scale_rooms)
    fixed_text = _scale_load(target, pool, s, rooms, 2, s.scale_rate, s.scale_s, mode="text")
    target.stop()
    r1 = conflicts(fixed_text, r1, rooms)
    fixed_text["held"] = not (reasons := _held_reasons(fixed_text, s.cap_p99_ms))
    fixed_text["fail_reasons"] = reasons
    res["fixed_text"] = fixed_text
    log(
        f"    fixed, text mode: delivered {fixed_text['delivered_edits_s']}/s  p50 "
        f"{fixed_text['fanout_p50_ms']} p99 {fixed_text['fanout_p99_ms']} ms  missing "
        f"{fixed_text['missing']}  split rooms {fixed_text['rooms_split']}/{s.scale_rooms}  "
        f"rollbacks {fixed_text['pg_rollbacks']}  system CPU per edit "
        f"{fixed_text['system_cpu_per_edit_us']} us"
    )
    if fixed_only:
        return res

    # 2. The retry cost: one room hammered by users spread over the processes.
    fresh()
    room = create_rooms(target, 1)
    log(
        f"  -- scale {target.name}: one room, {s.scale_hammer_users} writers, "
        f"{s.scale_hammer_rate:g} edits/s (Poisson arrivals)"
    )
    # Poisson arrivals: with fixed periods, whether two processes' edits collide would be set
    # once by the clients' phases (a run could see no conflict at all, or many).
    hammer = _scale_load(
        target,
        pool,
        s,
        room,
        s.scale_hammer_users,
        s.scale_hammer_rate,
        s.scale_hammer_s,
        poisson=True,
    )
    target.stop()
    conflicts(hammer, r1, room)
    res["hammer"] = hammer
    log(
        f"    hammer: ack p50 {hammer['ack_p50_ms']} p99 {hammer['ack_p99_ms']} ms  fan-out "
        f"p50 {hammer['fanout_p50_ms']} p99 {hammer['fanout_p99_ms']} ms  committed "
        f"{hammer['ops_committed']}  rollbacks {hammer['pg_rollbacks']}  conflicts/commit "
        f"{hammer['conflicts_per_commit']}  conns {hammer['conns_per_process']}"
    )

    # 3. Step-up: the highest fixed rate held (p99 <= limit, nothing missing).
    fresh()
    failed_last = [False]

    def step_at(rate: float) -> dict[str, Any]:
        if failed_last[0]:
            fresh()  # an overloaded step leaves backlog behind: start clean
        step_rooms = create_rooms(target, s.scale_rooms)
        step = _scale_load(target, pool, s, step_rooms, 2, rate, s.scale_step_s)
        step["fail_reasons"] = _held_reasons(step, s.cap_p99_ms)
        step["held"] = not step["fail_reasons"]
        failed_last[0] = not step["held"]
        log(
            f"    step {rate:6.0f} edits/s: delivered {step['delivered_edits_s']}/s  p50 "
            f"{step['fanout_p50_ms']} p99 {step['fanout_p99_ms']} ms  server "
            f"{step['server_cores']} cores  pg {step.get('postgres_cores')}  redis "
            f"{step.get('redis_cores')}  gen {step['generator_cores']}  other "
            f"{step['other_cores']}  "
            + ("held" if step["held"] else "FAILED: " + "; ".join(step["fail_reasons"]))
            + (f"  server log: {step['server_log_errors']}" if "server_log_errors" in step else "")
        )
        return step

    steps: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    rate = s.scale_start
    for _ in range(s.scale_steps):
        step = step_at(rate)
        steps.append(step)
        if not step["held"]:
            failed = step
            break
        held = step
        rate = round(rate * s.scale_factor)
        if rate > s.scale_max:
            break
    if failed is not None:
        low = held["offered_edits_s"] if held else 0.0
        high = failed["offered_edits_s"]
        for _ in range(s.scale_refine):
            mid = round((low + high) / 2)
            if mid <= low or high - low < 0.1 * high:
                break
            step = step_at(mid)
            step["refine"] = True
            steps.append(step)
            if step["held"]:
                held, low = step, mid
            else:
                high = mid
        res["stop_reason"] = f"{high:.0f} edits/s failed: " + "; ".join(
            next(st for st in steps if st["offered_edits_s"] == high)["fail_reasons"]
        )
    else:
        res["stop_reason"] = f"held every step up to {steps[-1]['offered_edits_s']:.0f} edits/s"
    target.stop()
    res["steps"] = steps
    res["held"] = held
    return res


def scale_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The figures of one configuration that the table shows."""
    fixed = config.get("fixed") or {}
    text = config.get("fixed_text") or {}
    hammer = config.get("hammer") or {}
    held = config.get("held") or {}
    return {
        "processes": config.get("processes"),
        "route": config.get("route"),
        "backend": config.get("backend"),
        "fixed_system_cores": fixed.get("system_cores"),
        "fixed_system_cpu_per_edit_us": fixed.get("system_cpu_per_edit_us"),
        "fixed_rollbacks": fixed.get("pg_rollbacks"),
        "text_delivered_edits_s": text.get("delivered_edits_s"),
        "text_p50_ms": text.get("fanout_p50_ms"),
        "text_p99_ms": text.get("fanout_p99_ms"),
        "text_missing": text.get("missing"),
        "text_held": text.get("held"),
        "text_system_cpu_per_edit_us": text.get("system_cpu_per_edit_us"),
        "text_rooms_split_share": text.get("rooms_split_share"),
        "text_rollbacks": text.get("pg_rollbacks"),
        "fixed_offered_edits_s": fixed.get("offered_edits_s"),
        "fixed_delivered_edits_s": fixed.get("delivered_edits_s"),
        "fixed_p50_ms": fixed.get("fanout_p50_ms"),
        "fixed_p99_ms": fixed.get("fanout_p99_ms"),
        "fixed_ack_p50_ms": fixed.get("ack_p50_ms"),
        "fixed_ack_p99_ms": fixed.get("ack_p99_ms"),
        "fixed_missing": fixed.get("missing"),
        "fixed_held": fixed.get("held"),
        "fixed_server_cores": fixed.get("server_cores"),
        "fixed_worker_max_cores": fixed.get("worker_max_cores"),
        "fixed_postgres_cores": fixed.get("postgres_cores"),
        "fixed_redis_cores": fixed.get("redis_cores"),
        "fixed_cpu_per_edit_us": fixed.get("server_cpu_per_edit_us"),
        "fixed_other_cores": fixed.get("other_cores"),
        "fixed_rollbacks_per_commit": fixed.get("conflicts_per_commit"),
        "fixed_pg_xacts_per_edit": fixed.get("pg_xacts_per_edit"),
        "server_processes_used": fixed.get("server_processes_used"),
        "rooms_split_share": fixed.get("rooms_split_share"),
        "held_edits_s": held.get("offered_edits_s", 0 if config.get("steps") else None),
        "held_delivered_edits_s": held.get("delivered_edits_s"),
        "held_p50_ms": held.get("fanout_p50_ms"),
        "held_p99_ms": held.get("fanout_p99_ms"),
        "held_server_cores": held.get("server_cores"),
        "held_postgres_cores": held.get("postgres_cores"),
        "held_redis_cores": held.get("redis_cores"),
        "held_other_cores": held.get("other_cores"),
        "stop_reason": config.get("stop_reason"),
        "hammer_ack_p50_ms": hammer.get("ack_p50_ms"),
        "hammer_ack_p99_ms": hammer.get("ack_p99_ms"),
        "hammer_fanout_p50_ms": hammer.get("fanout_p50_ms"),
        "hammer_fanout_p99_ms": hammer.get("fanout_p99_ms"),
        "hammer_server_cores": hammer.get("server_cores"),
        "hammer_other_cores": hammer.get("other_cores"),
        "hammer_ops_committed": hammer.get("ops_committed"),
        "hammer_conflicts": hammer.get("pg_rollbacks"),
        "pg_commit_p50_ms": (config.get("service_floors") or {}).get("pg_commit_p50_ms"),
        "pg_commit_p99_ms": (config.get("service_floors") or {}).get("pg_commit_p99_ms"),
        "redis_pubsub_p50_ms": (config.get("service_floors") or {}).get("redis_pubsub_p50_ms"),
        "redis_pubsub_p99_ms": (config.get("service_floors") or {}).get("redis_pubsub_p99_ms"),
        "hammer_conflicts_per_commit": hammer.get("conflicts_per_commit"),
        "hammer_rooms_split": hammer.get("rooms_split"),
        "hammer_processes_used": hammer.get("server_processes_used"),
    }


def scenario_scale(pool: WorkerPool, s: Settings, code_root, data_dir, log=print) -> dict[str, Any]:
    """Scale-out: the single-process default (in-memory layer, SQLite) as the baseline, then
    `manage.py serve --workers N` on Redis + a fresh PostgreSQL database for each N in
    `s.scale_workers`; each runs `_scale_config`."""
    import secrets
    import traceback
    from pathlib import Path

    from bench.targets import (
        PgDatabase,
        ServeTarget,
        postgres_server_url,
        redis_url,
        services_problem,
    )

    data_dir = Path(data_dir)
    problem = services_problem()
    out: dict[str, Any] = {
        "redis": redis_url(),
        "postgres": postgres_server_url(),
        "services_problem": problem,
        "configs": {},
    }
    # (name, processes, shared services, route)
    configs: list[tuple[str, int, bool, str]] = [("memory-1", 1, False, "room")]
    if problem:
        log(f"  scale: {problem}: only the in-memory baseline runs")
    else:
        for n in s.scale_workers:
            for route in s.scale_routes if n > 1 else ("room",):
                suffix = "" if route == "room" else f"-{route}"
                configs.append((f"redis-pg-{n}{suffix}", n, True, route))
    token = secrets.token_hex(4)
    for name, workers, shared, route in configs:
        database = (
            PgDatabase(postgres_server_url(), f"bench_scale_{token}_{name.replace('-', '_')}")
            if shared
            else None
        )
        target = ServeTarget(
            name,
            workers,
            data_dir / name,
            code_root,
            database=database,
            redis=redis_url() if shared else None,
            route=route,
        )
        started = time.monotonic()
        log(f"\n=== scale: {target.label} ===")
        try:
            config = _scale_config(target, pool, s, log, fixed_only=route != "room")
        except Exception:
            config = {"error": traceback.format_exc(), "processes": workers}
            log(config["error"])
        finally:
            target.close()
        config["elapsed_s"] = round(time.monotonic() - started, 1)
        config["summary"] = scale_summary(config)
        out["configs"][name] = config
        outcome = config.get("stop_reason") or ("error" if "error" in config else "fixed loads")
        log(f"  {name}: {outcome} ({config['elapsed_s']:.0f} s)")
    return out
