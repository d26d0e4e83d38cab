"""Plot fan-out latency (p50 and p99) against offered load from the capacity scenario, and
whole-system CPU per edit against the process count from the scale scenario.

    python bench/plot.py [results.json] [out.png]
    python bench/plot.py --scale [results.json] [out.png]   # docs/benchmarks-scale.png

Defaults: bench/results/latest.json -> docs/benchmarks-latency.png. One line pair per server
(the floor and ours), p50 solid, p99 dashed, the capacity limit as a horizontal line; steps that
failed are marked with an x.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IN = PROJECT_ROOT / "bench" / "results" / "latest.json"
DEFAULT_OUT = PROJECT_ROOT / "docs" / "benchmarks-latency.png"
COLORS = {"floor": "#555555", "daphne": "#1f77b4", "uvicorn": "#d62728"}


def plot(results: dict[str, Any], out: Path = DEFAULT_OUT) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    limit = None
    for name, scenarios in results.get("targets", {}).items():
        capacity = scenarios.get("capacity") or {}
        steps = sorted(
            (st for st in capacity.get("steps", []) if st.get("fanout_p50_ms") is not None),
            key=lambda st: st["offered_edits_s"],
        )
        if not steps:
            continue
        limit = capacity.get("p99_limit_ms", limit)
        color = COLORS.get(name)
        x = [st["offered_edits_s"] for st in steps]
        ax.plot(
            x,
            [st["fanout_p50_ms"] for st in steps],
            "-o",
            color=color,
            label=f"{name} p50",
            markersize=4,
        )
        ax.plot(
            x,
            [st["fanout_p99_ms"] for st in steps],
            "--s",
            color=color,
            label=f"{name} p99",
            markersize=4,
        )
        failed = [st for st in steps if not st.get("held")]
        if failed:
            ax.plot(
                [st["offered_edits_s"] for st in failed],
                [st["fanout_p99_ms"] for st in failed],
                "x",
                color=color,
                markersize=10,
                markeredgewidth=2,
            )
    if limit:
        ax.axhline(
            limit, color="#999999", linewidth=1, linestyle=":", label=f"p99 limit {limit:g} ms"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (edits/s, all rooms; 50 rooms x 2 users, ops mode)")
    ax.set_ylabel("fan-out latency (ms)")
    machine = results.get("machine", {})
    ax.set_title(
        f"Fan-out latency vs load ({results.get('date', '')[:10]}, "
        f"{machine.get('cores', '?')} cores, {results.get('mode', '')} run; x = step failed)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


SCALE_OUT = PROJECT_ROOT / "docs" / "benchmarks-scale.png"


def plot_scale(results: dict[str, Any], out: Path = SCALE_OUT) -> Path:
    """Whole-system CPU per edit (server processes + PostgreSQL + Redis) against the number of
    processes, from the `scale` scenario: routed by room, at random, and the embedded default
    (one process, SQLite, no Redis) as a horizontal line. Ops mode solid, text mode dashed."""
    configs = (results.get("scale") or {}).get("configs", {})
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    styles = {
        "ops": ("fixed_system_cpu_per_edit_us", "-"),
        "text": ("text_system_cpu_per_edit_us", "--"),
    }
    series = {"routed by room": "#1f77b4", "at random": "#d62728"}
    for mode, (key, line) in styles.items():
        base = (configs.get("memory-1", {}).get("summary") or {}).get(key)
        if base:
            ax.axhline(
                base / 1000,
                color="#555555",
                linewidth=1,
                linestyle=line,
                label=f"embedded default, 1 process ({mode})",
            )
        for label, color in series.items():
            points = []
            for config in configs.values():
                m = config.get("summary") or {}
                if m.get("backend") != "redis+postgres" or m.get(key) is None:
                    continue
                route = m.get("route") or "room"
                # One process is the same server either way: it starts both lines.
                if m.get("processes") == 1 or (route == "room") == (label == "routed by room"):
                    points.append((m["processes"], m[key] / 1000))
            if points:
                points.sort()
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    line + "o",
                    color=color,
                    label=f"Redis + PostgreSQL, {label} ({mode})",
                    markersize=5,
                )
    ax.set_xlabel("server processes (manage.py serve --workers N)")
    ax.set_ylabel("CPU per edit: server + PostgreSQL + Redis (ms)")
    ax.set_xticks(
        sorted({(c.get("summary") or {}).get("processes") or 1 for c in configs.values()})
    )
    ax.set_ylim(bottom=0)
    machine = results.get("machine", {})
    ax.set_title(
        f"Whole-system CPU per edit vs processes ({results.get('date', '')[:10]}, "
        f"{machine.get('cores', '?')} cores, {results.get('mode', '')} run; 50 rooms x 2 users, "
        "200 edits/s)",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    """`python bench/plot.py [results.json] [out.png]`; `--scale` first plots the scale-out
    figure (default docs/benchmarks-scale.png) instead of the latency one."""
    scale = bool(argv) and argv[0] == "--scale"
    if scale:
        argv = argv[1:]
    source = Path(argv[0]) if argv else DEFAULT_IN
    out = Path(argv[1]) if len(argv) > 1 else (SCALE_OUT if scale else DEFAULT_OUT)
    results = json.loads(source.read_text())
    print(plot_scale(results, out) if scale else plot(results, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
