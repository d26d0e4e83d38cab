"""A room's history (docs/protocol.md, "History"): the text at any version of a long history,
blame of a long file, and what keeping authorship costs per edit, each next to a baseline taken
in the same run.

    python bench/bench_history.py            # 100,000-change room, 10,000-line file (~3 min)
    python bench/bench_history.py --quick    # 10,000 changes, 2,000 lines (smoke check)
    python bench/bench_history.py --postgres postgres://postgres@127.0.0.1:5432

Prints one JSON line (all numbers), then a table. The rooms are built in a fresh database (a
temporary SQLite file, or a temporary PostgreSQL database) through the server's own write path
(rooms.document.change_submit), so the copies of the text and their authorship are exactly
what a server writes. Requests go through the REST API in this process with Django's test
client (URL routing, view, queries, JSON encoding; no network, no other server process):

- text at a version: `GET /rooms/<id>?version=V` for random V of a 100,000-change room; at a
  time: `?at=<ISO 8601>`. Baselines: the same request at the head (`GET /rooms/<id>`), and the
  text at V computed the way it was before copies were kept (every op from version 0, the code
  this work replaced).
- blame: `GET /rooms/<id>/blame` of a 10,000-line file written by four authors (pastes, then
  thousands of small edits), `/authorship`, and the blame computed from the live room's memory
  (what a WebSocket request at the head costs, without JSON). Baseline: `GET /rooms/<id>` of
  the same room (reading the file and its ops, encoding it).
- authorship per edit: `Authorship.apply` for keystrokes typed into the 100,000-change room's
  text, next to what a live room already does per edit with the text (`ot.apply` and
  `ot.invert`).

Percentiles are nearest-rank; p99 of fewer than 100 samples is the maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, sys.path[0] is bench/, whose profile.py would shadow the stdlib's `profile`.
if sys.path and Path(sys.path[0] or ".").resolve() == PROJECT_ROOT / "bench":
    sys.path[0] = str(PROJECT_ROOT)
elif str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

AUTHORS = ["alice-bench", "bob-bench-1", "carol-bench", "dave-bench-1"]


def pct(samples_s: list[float], q: float) -> float:
    ordered = sorted(samples_s)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1e3, 3)


def timed(call, samples: int) -> dict[str, float]:
    """p50/p99 in ms of `call()` (its result is checked by the caller beforehand)."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return {"n": samples, "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}


# -- building the rooms (the server's own write path) -----------------------------------------


async def typed_history(room_id: str, changes: int, rng: random.Random) -> None:
    """Four people writing a file: mostly keystrokes at a cursor, some deletions, new lines,
    and jumps elsewhere."""
    from rooms import document
    from rooms.live import live_rooms

    live = await live_rooms.acquire(room_id)
    cursor = 0
    author = AUTHORS[0]
    try:
        for _ in range(changes):
            text = live.text
            if rng.random() < 0.02:
                author = rng.choice(AUTHORS)
                cursor = rng.randint(0, len(text))
            cursor = min(cursor, len(text))
            roll = rng.random()
            if roll < 0.18 and cursor > 0:
                op = [cursor - 1, {"d": 1}] if cursor > 1 else [{"d": 1}]
                cursor -= 1
            else:
                piece = "\n" if roll < 0.26 else rng.choice("abcdefghijklmnopqrstuvwxyz_ ().=")
                op = [cursor, piece] if cursor else [piece]
                cursor += 1
            await document.change_submit(
                live, base_version=live.version, op=op, user=author[:8], client=author
            )
    finally:
        live_rooms.release(live)


async def long_file(room_id: str, lines: int, edits: int, rng: random.Random) -> None:
    """A file of `lines` lines pasted in blocks by four people, then `edits` small edits on
    random lines by random people."""
    from rooms import document
    from rooms.live import live_rooms

    live = await live_rooms.acquire(room_id)
    try:
        written = 0
        while written < lines:
            block = min(50, lines - written)
            author = rng.choice(AUTHORS)
            paste = "".join(
                f"    value_{written + n} = compute({written + n}, '{author}')\n"
                for n in range(block)
            )
            starts = [0] + [match.end() for match in re.finditer("\n", live.text)]
            at = rng.choice(starts)
            op = [at, paste] if at else [paste]
            await document.change_submit(
                live, base_version=live.version, op=op, user=author[:8], client=author
            )
            written += block
        for _ in range(edits):
            author = rng.choice(AUTHORS)
            text = live.text
            at = rng.randint(0, len(text) - 1)
            op = [at, "x"] if at else ["x"]
            if rng.random() < 0.3 and text[at] != "\n":
                op = [at, {"d": 1}] if at else [{"d": 1}]
            await document.change_submit(
                live, base_version=live.version, op=op, user=author[:8], client=author
            )
    finally:
        live_rooms.release(live)


