"""Run every benchmark against the floor and our server(s) in one go.

    python -m bench            # full run: floor, asgi-floor, prototype, daphne, uvicorn,
                               # profiles, scale
    python -m bench --quick    # short windows: floor, prototype, daphne; no profile, no scale
    python -m bench --quick --scenarios text --targets floor,prototype,uvicorn,daphne
                               # issue 18's text-mode, connect and storm scenarios alone
    python -m bench --scenarios scale   # scale-out only (~12 min; needs Redis + PostgreSQL)
    python bench/run.py ...    # the same

`--scenarios` takes scenario names (the keys of SCENARIOS, e.g. rooms_text, connect,
storm_ops) and group names (GROUPS: rooms, fanout, storm, capacity, text).

`scale` runs its own servers after the targets: `manage.py serve --workers N` for N in 1, 2, 4
on Redis + a fresh PostgreSQL database each (BENCH_REDIS_URL, BENCH_POSTGRES_URL; default the
local ones), and the in-memory single-process default as the baseline.

Each scenario prints one JSON line (prefixed `BENCH `) and a small table; the end prints the
comparison (ours / floor in the same run) and the issue's targets with PASS/FAIL. Results go to
bench/results/bench-<UTC time>.json (and latest.json); the capacity plot to
docs/benchmarks-latency.png; `--write-docs` also rewrites our sections of docs/benchmarks.md.
Everything talks to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from bench import report, scenarios  # noqa: E402
from bench.loadgen import WorkerPool  # noqa: E402
from bench.profile import Recorder, format_summary, py_spy_available  # noqa: E402
from bench.targets import (  # noqa: E402
    AsgiFloorTarget,
    DaphneTarget,
    FloorTarget,
    PrototypeTarget,
    UvicornTarget,
    fastapi_available,
    uvicorn_available,
)

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
# Every measurement a target can run, in the order they run, each on a fresh server process:
# key -> (the client mode it needs, the run). A target without that mode skips it (the
# prototype speaks text mode only). idle runs last: 2,000 connections closing used to leave
# the in-memory channel layer with stale queues (see docs/benchmarks.md).
SCENARIOS: dict[str, tuple[str, Any]] = {
    "pingpong": ("text", lambda t, pool, s: scenarios.scenario_pingpong(t, pool, s)),
    "join": ("text", lambda t, pool, s: scenarios.scenario_join(t, pool, s)),
    "rooms_text": ("text", lambda t, pool, s: scenarios.scenario_rooms(t, pool, s, "text")),
    "rooms_ops": ("ops", lambda t, pool, s: scenarios.scenario_rooms(t, pool, s, "ops")),
    "fanout_ops": ("ops", lambda t, pool, s: scenarios.scenario_fanout(t, pool, s, "ops")),
    "fanout_text": ("text", lambda t, pool, s: scenarios.scenario_fanout(t, pool, s, "text")),
    "connect": ("text", lambda t, pool, s: scenarios.scenario_connect(t, pool, s)),
    "storm_text": (
        "text",
        lambda t, pool, s: scenarios.scenario_storm(t, pool, s, "text", s.storm_clients),
    ),
    "storm_ops": (
        "ops",
        lambda t, pool, s: scenarios.scenario_storm(t, pool, s, "ops", s.storm_clients),
    ),
    "storm_text_big": (
        "text",
        lambda t, pool, s: scenarios.scenario_storm(t, pool, s, "text", s.storm_big_clients),
    ),
    "storm_ops_big": (
        "ops",
        lambda t, pool, s: scenarios.scenario_storm(t, pool, s, "ops", s.storm_big_clients),
    ),
    "capacity": ("ops", lambda t, pool, s: scenarios.scenario_capacity(t, pool, s, log)),
    "capacity_text": (
        "text",
        lambda t, pool, s: scenarios.scenario_capacity(t, pool, s, log, mode="text"),
    ),
    "idle": ("ops", lambda t, pool, s: scenarios.scenario_idle(t, pool, s)),
}
STORMS = ["storm_text", "storm_ops", "storm_text_big", "storm_ops_big"]
GROUPS = {
    "rooms": ["rooms_text", "rooms_ops"],
    "fanout": ["fanout_ops", "fanout_text"],
    "storm": STORMS,
    "capacity": ["capacity", "capacity_text"],
    # Issue 18: where the prototype's (text-mode) clients live, connection set-up, storms.
    "text": ["rooms_text", "fanout_text", "connect", "capacity_text", *STORMS],
}
# Runs its own servers (`manage.py serve --workers N` on Redis + PostgreSQL, and the in-memory
# default as the baseline) after the targets above: see scenarios.scenario_scale.
SCALE = "scale"
FULL_TARGETS = "floor,asgi-floor,prototype,daphne,uvicorn"
QUICK_TARGETS = "floor,prototype,daphne"
# py-spy runs, separate from the measured ones: key -> run(target, pool, s, hook, seconds).
PROFILES: dict[str, Any] = {
    "rooms_text": lambda t, pool, s, hook, d: scenarios.scenario_rooms(
        t, pool, s, "text", on_window=hook, duration_s=d, drain_s=5
    ),
    "rooms_ops": lambda t, pool, s, hook, d: scenarios.scenario_rooms(
        t, pool, s, "ops", on_window=hook, duration_s=d, drain_s=5
    ),
    "fanout_text": lambda t, pool, s, hook, d: scenarios.scenario_fanout(
        t, pool, s, "text", on_window=hook, duration_s=d, drain_s=5
    ),
    "fanout_ops": lambda t, pool, s, hook, d: scenarios.scenario_fanout(
        t, pool, s, "ops", on_window=hook, duration_s=d, drain_s=5
    ),
    "connect": lambda t, pool, s, hook, d: scenarios.scenario_connect(
        t, pool, s, on_window=hook, duration_s=d
    ),
}


def scenario_keys(names: list[str], s: scenarios.Settings) -> list[str]:
    """Scenario and group names -> the scenario keys to run, in SCENARIOS' order."""
    keys = {key for name in names for key in GROUPS.get(name, [name])}
    return [
        key
        for key in SCENARIOS
        if key in keys and (s.storm_big_clients or not key.endswith("_big"))
    ]


