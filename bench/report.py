"""Turning results into the comparison tables (ours vs the floor, and for text mode vs the
prototype too, as ratios), the target checks (PASS/FAIL) and the markdown for
docs/benchmarks.md."""

from __future__ import annotations

from typing import Any

# (scenario key, metric key, label, unit)
METRICS: list[tuple[str, str, str, str]] = [
    ("pingpong", "rtt_p50_ms", "pingpong RTT p50", "ms"),
    ("pingpong", "rtt_p99_ms", "pingpong RTT p99", "ms"),
    ("rooms_text", "fanout_p50_ms", "rooms text: fan-out p50", "ms"),
    ("rooms_text", "fanout_p90_ms", "rooms text: fan-out p90", "ms"),
    ("rooms_text", "fanout_p99_ms", "rooms text: fan-out p99", "ms"),
    ("rooms_text", "ack_p50_ms", "rooms text: ack p50", "ms"),
    ("rooms_text", "ack_p99_ms", "rooms text: ack p99", "ms"),
    ("rooms_text", "missing", "rooms text: missing deliveries", ""),
    ("rooms_text", "server_cpu_per_edit_us", "rooms text: server CPU / edit", "µs"),
    ("rooms_text", "server_cores", "rooms text: server CPU", "cores"),
    ("rooms_ops", "fanout_p50_ms", "rooms ops: fan-out p50", "ms"),
    ("rooms_ops", "fanout_p90_ms", "rooms ops: fan-out p90", "ms"),
    ("rooms_ops", "fanout_p99_ms", "rooms ops: fan-out p99", "ms"),
    ("rooms_ops", "ack_p50_ms", "rooms ops: ack p50", "ms"),
    ("rooms_ops", "ack_p99_ms", "rooms ops: ack p99", "ms"),
    ("rooms_ops", "missing", "rooms ops: missing deliveries", ""),
    ("rooms_ops", "server_cpu_per_edit_us", "rooms ops: server CPU / edit", "µs"),
    ("rooms_ops", "server_cores", "rooms ops: server CPU", "cores"),
    ("fanout_ops", "server_cpu_per_delivery_us", "fanout ops: server CPU / delivered msg", "µs"),
    ("fanout_ops", "fanout_p50_ms", "fanout ops: fan-out p50", "ms"),
    ("fanout_ops", "fanout_p99_ms", "fanout ops: fan-out p99", "ms"),
    ("fanout_ops", "missing", "fanout ops: missing deliveries", ""),
    ("fanout_text", "server_cpu_per_delivery_us", "fanout text: server CPU / delivered msg", "µs"),
    ("fanout_text", "fanout_p50_ms", "fanout text: fan-out p50", "ms"),
    ("fanout_text", "fanout_p99_ms", "fanout text: fan-out p99", "ms"),
    ("fanout_text", "missing", "fanout text: missing deliveries", ""),
    ("idle", "rss_per_conn_kb", "idle: RSS / connection", "KiB"),
    ("idle", "idle_cpu_cores", "idle: server CPU, 2,000 idle conns", "cores"),
    ("idle", "connects_per_s", "idle: connections opened / s", "/s"),
    ("capacity", "held_edits_s", "capacity: highest rate held", "edits/s"),
    ("capacity", "held_cpu_per_edit_us", "capacity: server CPU / edit there", "µs"),
    ("capacity", "held_server_cores", "capacity: server CPU there", "cores"),
    ("capacity", "projected_edits_s_per_core", "capacity: projected at one core", "edits/s"),
    ("join", "warm_p50_ms", "join 100 KB (room live): p50", "ms"),
    ("join", "warm_p99_ms", "join 100 KB (room live): p99", "ms"),
    ("join", "cold_p50_ms", "join 100 KB (room loaded from DB): p50", "ms"),
    ("join", "cold_p99_ms", "join 100 KB (room loaded from DB): p99", "ms"),
]

IDLE_CPU_MAX_CORES = 0.01  # "~0": under 1% of one core


def get(results: dict, target: str, scenario: str, metric: str) -> Any:
    return results.get("targets", {}).get(target, {}).get(scenario, {}).get(metric)


