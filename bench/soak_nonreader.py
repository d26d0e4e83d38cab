"""Soak: a client that never reads, beside 8 people editing a 100 KB room in text mode.

    python -m bench.soak_nonreader                  # both launchers, 60 s windows (~5 minutes)
    python -m bench.soak_nonreader --rounds 3       # alternated three times (~15 minutes)
    python -m bench.soak_nonreader --seconds 20 --launchers runserver

Every change in text mode sends the whole text to every text-mode client, so a client that stops
reading is owed 100 KB more per change. For each launcher (`manage.py runserver`, daphne; and
`manage.py serve`, uvicorn with one worker) two runs, each on a fresh server and its own SQLite
database, with the server's default settings (the rate limit raised, as in the other scenarios):

- baseline: 8 text-mode editors, each sending an edit (its whole text with one token inserted)
  every 1/`--rate` seconds when it has none in flight, and reading everything it is sent;
- non-reader: the same, plus a ninth text-mode client that takes `init` through a 4 KiB receive
  window and then never reads again (tests/support/stalled_client.py).

Before each window: one completion (the server loads Jedi in the background at start and a
completion waits for it) and 3 s of editing. Printed per run: the serving process's resident
memory at the start of the window, its peak and its growth over the window (psutil, every
0.5 s); the editors' ack latency p50/p99 (send to ack, one clock); edits acked; the machine's
load and the CPU other processes took meanwhile (this machine is shared); and the server's own
count of connections closed with 4413 (/metrics). With `--rounds`, the baseline and non-reader
runs alternate, and a second table pools each variant's acks over the rounds. Then the issue's
targets, on the pooled figures: RSS growth < 100 MB under both launchers with the non-reader
(the largest of its rounds), and its ack p50 within 1.5x of the baseline's.
Results also go to bench/results/soak-nonreader-<UTC time>.json. Only 127.0.0.1; every wait is
bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import websockets

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.e2e.server import LAUNCHERS, launched  # noqa: E402
from tests.support.stalled_client import StalledClient  # noqa: E402

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
EDITORS = 8
DOCUMENT_CHARS = 100_000
WARMUP_S = 3.0
SAMPLE_EVERY_S = 0.5
WAIT_S = 30
MB = 1_000_000
RSS_GROWTH_TARGET_MB = 100
ACK_P50_TARGET_RATIO = 1.5
# The limiter is not what is measured: every edit the soak sends must be served.
SERVER_ENV = {"COLLAB_RATE_BURST": "1000000000", "COLLAB_RATE_PER_S": "1000000000"}


def document() -> str:
    lines, size, number = [], 0, 0
    while size < DOCUMENT_CHARS:
        line = f"def handler_{number}(request, value={number}):\n    return value * {number}\n"
        lines.append(line)
        size += len(line)
        number += 1
    return "".join(lines)[:DOCUMENT_CHARS]


def percentile_ms(values_s: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in ms."""
    if not values_s:
        return None
    ordered = sorted(values_s)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1e3, 2)


class Editor:
    """A text-mode client that keeps at most one edit in flight and reads everything."""

    def __init__(self, number: int, url: str, rate: float) -> None:
        self.number = number
        self.url = url
        self.period = 1 / rate
        self.rng = random.Random(number)
        self.text = ""
        self.base = 0
        self.in_flight: tuple[float, str] | None = None  # (sent at, text sent)
        self.latencies: list[float] = []
        self.measuring = False
        self.sent = 0
        self.skipped = 0  # periods that came while an edit was still in flight

    async def run(self, stop: asyncio.Event) -> None:
        async with websockets.connect(
            self.url, max_size=None, max_queue=None, compression=None, open_timeout=WAIT_S
        ) as ws:
            init = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            self.text, self.base = init["code"], init["version"]
            reader = asyncio.ensure_future(self.read(ws))
            try:
                await asyncio.sleep(self.rng.random() * self.period)  # spread the editors
                loop = asyncio.get_running_loop()
                next_at = loop.time()
                while not stop.is_set():
                    if self.in_flight is None:
                        await self.edit(ws)
                    else:
                        self.skipped += 1
                    next_at += self.period
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
            finally:
                reader.cancel()

    async def edit(self, ws) -> None:
        position = self.rng.randrange(len(self.text) + 1)
        new_text = f"{self.text[:position]}e{self.number}.{self.sent};{self.text[position:]}"
        self.in_flight = (time.monotonic(), new_text)
        self.sent += 1
        await ws.send(json.dumps({"type": "sync_code", "code": new_text, "version": self.base}))

    async def read(self, ws) -> None:
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] == "ack" and self.in_flight is not None:
                sent_at, sent_text = self.in_flight
                if self.measuring:
                    self.latencies.append(time.monotonic() - sent_at)
                self.base = message["version"]
                self.text = message.get("code", sent_text)
                self.in_flight = None
            elif message["type"] == "sync_code" and self.in_flight is None:
                self.text, self.base = message["code"], message["version"]
            elif message["type"] == "error":
                raise AssertionError(f"editor {self.number}: {message}")


