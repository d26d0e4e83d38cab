"""Autocomplete latency: the keyword path and the Jedi path, each against a floor in the same run.

    python bench/bench_autocomplete.py            # about a minute on 2 cores
    python bench/bench_autocomplete.py --quick    # fewer samples, for a smoke check

Prints one JSON line (all numbers, machine-readable), then a table. What is measured:

- keyword path: `completion.keyword_suggestions(q)` and `completion.items_without_context(q)`
  per call, over every prefix of every keyword plus misses; floor: the bare
  `sorted(k for k in keyword.kwlist if k.startswith(q))`; "timer" is an empty call, the cost of
  the clock itself, included in every per-call number of this group.
- Jedi path, on a generated 1,000-line module, at positions spread over it:
  - cold: the first call in a fresh process (one subprocess per sample): ours through
    `complete_in_code_sync` with the default budget (warm-up wait included), and the floor
    `import jedi; jedi.Script(code).complete(line, column)`;
  - warm: ours with the cache bypassed (`cache_key=None`, budget raised so every call ends in
    Jedi's answer), ours cached, ours past the budget (budget 0: the fallback), and two floors:
    raw `jedi.Script(code).complete(line, column)` and raw Jedi with our settings (sandbox
    project, flow analysis off).
"""

from __future__ import annotations

import argparse
import json
import keyword
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is bench/, whose profile.py would shadow the stdlib's `profile`:
# import from the project root instead.
if sys.path and Path(sys.path[0] or ".").resolve() == PROJECT_ROOT / "bench":
    sys.path[0] = str(PROJECT_ROOT)
elif str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from django.conf import settings  # noqa: E402

if not settings.configured:
    # The completion module reads only its AUTOCOMPLETE_* settings (defaults apply); no app
    # registry, so nothing warms Jedi up behind the cold measurement's back.
    settings.configure()

from autocomplete import completion  # noqa: E402

DEADLINE_S = 110  # the whole run, children included, stays under two minutes
COLD_POSITION = "cold"  # which probe the cold samples complete at


def generated_module(lines: int = 1000, seed: int = 7) -> str:
    """A plausible module: imports, functions with locals, classes with methods and attributes."""
    rng = random.Random(seed)
    out = [
        '"""Generated for the autocomplete benchmark."""',
        "import collections",
        "import json",
        "import os",
        "import re",
        "from pathlib import Path",
        "",
        "LIMIT = 100",
        "",
    ]
    index = 0
    while len(out) + 12 + 8 <= lines:  # room left for one more block and the probes
        index += 1
        if rng.random() < 0.3:
            out += [
                f"class Record{index}:",
                f'    """Record number {index}."""',
                "",
                "    def __init__(self, name, size=0):",
                "        self.name = name",
                "        self.size = size",
                "        self.tags = collections.Counter()",
                "",
                "    def describe(self):",
                "        text = json.dumps({'name': self.name, 'size': self.size})",
                "        return text.upper()",
                "",
            ]
        else:
            out += [
                f"def helper_{index}(value, count=3):",
                f"    path_{index} = os.path.join(str(value), 'data.json')",
                "    pattern = re.compile(r'[a-z]+')",
                "    found = pattern.findall(Path(path_" + str(index) + ").name)",
                "    if len(found) > LIMIT:",
                "        return found[:count]",
                f"    return sorted(found) + [path_{index}]",
                "",
            ]
    # The probes: the cursor sits at the end of each of these lines.
    out += [
        "",
        "def probes(record):",
        "    os.path.jo",  # cold probe: attribute of a stdlib submodule
        "    record.desc",
        "    json.lo",
        "    helper_1",
        "    pri",
        "    Path('.').ex",
    ]
    while len(out) < lines:
        out.append("")
    return "\n".join(out[:lines])


def positions(code: str, count: int, seed: int = 11) -> list[tuple[int, int]]:
    """(line, column) pairs: every probe, then cursors two characters into random names."""
    lines = code.split("\n")
    start = lines.index("def probes(record):") + 2
    chosen = [(n + 1, len(lines[n])) for n in range(start - 1, start + 5)]
    rng = random.Random(seed)
    while len(chosen) < count:
        n = rng.randrange(8, start - 2)
        text = lines[n]
        words = [
            i for i in range(1, len(text) - 3) if text[i].isalpha() and not text[i - 1].isalnum()
        ]
        if words:
            chosen.append((n + 1, rng.choice(words) + 2))
    return chosen


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict[str, Any]:
    if not samples:  # the deadline came first
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {
        "n": len(samples),
        "p50": percentile(samples, 0.50),
        "p99": percentile(samples, 0.99),
        "max": max(samples),
    }