def ratio(ours: Any, floor: Any) -> float | None:
    if not isinstance(ours, (int, float)) or not isinstance(floor, (int, float)) or floor == 0:
        return None
    return round(ours / floor, 2)


def checks(results: dict, target: str) -> list[dict[str, Any]]:
    """The issue's targets for one of our servers, each with its figures and PASS/FAIL."""
    out = []

    def add(name: str, value: Any, floor: Any, limit: str, passed: bool | None) -> None:
        out.append(
            {
                "target": name,
                "ours": value,
                "floor": floor,
                "ratio": ratio(value, floor),
                "limit": limit,
                "result": "n/a" if passed is None else ("PASS" if passed else "FAIL"),
            }
        )

    def ratio_check(name: str, scenario: str, metric: str, op: str, limit: float) -> None:
        ours, floor = (
            get(results, target, scenario, metric),
            get(results, "floor", scenario, metric),
        )
        r = ratio(ours, floor)
        passed = None if r is None else (r <= limit if op == "<=" else r >= limit)
        add(name, ours, floor, f"{op} {limit}x floor", passed)

    for mode in ("ops", "text"):
        if f"fanout_{mode}" in results.get("targets", {}).get(target, {}):
            ratio_check(
                f"fanout {mode}: server CPU / delivered msg",
                f"fanout_{mode}",
                "server_cpu_per_delivery_us",
                "<=",
                1.8,
            )
    for mode in ("text", "ops"):
        ratio_check(f"rooms {mode}: fan-out p50", f"rooms_{mode}", "fanout_p50_ms", "<=", 1.5)
        missing = get(results, target, f"rooms_{mode}", "missing")
        add(
            f"rooms {mode}: missing deliveries",
            missing,
            get(results, "floor", f"rooms_{mode}", "missing"),
            "== 0",
            None if missing is None else missing == 0,
        )
    ratio_check(
        "capacity: projected edits/s at one core",
        "capacity",
        "projected_edits_s_per_core",
        ">=",
        0.75,
    )
    ratio_check("idle: RSS per connection", "idle", "rss_per_conn_kb", "<=", 1.5)
    idle = get(results, target, "idle", "idle_cpu_cores")
    add(
        "idle: CPU with 2,000 connections",
        idle,
        get(results, "floor", "idle", "idle_cpu_cores"),
        f"<= {IDLE_CPU_MAX_CORES} cores",
        None if idle is None else idle <= IDLE_CPU_MAX_CORES,
    )
    for label, key in (("room live", "warm"), ("loaded from DB", "cold")):
        value = get(results, target, "join", f"{key}_p50_ms")
        add(
            f"join 100 KB ({label}): p50",
            value,
            get(results, "floor", "join", f"{key}_p50_ms"),
            "<= 10 ms",
            None if value is None else value <= 10,
        )
    return out


# -- issue 18: text mode, connection set-up, reconnect storms ----------------------------------

# (scenario key, metric key, label, unit); `{storm}` / `{big}` take the storms' client counts.
TEXT_METRICS: list[tuple[str, str, str, str]] = [
    ("rooms_text", "server_cpu_per_edit_us", "rooms text: server CPU / edit", "µs"),
    ("rooms_text", "fanout_p50_ms", "rooms text: fan-out p50", "ms"),
    ("rooms_text", "fanout_p99_ms", "rooms text: fan-out p99", "ms"),
    ("rooms_text", "missing", "rooms text: missing deliveries", ""),
    ("fanout_text", "server_cpu_per_delivery_us", "fanout text: CPU / delivered msg", "µs"),
    ("fanout_text", "fanout_p50_ms", "fanout text: fan-out p50", "ms"),
    ("fanout_text", "missing", "fanout text: missing deliveries", ""),
    ("connect", "cpu_per_connect_ms", "connect: server CPU / connect", "ms"),
    ("connect", "init_p50_ms", "connect: connect to init p50", "ms"),
    ("connect", "last_init_s", "connect: last init after", "s"),
    ("capacity_text", "projected_edits_s_per_core", "capacity text: projected at one core", "/s"),
    ("capacity_text", "held_edits_s", "capacity text: highest rate held", "/s"),
    ("capacity_text", "held_cpu_per_edit_us", "capacity text: CPU / edit there", "µs"),
    ("capacity", "projected_edits_s_per_core", "capacity ops: projected at one core", "/s"),
    *(
        row
        for key, label in (
            ("storm_text", "storm text ({storm})"),
            ("storm_ops", "storm ops ({storm})"),
            ("storm_text_big", "storm text ({big})"),
            ("storm_ops_big", "storm ops ({big})"),
        )
        for row in (
            (key, "last_back_s", f"{label}: last back after", "s"),
            (key, "cpu_per_connect_ms", f"{label}: server CPU / connect", "ms"),
            (key, "missing", f"{label}: missed after resuming", ""),
        )
    ),
]