def other_cores(busy_before: float, busy_after: float, ours_s: float, seconds: float) -> float:
    """Cores the rest of the machine kept busy: all busy time minus the server's and ours."""
    return round(max(0.0, busy_after - busy_before - ours_s) / seconds, 2)


def machine_busy_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def behind_closes(http_url: str) -> int:
    for line in httpx.get(f"{http_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("collab_connections_behind_total "):
            return int(float(line.split()[1]))
    return 0


async def soak(
    launcher: str, with_nonreader: bool, seconds: float, rate: float
) -> tuple[list[float], dict]:
    """One run on a fresh server: the editors' ack latencies (s) and the run's summary."""
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as data_dir,
        launched(launcher, Path(data_dir), env=SERVER_ENV) as server,
    ):
        created = httpx.post(f"{server.http_url}/rooms", json={"code": document()}, timeout=30)
        created.raise_for_status()
        url = f"{server.ws_base}/ws/{created.json()['room_id']}?mode=text"
        async with websockets.connect(url, max_size=None, open_timeout=WAIT_S) as probe:
            await probe.send(json.dumps({"type": "complete", "id": 1, "line": 1, "column": 3}))
            while json.loads(await asyncio.wait_for(probe.recv(), WAIT_S))["type"] != (
                "completions"
            ):
                pass
        stop = asyncio.Event()
        editors = [Editor(number, url, rate) for number in range(EDITORS)]
        tasks = [asyncio.ensure_future(editor.run(stop)) for editor in editors]
        nonreader = None
        try:
            await asyncio.sleep(WARMUP_S)
            if with_nonreader:
                nonreader = await asyncio.wait_for(StalledClient(url, server.port).open(), WAIT_S)
            process = psutil.Process(server.pid)
            ours = psutil.Process()
            cpu_before = sum(process.cpu_times()[:2]) + sum(ours.cpu_times()[:2])
            busy_before, load_before = machine_busy_s(), os.getloadavg()[0]
            rss_start = process.memory_info().rss
            samples = [rss_start]
            for editor in editors:
                editor.measuring = True
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                await asyncio.sleep(SAMPLE_EVERY_S)
                samples.append(process.memory_info().rss)
                for task in tasks:
                    if task.done():
                        task.result()  # an editor failed: say why
            for editor in editors:
                editor.measuring = False
            elapsed = time.monotonic() - started
            cpu_after = sum(process.cpu_times()[:2]) + sum(ours.cpu_times()[:2])
            busy_after = machine_busy_s()
            closed_behind = behind_closes(server.http_url)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if nonreader is not None:
                await nonreader.close()
    latencies = [latency for editor in editors for latency in editor.latencies]
    return latencies, {
        "launcher": launcher,
        "nonreader": with_nonreader,
        "seconds": round(elapsed, 1),
        "rss_start_mb": round(rss_start / MB, 1),
        "rss_peak_mb": round(max(samples) / MB, 1),
        "rss_end_mb": round(samples[-1] / MB, 1),
        "rss_growth_mb": round((max(samples) - rss_start) / MB, 1),
        "ack_p50_ms": percentile_ms(latencies, 0.50),
        "ack_p99_ms": percentile_ms(latencies, 0.99),
        "edits_acked": len(latencies),
        "edits_per_s": round(len(latencies) / elapsed, 1),
        "skipped_periods": sum(editor.skipped for editor in editors),
        "closed_4413": closed_behind,
        "load_1min_at_start": round(load_before, 2),
        "other_cores": other_cores(busy_before, busy_after, cpu_after - cpu_before, elapsed),
    }


