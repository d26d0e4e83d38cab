"""The benchmark scenarios. Each takes a started target, the worker pool and the run's settings,
and returns one flat-ish dict of figures (times in ms, CPU in µs or fractions of one core).

Server CPU is the user+system time of the server process tree (psutil, threads and children
included) between two samples taken at the edges of the measured window; the generator workers
sample their own CPU over the same window.
"""

from __future__ import annotations

import asyncio
import math
import time
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
    fanout_modes: tuple[str, ...] = ("ops", "text")
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
    text_doc_bytes: int = 2048
    drain_s: float = (
        45.0  # a late delivery is not a missing one: wait up to this (quiet 1 s ends it)
    )
    profile_s: float = 20.0
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
            fanout_modes=("ops",),
            idle_s=3.0,
            cap_start=125.0,
            cap_factor=4.0,
            cap_steps=4,
            cap_refine=0,
            cap_s=2.0,
            joins=30,
            drain_s=20.0,
            profile_s=6.0,
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
) -> dict[str, Any]:
    """Open-loop load: `writers_per_room` users of each room send `rate` edits/s each; every
    user receives. Returns latency, delivery, CPU and generator figures for the window."""
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
        t0 = time.monotonic_ns() + 200_000_000
        w0 = t0 + int(warm_s * 1e9)
        w1 = w0 + int(duration_s * 1e9)

        def after():
            for key, at in (("0", w0), ("1", w1)):
                delay = (at - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                samples["cpu" + key] = tree.cpu()
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
        "deliveries_in_window": delivered_window,
        "committed_edits_s": round(acked_window / window_s, 1),
        "fanout_p50_ms": pct(fan, 0.50),
        "fanout_p90_ms": pct(fan, 0.90),
        "fanout_p99_ms": pct(fan, 0.99),
        "fanout_max_ms": pct(fan, 1.0),
        "ack_p50_ms": pct(ack, 0.50),
        "ack_p90_ms": pct(ack, 0.90),
        "ack_p99_ms": pct(ack, 0.99),
        "missing": missing,
        "duplicates": sum(c["dups"] for c in clients),
        "unacked": sum(c["sent"] - c["acked"] for c in clients),
        "errors": errors,
        "late_sends": sum(c["late"] for c in clients),
        "server_cpu_s": round(server_cpu, 3),
        "server_cores": round(server_cpu / window_s, 3),
        "server_cpu_per_edit_us": round(server_cpu / acked_window * 1e6, 1)
        if acked_window
        else None,
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
    out["ok"] = out["missing"] == 0 and out["unacked"] == 0 and not errors
    return out


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


def scenario_rooms(target: Target, pool: WorkerPool, s: Settings, mode: str) -> dict[str, Any]:
    rooms = create_rooms(target, s.rooms)
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
        duration_s=s.rooms_s,
        doc=code_text(s.text_doc_bytes) if mode == "text" else "",
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
    rooms = create_rooms(target, 1)
    return run_load(
        target,
        pool,
        s,
        rooms=rooms,
        users_per_room=s.fanout_users,
        writers_per_room=1,
        rate=s.fanout_rate,
        mode=mode,
        warm_s=s.rooms_warm_s,
        duration_s=duration_s or s.fanout_s,
        doc=code_text(s.text_doc_bytes) if mode == "text" else "",
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


def scenario_capacity(target: Target, pool: WorkerPool, s: Settings, log=print) -> dict[str, Any]:
    """Raise the total edit rate (ops mode, 50 rooms x 2 users) until p99 fan-out > limit or a
    delivery goes missing, then bisect between the last rate held and the first failed; report
    the highest rate held and its CPU per edit."""
    users = s.rooms * 2

    first = [True]

    def step_at(rate: float) -> dict[str, Any]:
        if not first[0]:
            target.restart()  # each step on a fresh process: no stale state from the last one
        first[0] = False
        rooms = create_rooms(target, s.rooms)
        step = run_load(
            target,
            pool,
            s,
            rooms=rooms,
            users_per_room=2,
            writers_per_room=2,
            rate=rate / users,
            mode="ops",
            warm_s=s.cap_warm_s,
            duration_s=s.cap_s,
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
            f"    capacity {target.name}: {rate:7.0f} edits/s  p50 {step['fanout_p50_ms']} "
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
    out: dict[str, Any] = {"steps": steps, "stop_reason": stop_reason, "p99_limit_ms": s.cap_p99_ms}
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