# The limits, as ratios to the floor: `manage.py serve` (and the bare ASGI relay on
# uvicorn, which reads "could any app on uvicorn meet this"), and daphne (`runserver`).
SERVE_LIMITS = {"rooms_cpu": 1.8, "rooms_p50": 1.5, "fanout_cpu": 1.8, "connect_cpu": 2.0}
RUNSERVER_LIMIT = 2.5


STORM_KEYS = ("storm_text", "storm_ops", "storm_text_big", "storm_ops_big")


def _text_label(label: str, results: dict) -> str:
    settings = results.get("settings", {})
    return label.format(
        storm=f"{_fmt(settings.get('storm_clients'))} clients",
        big=f"{_fmt(settings.get('storm_big_clients'))} clients",
    )


def text_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Issue 18's table: each figure with its ratio to the floor and to the prototype."""
    ours = ours_names(results)
    has_prototype = "prototype" in results.get("targets", {})
    header = ["metric", "floor"]
    if has_prototype:
        header += ["prototype", "prototype/floor"]
    for name in ours:
        header += [name, f"{name}/floor"] + ([f"{name}/prototype"] if has_prototype else [])
    rows = []
    for scenario, metric, label, unit in TEXT_METRICS:
        floor = get(results, "floor", scenario, metric)
        proto = get(results, "prototype", scenario, metric)
        values = [get(results, t, scenario, metric) for t in ours]
        if all(v is None for v in [floor, proto, *values]):
            continue
        label = _text_label(label, results)
        row = [f"{label} ({unit})" if unit else label, _fmt(floor)]
        if has_prototype:
            row += [_fmt(proto), "-" if not unit else _fmt(ratio(proto, floor))]
        counts = not unit  # missed deliveries: a ratio of counts says nothing
        for value in values:
            row += [_fmt(value), "-" if counts else _fmt(ratio(value, floor))]
            if has_prototype:
                row.append("-" if counts else _fmt(ratio(value, proto)))
        rows.append(row)
    return header, rows