def per_call(fn: Callable[[str], Any], queries: list[str], calls: int) -> list[float]:
    """Seconds per call, each call timed on its own (so p99 is a real tail)."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        q = queries[i % len(queries)]
        t0 = clock()
        fn(q)
        samples.append((clock() - t0) / 1e9)
    return samples


def bench_keywords(calls: int) -> dict[str, Any]:
    queries = sorted({k[:end] for k in keyword.kwlist for end in range(len(k) + 1)})
    queries += ["x", "zz", "Tru", "imports", "é"]

    def floor(q: str) -> list[str]:
        return sorted(k for k in keyword.kwlist if k.startswith(q))

    for q in queries:  # the contract itself, checked on the way
        assert completion.keyword_suggestions(q) == floor(q), q
    return {
        "timer": summary(per_call(lambda q: None, queries, calls)),
        "floor_sorted_startswith": summary(per_call(floor, queries, calls)),
        "keyword_suggestions": summary(per_call(completion.keyword_suggestions, queries, calls)),
        "items_without_context": summary(
            per_call(completion.items_without_context, queries, calls)
        ),
    }


def cold_child(kind: str) -> None:
    """In a fresh process: time the first completion, print one JSON line."""
    code = generated_module()
    line, column = positions(code, 1)[0]
    t0 = time.perf_counter()
    if kind == "ours":
        result = completion.complete_in_code_sync(
            cache_key=None, code=code, line=line, column=column
        )
        labels = [item["label"] for item in result["items"]]
        incomplete = result["incomplete"]
    else:
        import jedi

        labels = [c.name for c in jedi.Script(code).complete(line, column)]
        incomplete = False
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "incomplete": incomplete, "labels": labels[:5]}))


def bench_cold(samples: int, deadline: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("ours", "raw_jedi"):
        times, incomplete = [], 0
        for _ in range(samples):
            if time.monotonic() > deadline:
                break
            child = subprocess.run(
                [sys.executable, __file__, "--cold-child", kind],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                cwd=PROJECT_ROOT,
            )
            answer = json.loads(child.stdout.strip().splitlines()[-1])
            times.append(answer["seconds"])
            incomplete += answer["incomplete"]
        out[kind] = {**summary(times), "incomplete": incomplete}
    return out


def bench_warm(
    code: str, probes: list[tuple[int, int]], deadline: float
) -> tuple[dict[str, Any], float]:
    """Per-variant latency summaries, and the share of uncached calls over the default budget."""
    import jedi

    completion.start_warm_up().result(timeout=60)
    project = completion._project()

    def raw(line: int, column: int) -> None:
        jedi.Script(code).complete(line, column)

    def raw_our_settings(line: int, column: int) -> None:
        script = jedi.Script(code, project=project)
        script._inference_state.flow_analysis_enabled = False
        script.complete(line, column)

    def ours_uncached(line: int, column: int) -> None:
        result = completion.complete_in_code_sync(
            cache_key=None, code=code, line=line, column=column, budget=30
        )
        assert not result["incomplete"]

    def ours_cached(line: int, column: int) -> None:
        result = completion.complete_in_code_sync(
            cache_key=("bench", 0, line, column), code=code, line=line, column=column
        )
        assert not result["incomplete"]

    def run_on_jedi_thread(fn: Callable[[int, int], None]) -> Callable[[int, int], None]:
        # Raw Jedi runs on the same single thread as ours: same caches, no concurrent Jedi use.
        return lambda line, column: completion._executor.submit(fn, line, column).result()

    variants = {
        "floor_raw_jedi": run_on_jedi_thread(raw),
        "floor_raw_jedi_our_settings": run_on_jedi_thread(raw_our_settings),
        "ours_cache_bypassed": ours_uncached,
    }
    out: dict[str, Any] = {}
    for name, fn in variants.items():
        fn(*probes[0])  # first touch of this variant's caches is not part of the warm numbers
        samples = []
        for line, column in probes:
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            fn(line, column)
            samples.append(time.perf_counter() - t0)
        out[name] = summary(samples)
        if name == "ours_cache_bypassed":
            # How often the default budget would have cut Jedi off at these positions.
            budget = completion.budget_s()
            over_budget = sum(s > budget for s in samples) / max(1, len(samples))

    completion.clear_cache()
    for line, column in probes:
        ours_cached(line, column)  # fill (default budget; a miss would fail the assertion)
    samples = []
    for _ in range(20):
        for line, column in probes:
            t0 = time.perf_counter()
            ours_cached(line, column)
            samples.append(time.perf_counter() - t0)
    out["ours_cached"] = summary(samples)

    # Past the budget: what the editor gets when Jedi is late (the jobs still run behind it).
    samples = []
    for line, column in probes:
        t0 = time.perf_counter()
        completion.complete_in_code_sync(
            cache_key=None, code=code, line=line, column=column, budget=0
        )
        samples.append(time.perf_counter() - t0)
        completion._executor.submit(lambda: None).result()  # drain before the next sample
    out["ours_budget_exceeded_fallback"] = summary(samples)
    return out, over_budget


def table(results: dict[str, Any]) -> str:
    rows = [("path", "variant", "n", "p50", "p99")]

    def fmt(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        if seconds < 1e-3:
            return f"{seconds * 1e6:.1f} µs"
        if seconds < 1:
            return f"{seconds * 1e3:.1f} ms"
        return f"{seconds:.2f} s"

    for group, label in (("keyword", "keyword"), ("cold", "jedi cold"), ("warm", "jedi warm")):
        for variant, s in results[group].items():
            rows.append((label, variant, str(s["n"]), fmt(s["p50"]), fmt(s["p99"])))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke check)")
    parser.add_argument("--cold-child", choices=["ours", "raw_jedi"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_child:
        cold_child(args.cold_child)
        return 0

    started = time.monotonic()
    deadline = started + DEADLINE_S
    code = generated_module()
    probes = positions(code, 12 if args.quick else 60)
    results: dict[str, Any] = {
        "benchmark": "autocomplete",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "file_lines": code.count("\n") + 1,
        "budget_s": completion.budget_s(),
    }
    results["keyword"] = bench_keywords(20_000 if args.quick else 200_000)
    results["cold"] = bench_cold(2 if args.quick else 5, deadline - 50)
    results["warm"], results["warm_share_over_budget"] = bench_warm(code, probes, deadline)
    results["note_p99"] = "nearest-rank p99: with fewer than 100 samples it is the max"
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
