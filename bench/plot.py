"""Plot fan-out latency (p50 and p99) against offered load from the capacity scenario.

    python bench/plot.py [results.json] [out.png]

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


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_IN
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    print(plot(json.loads(source.read_text()), out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