def text_checks(results: dict, target: str) -> list[dict[str, Any]]:
    """Issue 18's targets for one of our servers, each with its figures and PASS/FAIL: under
    `serve`, ratios to the floor (rooms CPU / edit <= 1.8x, rooms fan-out p50 <= 1.5x, CPU per
    delivered message <= 1.8x, CPU per connect <= 2x), below the prototype on each of those
    rows, and capacity in text mode at least the ratio ops mode reaches in the same run; under
    daphne (`runserver`), <= 2.5x on the same rows (capacity >= 1 / 2.5 = 0.4x). And for
    every server: nothing missed after a reconnect storm."""
    out: list[dict[str, Any]] = []
    runserver = target == "daphne"

    def add(name, value, base, base_name, limit, passed, counts=False) -> None:
        out.append(
            {
                "target": name,
                "ours": value,
                "baseline": base,
                "vs": base_name,
                "ratio": None if counts else ratio(value, base),
                "limit": limit,
                "result": "n/a" if passed is None else ("PASS" if passed else "FAIL"),
            }
        )

    rows = [
        ("rooms text: server CPU / edit", "rooms_text", "server_cpu_per_edit_us", "rooms_cpu"),
        ("rooms text: fan-out p50", "rooms_text", "fanout_p50_ms", "rooms_p50"),
        (
            "fanout text: CPU / delivered msg",
            "fanout_text",
            "server_cpu_per_delivery_us",
            "fanout_cpu",
        ),
        ("connect: server CPU / connect", "connect", "cpu_per_connect_ms", "connect_cpu"),
    ]
    for name, scenario, metric, limit_key in rows:
        value = get(results, target, scenario, metric)
        floor = get(results, "floor", scenario, metric)
        if value is None and floor is None:
            continue
        limit = RUNSERVER_LIMIT if runserver else SERVE_LIMITS[limit_key]
        r = ratio(value, floor)
        add(name, value, floor, "floor", f"<= {limit}x floor", None if r is None else r <= limit)
    if not runserver and "prototype" in results.get("targets", {}):
        for name, scenario, metric, _ in rows:
            value = get(results, target, scenario, metric)
            proto = get(results, "prototype", scenario, metric)
            if value is None and proto is None:
                continue
            passed = None if value is None or proto is None else value < proto
            add(name, value, proto, "prototype", "< prototype", passed)
    value = get(results, target, "capacity_text", "projected_edits_s_per_core")
    floor = get(results, "floor", "capacity_text", "projected_edits_s_per_core")
    if value is not None or floor is not None:
        r = ratio(value, floor)
        if runserver:
            want = round(1 / RUNSERVER_LIMIT, 2)
            limit = f">= {want}x floor"
        else:
            want = ratio(
                get(results, target, "capacity", "projected_edits_s_per_core"),
                get(results, "floor", "capacity", "projected_edits_s_per_core"),
            )
            limit = f">= ops mode's {want}x" if want is not None else ">= ops mode's ratio"
        passed = None if r is None or want is None else r >= want
        add("capacity text: projected at one core", value, floor, "floor", limit, passed)
    for key in STORM_KEYS:
        storm = results.get("targets", {}).get(target, {}).get(key)
        if not storm or "error" in storm:
            continue
        label = _text_label(
            f"{key.replace('_big', '').replace('_', ' ')} "
            + ("({big})" if key.endswith("_big") else "({storm})"),
            results,
        )
        add(
            f"{label}: nothing missed after resuming",
            storm.get("missing"),
            get(results, "floor", key, "missing"),
            "floor",
            "0 missed, unacked, stale",
            bool(storm.get("ok")),
            counts=True,
        )
    return out


def text_check_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["server", "target", "ours", "vs", "baseline", "ratio", "limit", "result"]
    rows = []
    for name in ours_names(results):
        for c in text_checks(results, name):
            rows.append(
                [
                    name,
                    c["target"],
                    _fmt(c["ours"]),
                    c["vs"],
                    _fmt(c["baseline"]),
                    _fmt(c["ratio"]),
                    c["limit"],
                    c["result"],
                ]
            )
    return header, rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


BASELINES = ("floor", "prototype")


def ours_names(results: dict) -> list[str]:
    return [name for name in results.get("targets", {}) if name not in BASELINES]


def comparison_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    ours = ours_names(results)
    header = ["metric", "floor"]
    for name in ours:
        header += [name, f"{name}/floor"]
    rows = []
    for scenario, metric, label, unit in METRICS:
        values = [get(results, t, scenario, metric) for t in ["floor", *ours]]
        if all(v is None for v in values):
            continue
        row = [f"{label} ({unit})" if unit else label, _fmt(values[0])]
        for value in values[1:]:
            row += [_fmt(value), _fmt(ratio(value, values[0]))]
        rows.append(row)
    return header, rows


def text_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def check_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["server", "target", "ours", "floor", "ratio", "limit", "result"]
    rows = []
    for name in ours_names(results):
        for c in checks(results, name):
            if c["ours"] is None and c["floor"] is None:
                continue  # not measured in this run
            rows.append(
                [
                    name,
                    c["target"],
                    _fmt(c["ours"]),
                    _fmt(c["floor"]),
                    _fmt(c["ratio"]),
                    c["limit"],
                    c["result"],
                ]
            )
    return header, rows