def pooled(runs: list[dict], latencies: dict[tuple[str, bool], list[float]]) -> list[dict]:
    """Per launcher and variant over every round: ack percentiles of all acks together, the
    largest RSS growth, the mean of the other load."""
    rows = []
    for (launcher, with_nonreader), values in latencies.items():
        mine = [r for r in runs if r["launcher"] == launcher and r["nonreader"] == with_nonreader]
        rows.append(
            {
                "launcher": launcher,
                "nonreader": with_nonreader,
                "rounds": len(mine),
                "rss_growth_mb": max(r["rss_growth_mb"] for r in mine),
                "ack_p50_ms": percentile_ms(values, 0.50),
                "ack_p99_ms": percentile_ms(values, 0.99),
                "edits_per_s": round(sum(r["edits_per_s"] for r in mine) / len(mine), 1),
                "closed_4413": sum(r["closed_4413"] for r in mine),
                "other_cores": round(sum(r["other_cores"] for r in mine) / len(mine), 2),
            }
        )
    return rows


def targets(rows: list[dict]) -> list[tuple[str, bool, str]]:
    checks = []
    for launcher in dict.fromkeys(row["launcher"] for row in rows):
        base = next(r for r in rows if r["launcher"] == launcher and not r["nonreader"])
        slow = next(r for r in rows if r["launcher"] == launcher and r["nonreader"])
        growth = slow["rss_growth_mb"]
        checks.append(
            (
                f"{launcher}: RSS growth with the non-reader < {RSS_GROWTH_TARGET_MB} MB",
                growth < RSS_GROWTH_TARGET_MB,
                f"{growth} MB",
            )
        )
        ratio = slow["ack_p50_ms"] / base["ack_p50_ms"]
        checks.append(
            (
                f"{launcher}: ack p50 with / without the non-reader <= {ACK_P50_TARGET_RATIO}x",
                ratio <= ACK_P50_TARGET_RATIO,
                f"{slow['ack_p50_ms']} / {base['ack_p50_ms']} ms = {ratio:.2f}x",
            )
        )
    return checks


COLUMNS = (
    ("launcher", "launcher"),
    ("nonreader", "non-reader"),
    ("rss_start_mb", "RSS start (MB)"),
    ("rss_peak_mb", "RSS peak (MB)"),
    ("rss_growth_mb", "RSS growth (MB)"),
    ("ack_p50_ms", "ack p50 (ms)"),
    ("ack_p99_ms", "ack p99 (ms)"),
    ("edits_per_s", "edits acked/s"),
    ("closed_4413", "closed 4413"),
    ("load_1min_at_start", "load (1 min)"),
    ("other_cores", "other load (cores)"),
)


POOLED_COLUMNS = (
    ("launcher", "launcher"),
    ("nonreader", "non-reader"),
    ("rounds", "rounds"),
    ("rss_growth_mb", "RSS growth, largest (MB)"),
    ("ack_p50_ms", "ack p50 (ms)"),
    ("ack_p99_ms", "ack p99 (ms)"),
    ("edits_per_s", "edits acked/s"),
    ("closed_4413", "closed 4413"),
    ("other_cores", "other load, mean (cores)"),
)


def table(rows: list[dict], columns: tuple[tuple[str, str], ...]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [
            str(row[key]) if key != "nonreader" else ("yes" if row[key] else "no")
            for key, _ in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per run")
    parser.add_argument("--rate", type=float, default=5.0, help="edits/s per editor (at most)")
    parser.add_argument("--launchers", nargs="+", choices=LAUNCHERS, default=list(LAUNCHERS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate baseline and non-reader runs this many times (the machine's load drifts)",
    )
    args = parser.parse_args(argv)
    runs: list[dict] = []
    latencies: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for launcher in args.launchers:
            for with_nonreader in (False, True):
                acks, run = asyncio.run(soak(launcher, with_nonreader, args.seconds, args.rate))
                print("SOAK " + json.dumps(run), flush=True)
                runs.append(run)
                latencies.setdefault((launcher, with_nonreader), []).extend(acks)
    rows = pooled(runs, latencies)
    print()
    print(table(runs, COLUMNS))
    print()
    print(table(rows, POOLED_COLUMNS))
    print()
    failed = 0
    for name, held, value in targets(rows):
        failed += not held
        print(f"{'PASS' if held else 'FAIL'}  {name}: {value}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"soak-nonreader-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "pooled": rows}, indent=2))
    print(f"\nresults: {out.relative_to(PROJECT_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