def log(*args: Any) -> None:
    print(*args, flush=True)


def raise_fd_limit() -> tuple[int, int]:
    """2,000 connections need more than the usual 1,024 descriptors; servers and workers are
    spawned after this and inherit the raised soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine_info() -> dict[str, Any]:
    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in (
        "websockets",
        "daphne",
        "channels",
        "Django",
        "Twisted",
        "autobahn",
        "uvicorn",
        "uvloop",
        "httptools",
        "psutil",
        "py-spy",
        "matplotlib",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
    }


def code_state(ref: str | None = None) -> dict[str, Any]:
    """Which server code was measured: other work may be in progress in the tree."""
    import hashlib
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    paths = ["rooms", "collabsite", "manage.py", "autocomplete"]
    if ref is not None:
        return {"commit": git("rev-parse", "--short", ref), "uncommitted": [], "diff_sha1": None}
    diff = git("diff", "HEAD", "--", *paths)
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": [
            line for line in git("status", "--porcelain", "--", *paths).splitlines() if line
        ],
        "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None,
    }


def emit(target: str, scenario: str, result: dict[str, Any]) -> None:
    log("BENCH " + json.dumps({"target": target, "scenario": scenario, **result}, default=str))
    if "steps" not in result:
        log(report.scenario_table(scenario, result))
    else:
        log(report.scenario_table(scenario, {k: v for k, v in result.items() if k != "steps"}))


def run_target(
    target,
    pool: WorkerPool,
    s: scenarios.Settings,
    keys: list[str],
    profile_keys: list[str],
    out_dir: Path,
) -> tuple[dict, dict]:
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    started = time.monotonic()
    log(f"\n=== {target.label} ===")
    target.start()
    log(f"  pid {target.pid}, {target.ws_base}, quiet after {target.settle():.1f} s")
    try:
        plan = [key for key in keys if SCENARIOS[key][0] in target.modes]
        skipped = [key for key in keys if key not in plan]
        if skipped:
            log(f"  skipped (needs a mode {target.name} lacks): {', '.join(skipped)}")
        for index, key in enumerate(plan):
            t = time.monotonic()
            if index:
                target.restart()  # every scenario on a fresh server process
            log(f"  -- {key} (pid {target.pid})")
            try:
                results[key] = SCENARIOS[key][1](target, pool, s)
            except Exception:
                results[key] = {"error": traceback.format_exc()}
                log(results[key]["error"])
            results[key]["elapsed_s"] = round(time.monotonic() - t, 1)
            results[key]["server_settle_s"] = target.settle_s
            emit(target.name, key, results[key])
        if profile_keys:
            profiles = run_profiles(target, pool, s, profile_keys, out_dir)
    finally:
        target.stop()
        if hasattr(target, "close"):
            target.close()
    log(f"  {target.name} done in {time.monotonic() - started:.0f} s")
    return results, profiles


def run_profiles(
    target, pool: WorkerPool, s: scenarios.Settings, keys: list[str], out_dir: Path
) -> dict[str, Any]:
    """py-spy on the server during the given scenarios (PROFILES); separate runs, so the
    sampler's overhead never touches the figures in the table."""
    out: dict[str, Any] = {}
    for key in keys:
        target.restart()
        log(f"  -- profile {key} ({s.profile_s:.0f} s of py-spy, pid {target.pid})")
        recorder: dict[str, Recorder] = {}
        raw = out_dir / f"pyspy-{target.name}-{key}.txt"

        def hook(duration_s: float, raw=raw, recorder=recorder) -> None:
            recorder["r"] = Recorder(target.pid, raw, s.profile_s)

        try:
            PROFILES[key](target, pool, s, hook, s.profile_s + 2)
            summary = (
                recorder["r"].finish() if "r" in recorder else {"error": "py-spy never started"}
            )
        except Exception:
            summary = {"error": traceback.format_exc()}
        out[key] = summary
        log(format_summary(f"  {target.name} {key}", summary))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks: our server vs a bare-websockets floor."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short windows, floor + prototype + daphne, no profile, no scale",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="load-generator processes (default 2)"
    )
    parser.add_argument(
        "--targets",
        default=None,
        help=f"comma list of {FULL_TARGETS} (default: all; --quick: {QUICK_TARGETS})",
    )
    parser.add_argument(
        "--scenarios",
        default=None,
        help=f"comma list of scenarios ({','.join([*SCENARIOS, SCALE])}) and groups "
        f"({','.join(GROUPS)}) (default: all; --quick: all but {SCALE})",
    )
    parser.add_argument(
        "--profile",
        dest="profile",
        action="store_true",
        default=None,
        help="py-spy the servers (default: on in full mode)",
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument(
        "--profile-targets",
        default="uvicorn,daphne",
        help="which servers to profile (default uvicorn,daphne)",
    )
    parser.add_argument(
        "--profile-scenarios",
        default="rooms_text,fanout_text,connect",
        help=f"which runs to profile, of {','.join(PROFILES)} "
        "(default rooms_text,fanout_text,connect)",
    )
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=None,
        help="py-spy's window per profiled run (default 20; --quick: 6)",
    )
    parser.add_argument(
        "--no-uvloop", action="store_true", help="generator workers on the stock asyncio loop"
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="rewrite our sections of docs/benchmarks.md"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--ref",
        default=None,
        help="benchmark this git commit of the server "
        "(default: a copy of the working tree taken at start)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    fd_limit = raise_fd_limit()
    s = scenarios.Settings.for_mode(args.quick, args.workers)
    if args.profile_seconds:
        s.profile_s = args.profile_seconds
    names = (args.targets or (QUICK_TARGETS if args.quick else FULL_TARGETS)).split(",")
    unknown = set(names) - set(FULL_TARGETS.split(","))
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    for name in ("uvicorn", "asgi-floor"):
        if name in names and not uvicorn_available():
            log(f"uvicorn is not installed: skipping {name} (pip install 'uvicorn[standard]')")
            names.remove(name)
    if "prototype" in names and not fastapi_available():
        log("FastAPI is not installed: skipping prototype (pip install -r bench/requirements.txt)")
        names.remove("prototype")
    if args.scenarios is None:
        args.scenarios = ",".join([*SCENARIOS] if args.quick else [*SCENARIOS, SCALE])
    wanted = [x for x in args.scenarios.split(",") if x]
    unknown = set(wanted) - {*SCENARIOS, *GROUPS, SCALE}
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    keys = scenario_keys(wanted, s)
    if "floor" not in names and keys:
        names.insert(0, "floor")  # every figure is a ratio to the floor of the same run
    profile = (not args.quick) if args.profile is None else args.profile
    if profile and not py_spy_available():
        log("py-spy is not installed: no profile (pip install py-spy)")
        profile = False
    profile_targets = set(args.profile_targets.split(","))
    profile_keys = [x for x in args.profile_scenarios.split(",") if x]
    unknown = set(profile_keys) - set(PROFILES)
    if unknown:
        parser.error(f"unknown profile scenarios {sorted(unknown)}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = RESULTS_DIR / f"run-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    data_root = Path(tempfile.mkdtemp(prefix="bench-data-"))
    from bench.targets import snapshot_code

    code_root = snapshot_code(args.ref, data_root / "code")
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "code": {**code_state(args.ref), "measured": args.ref or "working tree (copied at start)"},
        "settings": {k: v for k, v in vars(s).items() if k != "extra"},
        "generator": {"workers": args.workers, "uvloop": not args.no_uvloop, "fd_limit": fd_limit},
        "targets": {},
        "profiles": {},
    }
    if not keys:
        # Only `scale` (it starts its own servers), or only profiles.
        names = [name for name in names if profile and name in profile_targets]
    log(
        f"bench {results['mode']}: targets {names}, scenarios {keys}"
        f"{' + scale' if SCALE in wanted else ''}, "
        f"{args.workers} generator workers, {results['machine']['cores']} cores, "
        f"fd limit {fd_limit[0]}"
    )
    pool = WorkerPool(args.workers, use_uvloop=not args.no_uvloop)
    try:
        for name in names:
            if name == "floor":
                target = FloorTarget()
            elif name == "daphne":
                target = DaphneTarget(data_root / "daphne", code_root)
            elif name == "uvicorn":
                target = UvicornTarget(data_root / "uvicorn", code_root)
            elif name == "asgi-floor":
                target = AsgiFloorTarget()
            else:
                target = PrototypeTarget()
            res, prof = run_target(
                target,
                pool,
                s,
                keys,
                profile_keys if profile and name in profile_targets else [],
                run_dir,
            )
            results["targets"][name] = res
            results.setdefault("commands", {})[name] = getattr(target, "command", "") or {
                "floor": "python bench/floor_server.py",
                "asgi-floor": "python bench/asgi_floor.py (uvicorn, as manage.py serve)",
                "daphne": "manage.py runserver --noreload (tests/e2e/server.py LiveServer)",
            }.get(name, "")
            if prof:
                results["profiles"][name] = prof
        if SCALE in wanted:
            try:
                results["scale"] = scenarios.scenario_scale(
                    pool, s, code_root, data_root / "scale", log
                )
            except Exception:
                results["scale"] = {"error": traceback.format_exc()}
                log(results["scale"]["error"])
    finally:
        pool.close()
        shutil.rmtree(data_root, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["checks"] = {name: report.checks(results, name) for name in report.ours_names(results)}
    results["text_checks"] = {
        name: report.text_checks(results, name) for name in report.ours_names(results)
    }

    path = RESULTS_DIR / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=2, default=str))

    if results["targets"]:
        header, rows = report.comparison_rows(results)
        if rows:
            log("\n=== Results (ratios are ours / floor, same run) ===")
            log(report.text_table(header, rows))
        header, rows = report.check_rows(results)
        if any(row[-1] != "n/a" for row in rows):
            log("\n=== Targets (issue 8) ===")
            log(report.text_table(header, rows, left=2))
        header, rows = report.text_rows(results)
        if rows:
            log("\n=== Text mode, connect, storm (issue 18): ratios to floor and prototype ===")
            log(report.text_table(header, rows))
            header, rows = report.text_check_rows(results)
            log("\n=== Targets (issue 18) ===")
            log(report.text_table(header, rows, left=2))
    if results.get("scale", {}).get("configs"):
        header, rows = report.scale_rows(results)
        log("\n=== Scale-out: fixed load (ops mode; CPU in cores of this machine) ===")
        log(report.text_table(header, rows, left=1))
        header, rows = report.scale_held_rows(results)
        log("\n=== Scale-out: highest fixed rate held (p99 fan-out <= limit, none missing) ===")
        log(report.text_table(header, rows, left=1))
        header, rows = report.scale_retry_rows(results)
        log("\n=== Scale-out: one room hammered (sequencing retries) ===")
        log(report.text_table(header, rows, left=2))
        header, rows = report.scale_text_rows(results)
        log("\n=== Scale-out: fixed load, text mode ===")
        log(report.text_table(header, rows, left=1))
        header, rows = report.scale_target_rows(results)
        log("\n=== Scale-out: targets (issue 15) ===")
        log(report.text_table(header, rows, left=1))
    header, rows = report.health_rows(results)
    log("\n=== Measurement health ===")
    log(report.text_table(header, rows, left=4))
    log(f"\nresults: {path.relative_to(PROJECT_ROOT)}  ({results['elapsed_s']:.0f} s)")

    if not args.no_plot and "capacity" in keys:
        try:
            from bench import plot

            png = plot.plot(results, PROJECT_ROOT / "docs" / "benchmarks-latency.png")
            log(f"plot: {png.relative_to(PROJECT_ROOT)}")
        except Exception:
            log("plot failed:\n" + traceback.format_exc())
    if not args.no_plot and (results.get("scale") or {}).get("configs"):
        try:
            from bench import plot

            png = plot.plot_scale(results, PROJECT_ROOT / "docs" / "benchmarks-scale.png")
            log(f"plot: {png.relative_to(PROJECT_ROOT)}")
        except Exception:
            log("plot failed:\n" + traceback.format_exc())
    if args.write_docs:
        from bench import docs

        written = docs.write(results, PROJECT_ROOT / "docs" / "benchmarks.md")
        log(f"docs: docs/benchmarks.md ({', '.join(written) or 'nothing to write'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