def scenario_table(scenario: str, result: dict) -> str:
    """The small human table printed after each scenario run."""
    keys = [(k, v) for k, v in result.items() if not isinstance(v, (list, dict))]
    width = max((len(k) for k, _ in keys), default=10)
    return "\n".join(f"    {k.ljust(width)}  {_fmt(v)}" for k, v in keys)


def _load_runs(scenario_results: dict) -> list[tuple[str, dict]]:
    runs = []
    for key, result in scenario_results.items():
        if not isinstance(result, dict):
            continue
        if "generator_max_core" in result:
            runs.append((key, result))
        for step in result.get("steps", []):
            runs.append((f"{key}[{step.get('offered_edits_s')}]", step))
    return runs


def _scale_runs(results: dict) -> dict[str, dict]:
    """The scale configurations' load runs, shaped like a target's scenario results."""
    out = {}
    for name, config in (results.get("scale") or {}).get("configs", {}).items():
        runs = {
            key: config[key] for key in ("fixed", "hammer") if isinstance(config.get(key), dict)
        }
        runs["step"] = {"steps": config.get("steps") or []}
        out[f"scale {name}"] = runs
    return out


def health_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Was the measurement sound? The generator's busiest worker, the CPU other work on the
    machine took during the windows, and drains that gave up while deliveries still came."""
    header = ["server", "generator max (cores/worker)", "other load max (cores)", "drain capped in"]
    rows = []
    everything = {**results.get("targets", {}), **_scale_runs(results)}
    for name, scenario_results in everything.items():
        runs = _load_runs(scenario_results)
        if not runs:
            continue
        gen = max(runs, key=lambda r: r[1].get("generator_max_core") or 0)
        other = max(runs, key=lambda r: r[1].get("other_cores") or 0)
        capped = [key for key, r in runs if r.get("drain_capped")]
        rows.append(
            [
                name,
                f"{_fmt(gen[1].get('generator_max_core'))} ({gen[0]})",
                f"{_fmt(other[1].get('other_cores'))} ({other[0]})",
                ", ".join(capped) or "-",
            ]
        )
    return header, rows


# -- scale-out ---------------------------------------------------------------------------------

SCALE_LABELS = {
    "memory+sqlite": "in-memory + SQLite (default)",
    "redis+postgres": "Redis + PostgreSQL",
}


def _scale_configs(results: dict) -> list[tuple[str, dict]]:
    return list((results.get("scale") or {}).get("configs", {}).items())


def _pair(a: Any, b: Any) -> str:
    return f"{_fmt(a)} / {_fmt(b)}"


def _scale_name(name: str, m: dict) -> str:
    return f"{name}: {SCALE_LABELS.get(m.get('backend'), m.get('backend'))}"


def scale_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The fixed offered load, one row per configuration."""
    header = [
        "config",
        "processes",
        "delivered edits/s (offered)",
        "fan-out p50 / p99 (ms)",
        "ack p50 / p99 (ms)",
        "server CPU, all processes (cores)",
        "busiest worker (cores)",
        "PG / Redis CPU (cores)",
        "other load (cores)",
        "rooms split over processes",
        "server + PG + Redis CPU per edit (ms)",
        "rollbacks",
        "missing",
    ]
    rows = []
    for name, config in _scale_configs(results):
        m = config.get("summary") or {}
        if m.get("fixed_delivered_edits_s") is None:
            rows.append([name, _fmt(config.get("processes"))] + ["error"] * (len(header) - 2))
            continue
        shared = m.get("backend") == "redis+postgres"
        split = m.get("rooms_split_share")
        rows.append(
            [
                _scale_name(name, m),
                _fmt(m.get("processes")),
                f"{_fmt(m.get('fixed_delivered_edits_s'))} ({_fmt(m.get('fixed_offered_edits_s'))})"
                + ("" if m.get("fixed_held") else " *"),
                _pair(m.get("fixed_p50_ms"), m.get("fixed_p99_ms")),
                _pair(m.get("fixed_ack_p50_ms"), m.get("fixed_ack_p99_ms")),
                _fmt(m.get("fixed_server_cores")),
                _fmt(m.get("fixed_worker_max_cores")),
                _pair(m.get("fixed_postgres_cores"), m.get("fixed_redis_cores")) if shared else "-",
                _fmt(m.get("fixed_other_cores")),
                "-" if split is None else f"{split:.0%}",
                _ms(m.get("fixed_system_cpu_per_edit_us")),
                _fmt(m.get("fixed_rollbacks")) if shared else "-",
                _fmt(m.get("fixed_missing")),
            ]
        )
    return header, rows