def replayed_from_zero(room_id: str, version: int) -> str:
    """The text at `version` as it was computed before copies were kept: every op from 0."""
    from rooms import ot
    from rooms.models import Op, Room

    text = Room.objects.values_list("initial_code", flat=True).get(id=room_id)
    for op in (
        Op.objects.filter(room_id=room_id, version__lte=version)
        .order_by("version")
        .values_list("op", flat=True)
    ):
        text = ot.apply(text, op)
    return text


# -- measuring ------------------------------------------------------------------------------


def bench_text_at(room_id: str, head: int, samples: int, rng: random.Random) -> dict[str, Any]:
    from django.test import Client

    from rooms.models import Op

    client = Client()
    versions = [rng.randint(0, head) for _ in range(samples)]
    # Correct first: the answer is the op log replayed to that version.
    for version in versions[:3]:
        body = client.get(f"/rooms/{room_id}?version={version}").json()
        assert body["code"] == replayed_from_zero(room_id, version), version
    queue = iter(versions * 2)
    ours = timed(lambda: client.get(f"/rooms/{room_id}?version={next(queue)}"), samples)
    times = dict(Op.objects.filter(room_id=room_id).values_list("version", "ts"))
    ats = iter(
        dt.datetime.fromtimestamp(times[rng.randint(1, head)] / 1000, dt.UTC).isoformat()
        for _ in range(samples)
    )
    at_time = timed(lambda: client.get(f"/rooms/{room_id}", {"at": next(ats)}), samples)
    head_body = timed(lambda: client.get(f"/rooms/{room_id}"), samples)
    late = iter(rng.randint(head // 2, head) for _ in range(5))
    from_zero = timed(lambda: replayed_from_zero(room_id, next(late)), 5)
    return {
        "changes": head,
        "text_code_points": len(client.get(f"/rooms/{room_id}").json()["code"]),
        "ours_version": ours,
        "ours_at_time": at_time,
        "baseline_head": head_body,
        "baseline_replay_from_zero": from_zero,
    }


def bench_blame(room_id: str, samples: int) -> dict[str, Any]:
    from asgiref.sync import async_to_sync
    from django.test import Client

    from rooms.history.authors import author_names
    from rooms.history.blame import blame_body
    from rooms.live import live_rooms

    client = Client()
    body = client.get(f"/rooms/{room_id}/blame").json()
    text = client.get(f"/rooms/{room_id}").json()["code"]
    assert len(body["lines"]) == text.count("\n") + 1
    blame = timed(lambda: client.get(f"/rooms/{room_id}/blame"), samples)
    authorship = timed(lambda: client.get(f"/rooms/{room_id}/authorship"), samples)
    head_body = timed(lambda: client.get(f"/rooms/{room_id}"), samples)
    live = async_to_sync(live_rooms.acquire)(room_id)
    try:
        names = author_names(room_id=room_id)
        memory = timed(
            lambda: blame_body(
                text=live.text, authorship=live.authorship, version=live.version, names=names
            ),
            samples,
        )
    finally:
        live_rooms.release(live)
    return {
        "lines": len(body["lines"]),
        "changes": body["version"],
        "ours_blame": blame,
        "ours_authorship": authorship,
        "ours_blame_in_memory": memory,
        "baseline_head": head_body,
    }


def bench_per_edit(room_id: str, edits: int) -> dict[str, Any]:
    """Keystrokes into the long room's text: what authorship adds to what a live room already
    does with the text per edit."""
    from rooms import ot
    from rooms.history.past import past_at
    from rooms.models import Room

    head = Room.objects.values_list("version", flat=True).get(id=room_id)
    past = past_at(room_id=room_id, version=head, authorship=True)
    rng = random.Random(5)
    steps, text, cursor = [], past.text, len(past.text) // 2
    for _ in range(edits):
        if rng.random() < 0.05:
            cursor = rng.randint(0, len(text))
        op = [cursor, "k"] if cursor else ["k"]
        steps.append((text, op, rng.choice(AUTHORS)))
        text = ot.apply(text, op)
        cursor += 1
    authorship = past.authorship

    def with_authorship() -> float:
        started = time.perf_counter()
        for number, (before, op, author) in enumerate(steps, start=head + 1):
            authorship.apply(before, op, author=author, version=number, ts=number)
        return time.perf_counter() - started

    def text_only() -> float:
        started = time.perf_counter()
        for before, op, _ in steps:
            ot.invert(before, op)
            ot.apply(before, op)
        return time.perf_counter() - started

    spent = with_authorship()
    baseline = min(text_only() for _ in range(3))
    return {
        "edits": edits,
        "text_code_points": len(past.text),
        "runs": sum(1 for _ in authorship.runs()),
        "authorship_us_per_edit": round(spent / edits * 1e6, 2),
        "baseline_text_apply_invert_us_per_edit": round(baseline / edits * 1e6, 2),
    }


# -- running ---------------------------------------------------------------------------------


def database(postgres: str | None, workdir: Path) -> tuple[str, Any]:
    """DATABASE_URL of a fresh database, and how to drop it afterwards."""
    if postgres is None:
        return f"sqlite:///{workdir / 'history.sqlite3'}", lambda: None
    import psycopg

    name = f"bench_history_{os.getpid()}"
    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{postgres}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{postgres}/{name}", drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller rooms (smoke check)")
    parser.add_argument("--postgres", help="a PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()
    changes, lines, edits = (10_000, 2_000, 500) if args.quick else (100_000, 10_000, 3_000)
    samples = 30 if args.quick else 200

    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    url, drop = database(args.postgres, workdir)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collabsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from rooms import document

    setup_test_environment()  # the test client's host name is allowed
    started = time.monotonic()
    try:
        call_command("migrate", verbosity=0)
        rng = random.Random(17)
        long_room = document.room_create(code="")
        built = time.monotonic()
        asyncio.run(typed_history(long_room.id, changes, rng))
        long_built_s = time.monotonic() - built
        file_room = document.room_create(code="")
        asyncio.run(long_file(file_room.id, lines, edits, rng))
        results = {
            "benchmark": "history",
            "database": "postgresql" if args.postgres else "sqlite",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average": os.getloadavg(),
            },
            "build": {"changes": changes, "seconds": round(long_built_s, 1)},
            "text_at": bench_text_at(long_room.id, changes, samples, rng),
            "blame": bench_blame(file_room.id, max(10, samples // 4)),
            "per_edit": bench_per_edit(long_room.id, 5_000),
        }
        results["machine"]["load_average_after"] = os.getloadavg()
        results["elapsed_s"] = round(time.monotonic() - started, 1)
    finally:
        drop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results))
    print()
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    text_at, blame, edit = results["text_at"], results["blame"], results["per_edit"]
    rows = [
        ("text at a version", "ours: GET /rooms/<id>?version=V", text_at["ours_version"]),
        ("text at a version", "ours: GET /rooms/<id>?at=T", text_at["ours_at_time"]),
        ("text at a version", "baseline: GET /rooms/<id> (head)", text_at["baseline_head"]),
        (
            "text at a version",
            "baseline: replay from version 0",
            text_at["baseline_replay_from_zero"],
        ),
        ("blame", "ours: GET /rooms/<id>/blame", blame["ours_blame"]),
        ("blame", "ours: GET /rooms/<id>/authorship", blame["ours_authorship"]),
        ("blame", "ours: blame from a live room's memory", blame["ours_blame_in_memory"]),
        ("blame", "baseline: GET /rooms/<id> (head)", blame["baseline_head"]),
    ]
    out = [
        f"{results['database']}; text-at room: {text_at['changes']:,} changes, "
        f"{text_at['text_code_points']:,} code points; blame file: {blame['lines']:,} lines, "
        f"{blame['changes']:,} changes",
        "",
        "| what | variant | n | p50 | p99 |",
        "|---|---|---:|---:|---:|",
    ]
    for what, variant, figures in rows:
        out.append(
            f"| {what} | {variant} | {figures['n']} | {figures['p50_ms']:.2f} ms "
            f"| {figures['p99_ms']:.2f} ms |"
        )
    out += [
        "",
        f"authorship per edit: {edit['authorship_us_per_edit']} µs "
        f"(baseline, the text's own apply + invert: "
        f"{edit['baseline_text_apply_invert_us_per_edit']} µs; {edit['runs']:,} runs, "
        f"{edit['text_code_points']:,} code points)",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