def _ms(us: Any) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def scale_text_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The fixed offered load in text mode, one row per configuration."""
    header = [
        "config",
        "processes",
        "delivered edits/s",
        "fan-out p50 / p99 (ms)",
        "rooms split over processes",
        "server + PG + Redis CPU per edit (ms)",
        "rollbacks",
        "missing",
    ]
    rows = []
    for name, config in _scale_configs(results):
        m = config.get("summary") or {}
        if m.get("text_delivered_edits_s") is None:
            continue
        split = m.get("text_rooms_split_share")
        rows.append(
            [
                name,
                _fmt(m.get("processes")),
                _fmt(m.get("text_delivered_edits_s")) + ("" if m.get("text_held") else " *"),
                _pair(m.get("text_p50_ms"), m.get("text_p99_ms")),
                "-" if split is None else f"{split:.0%}",
                _ms(m.get("text_system_cpu_per_edit_us")),
                _fmt(m.get("text_rollbacks")) if m.get("backend") == "redis+postgres" else "-",
                _fmt(m.get("text_missing")),
            ]
        )
    return header, rows


def scale_target_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Issue 15's targets, each against this run's figures (ratios within the one run)."""
    configs = dict(_scale_configs(results))
    summary = {name: c.get("summary") or {} for name, c in configs.items()}
    header = ["target", "measured", "holds"]
    rows: list[list[str]] = []

    def per_edit(name: str, key: str = "fixed_system_cpu_per_edit_us") -> float | None:
        return summary.get(name, {}).get(key)

    def row(target: str, measured: str, holds: bool | None) -> None:
        rows.append([target, measured, "?" if holds is None else ("yes" if holds else "NO")])

    base = per_edit("memory-1")
    routed = sorted(
        (m["processes"], name)
        for name, m in summary.items()
        if name.startswith("redis-pg-") and (m.get("route") in (None, "room"))
    )
    randoms = sorted(
        (m["processes"], name) for name, m in summary.items() if m.get("route") == "random"
    )
    for mode, key in (
        ("ops", "fixed_system_cpu_per_edit_us"),
        ("text", "text_system_cpu_per_edit_us"),
    ):
        base = per_edit("memory-1", key)
        one = per_edit("redis-pg-1", key)
        if base and one:
            ratio = one / base
            row(
                f"{mode}: routed, 1 process, CPU per edit <= 1.5x the embedded default",
                f"{one / 1000:.2f} / {base / 1000:.2f} ms = {ratio:.2f}x",
                ratio <= 1.5,
            )
        if routed and one:
            top_n, top = routed[-1]
            most = per_edit(top, key)
            if most and top_n > 1:
                growth = most / one - 1
                row(
                    f"{mode}: routed, CPU per edit grows <= 10% from 1 to {top_n} processes",
                    f"{most / 1000:.2f} / {one / 1000:.2f} ms = {growth:+.0%}",
                    growth <= 0.10,
                )
        for n, name in randoms:
            value = per_edit(name, key)
            if base and value:
                row(
                    f"{mode}: at random, {n} processes, CPU per edit <= 2x the embedded default",
                    f"{value / 1000:.2f} / {base / 1000:.2f} ms = {value / base:.2f}x",
                    value / base <= 2.0,
                )
    for n, name in routed:
        m = summary[name]
        splits = [m.get("rooms_split_share"), m.get("text_rooms_split_share")]
        if n > 1 and None not in splits:
            row(
                f"routed, {n} processes: 0% of rooms split (ops, text)",
                " / ".join(f"{x:.0%}" for x in splits),
                all(x == 0 for x in splits),
            )
        backs = [m.get("fixed_rollbacks"), m.get("text_rollbacks")]
        if None not in backs:
            row(
                f"routed, {n} process{'es' if n > 1 else ''}: 0 sequencing rollbacks (ops, text)",
                " / ".join(str(x) for x in backs),
                all(x == 0 for x in backs),
            )
    for name, m in summary.items():
        missing = [m.get("fixed_missing"), m.get("text_missing")]
        if None not in missing:
            row(
                f"{name}: 0 changes missing for any member (ops, text)",
                " / ".join(str(x) for x in missing),
                all(x == 0 for x in missing),
            )
    one_held = summary.get("redis-pg-1", {}).get("held_edits_s")
    two_held = summary.get("redis-pg-2", {}).get("held_edits_s")
    if one_held is not None and two_held is not None:
        row(
            "edits/s held: 2 routed processes >= 1 process",
            f"{two_held:g} vs {one_held:g}",
            two_held >= one_held,
        )
    return header, rows


def scale_held_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The step-up: the highest fixed rate each configuration held, and why the next failed."""
    header = [
        "config",
        "processes",
        "edits/s held",
        "delivered edits/s there",
        "fan-out p50 / p99 there (ms)",
        "server CPU there (cores)",
        "PG / Redis CPU there (cores)",
        "other load there (cores)",
        "next step",
    ]
    rows = []
    for name, config in _scale_configs(results):
        m = config.get("summary") or {}
        if not config.get("steps"):
            if config.get("route") in (None, "room"):  # random ones run the fixed loads only
                rows.append([name, _fmt(config.get("processes"))] + ["error"] * (len(header) - 2))
            continue
        shared = m.get("backend") == "redis+postgres"
        rows.append(
            [
                _scale_name(name, m),
                _fmt(m.get("processes")),
                _fmt(m.get("held_edits_s")),
                _fmt(m.get("held_delivered_edits_s")),
                _pair(m.get("held_p50_ms"), m.get("held_p99_ms")),
                _fmt(m.get("held_server_cores")),
                _pair(m.get("held_postgres_cores"), m.get("held_redis_cores")) if shared else "-",
                _fmt(m.get("held_other_cores")),
                m.get("stop_reason") or "-",
            ]
        )
    return header, rows


def scale_retry_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """One room, every user a writer: ack latency and PostgreSQL rollbacks (version conflicts)."""
    header = [
        "config",
        "processes (used by the room)",
        "ack p50 / p99 (ms)",
        "fan-out p50 / p99 (ms)",
        "other load (cores)",
        "edits committed",
        "conflicts (rolled back)",
        "conflicts / commit",
        "fixed load: rollbacks / commit",
        "fixed load: PG transactions / edit",
        "bare PG commit / Redis pub-sub p50 (ms)",
    ]
    rows = []
    for name, config in _scale_configs(results):
        m = config.get("summary") or {}
        if not m.get("hammer_ops_committed") and m.get("hammer_ack_p50_ms") is None:
            continue
        per = m.get("hammer_conflicts_per_commit")
        fixed = m.get("fixed_rollbacks_per_commit")
        rows.append(
            [
                name,
                f"{_fmt(m.get('processes'))} ({_fmt(m.get('hammer_processes_used'))})",
                _pair(m.get("hammer_ack_p50_ms"), m.get("hammer_ack_p99_ms")),
                _pair(m.get("hammer_fanout_p50_ms"), m.get("hammer_fanout_p99_ms")),
                _fmt(m.get("hammer_other_cores")),
                _fmt(m.get("hammer_ops_committed")),
                _fmt(m.get("hammer_conflicts"))
                if m.get("hammer_conflicts") is not None
                else "0 (one process)",
                "-" if per is None else f"{per:.1%}",
                "-" if fixed is None else f"{fixed:.1%}",
                _fmt(m.get("fixed_pg_xacts_per_edit")),
                _pair(m.get("pg_commit_p50_ms"), m.get("redis_pubsub_p50_ms"))
                if m.get("pg_commit_p50_ms") is not None
                else "-",
            ]
        )
    return header, rows
