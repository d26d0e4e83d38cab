"""Write our sections of docs/benchmarks.md from a results file, leaving every other section
(e.g. `## Autocomplete`, owned by another team) exactly as it is.

    python -m bench.docs [bench/results/latest.json]

Sections written: `## Method`, `## Results`, `## Profile` (when the run measured the targets).
A `### Findings` subsection under `## Profile` is hand-written analysis: it is kept across
rewrites. `## Scale-out` is hand-written too; only its tables, between the markers
`<!-- scale-table:begin -->` and `<!-- scale-table:end -->`, are rewritten from a run that has
the `scale` scenario (a new section with just the tables is added when there is none).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from bench import report

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOC = PROJECT_ROOT / "docs" / "benchmarks.md"
OURS = ("Method", "Results", "Profile")
FINDINGS = "### Findings"


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(title, body including its heading line)]) on `## ` headings."""
    preamble = ""
    sections = []
    for part in re.split(r"(?m)^(?=## )", text):
        if part.startswith("## "):
            sections.append((part.splitlines()[0][3:].strip(), part))
        else:
            preamble += part
    return preamble, sections


def method(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    g = results["generator"]
    code = results.get("code", {})
    dirty = (
        f", with uncommitted changes in {len(code.get('uncommitted', []))} server files"
        if code.get("uncommitted")
        else ""
    )
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    uvicorn_cmd = results.get("commands", {}).get("uvicorn") or "manage.py serve --workers 1"
    big = s.get("storm_big_clients")
    storms = f"{s.get('storm_clients')}" + (f" and {big}" if big else "")
    return f"""## Method

Measured {results["date"]} ({results["mode"]} run, {results["elapsed_s"]:.0f} s) on the project
machine: {m["cores"]} cores / {m["memory_gib"]:.0f} GiB ({m["cpu_model"] or "unknown CPU"}), Linux
{m["kernel"]}, Python {m["python"]}; {pkgs}. Server code: commit {code.get("commit", "?")}{dirty}.

Run everything with one command from the project root (venv active):

```
python -m bench --quick        # short windows: floor, prototype, daphne; no profile, no scale
python -m bench --write-docs   # full run: floor, asgi-floor, prototype, daphne, uvicorn,
                               # py-spy profiles, then scale-out (`--scenarios scale` alone: ~12)
python -m bench --quick --scenarios text --targets floor,prototype,uvicorn,daphne
                               # issue 18 alone: text mode, connect, capacity, storms
python -m bench --quick --targets floor,uvicorn --scenarios rooms_text,connect --ref <commit>
                               # an older commit's server, measured the same way
python bench/plot.py           # re-plot docs/benchmarks-latency.png from bench/results/latest.json
```

`--scenarios` takes scenario names (`pingpong`, `join`, `rooms_text`, `rooms_ops`,
`fanout_ops`, `fanout_text`, `connect`, `storm_text`, `storm_ops`, `storm_text_big`,
`storm_ops_big`, `capacity`, `capacity_text`, `idle`, `scale`) and groups (`rooms`, `fanout`,
`storm`, `capacity`, and `text` = issue 18's scenarios). `--profile` with `--profile-targets`
(default uvicorn,daphne), `--profile-scenarios` (default rooms_text,fanout_text,connect; also
rooms_ops, fanout_ops) and `--profile-seconds` runs py-spy, after the scenarios or alone
(`--scenarios ''`); the raw profiles are in `bench/results/run-<time>/`, and
`python -m bench.profile <raw file>` summarises one again.

Requirements beyond requirements-dev.txt (bench only): `pip install -r bench/requirements.txt`
(psutil, py-spy, matplotlib, FastAPI for the prototype). Results:
`bench/results/bench-<time>.json` (gitignored) and the plot `docs/benchmarks-latency.png`.

- **Servers**, one at a time, each a subprocess on 127.0.0.1 with a fresh SQLite database:
  the *floor* (`bench/floor_server.py`: bare `websockets` {m["packages"].get("websockets", "")}, no
  database, no OT, relays ops and full texts, same message shapes); *asgi-floor*
  (`bench/asgi_floor.py`: the floor's relay as a bare ASGI app, served by uvicorn exactly as
  `manage.py serve` serves ours: what uvicorn's WebSocket path costs with no application work;
  its rows in the targets table read "could any app on uvicorn meet this"); *prototype*
  (`bench/prototype_server.py`: the FastAPI prototype's behaviour, the second baseline: FastAPI
  on uvicorn with uvicorn's defaults, rooms in memory, text mode only; `sync_code` replaces the
  room's text and is relayed to the room's other sockets as `sync_code` with `code`, `version`
  and `user`, with no ack, no persistence, no diff and no limits; `init`, join and leave
  notices, `ping`; `GET /rooms/create` and `POST /rooms`); *daphne* = our server as users
  start it (`manage.py runserver --noreload` through `tests/e2e/server.py`'s LiveServer);
  *uvicorn* = the same ASGI app under uvicorn, started as `{uvicorn_cmd}` (uvloop, httptools,
  websockets-sansio). The rate limiter is raised (`COLLAB_RATE_BURST`,
  `COLLAB_RATE_PER_S`) so it is never what is measured. Clients negotiate no compression.
- **Load generator**: {g["workers"]} worker processes (multiprocessing, spawned) running
  asyncio `websockets` clients{" on uvloop" if g["uvloop"] else ""}; each reports its own CPU over
  the measured window (`generator cores`), and each window also records the CPU used by the
  rest of the machine (`other_cores`: the machine is shared with other work). Edits are sent
  open-loop on a fixed schedule. **Latency is measured on one clock**: each edit carries
  `t=<time.monotonic_ns()>` in its text (the inserted string in ops mode, the code's first
  line in text mode); CLOCK_MONOTONIC is system-wide on Linux, so the receiving process
  subtracts it from its own clock. Missing = edits sent minus distinct edits received by each
  other member of the room, after a drain of up to {s["drain_s"]:g} s (ended by 1 s of quiet).
- **Server CPU**: user+system time of the server process tree (psutil) sampled at the
  window's edges; CPU per edit divides by the acks that arrived inside the window (the work
  actually done, also under overload); CPU per delivered message divides by the deliveries
  inside the window. The prototype sends no ack, so for it an edit is done when it reaches the
  room's other members: CPU per edit divides by the deliveries in the window / (users per room
  - 1) (in the rooms scenarios, the other member's deliveries), capacity counts the same, and
  fan-out latency is, as for every server, from the send to the other member's receipt. Each
  scenario (and each capacity step) runs on a fresh server process, started once it is quiet
  (our server warms Jedi up at start).
- **Scenarios** ({"quick" if s["quick"] else "full"} settings): `pingpong` {s["pings"]}
  sequential pings; `rooms_ops` {s["rooms"]} rooms x 2 users x {s["rooms_rate"]:g} edits/s
  each (= {s["rooms"] * 2 * s["rooms_rate"]:g} edits/s), inserts; `rooms_text`
  {s.get("text_rooms")} rooms x 2 users x {s["rooms_rate"]:g} edits/s each
  (= {s.get("text_rooms", 0) * 2 * s["rooms_rate"]:g} edits/s), rooms holding a
  {s["text_doc_bytes"]} B document, every edit a full-text `sync_code`; both {s["rooms_s"]:g} s
  windows after {s["rooms_warm_s"]:g} s warm-up; `fanout_ops` 1 room x {s["fanout_users"]}
  users and `fanout_text` 1 room x {s.get("fanout_text_users")} users ({s["text_doc_bytes"]} B
  document), one writer at {s["fanout_rate"]:g} edits/s, {s["fanout_s"]:g} s; `idle`
  {s["idle_conns"]} connections in rooms of {s["idle_room_size"]}, RSS delta per connection and
  CPU over {s["idle_s"]:g} s; `capacity` ops mode, {s["rooms"]} rooms x 2 users, and
  `capacity_text`, `rooms_text`'s shape, total rate from {s["cap_start"]:g} edits/s
  x{s["cap_factor"]:g} per step ({s["cap_s"]:g} s windows) until p99 fan-out >
  {s["cap_p99_ms"]:g} ms or a delivery is missing, then {s["cap_refine"]} bisection steps;
  projected capacity at one core = committed edits/s / server cores at the highest rate
  held; `join` {s["joins"]} sequential connect-to-`init` times for a room holding
  {s["join_bytes"] // 1024} KB of code, with another user connected (room live in memory) and
  with nobody (room loaded from the database).
- **Connection set-up** (`connect`): {s.get("connect_count")} connections opened open-loop at
  {s.get("connect_rate", 0):g}/s (connection i starts at t0 + i / rate whether or not the
  earlier ones are done), each with the `Origin` a browser on the server's page sends, into
  rooms of {s.get("connect_room_size")} holding a {s["text_doc_bytes"]} B document that are not
  live yet (connection i goes to room i mod rooms, so the first user of each room loads it from
  the database). Server CPU from t0 until {s.get("connect_tail_s", 0):g} s after the last `init`
  arrived, divided by the connections: handshake, origin check, routing, room load, presence,
  `init` and the join notices it sets off.
- **Reconnect storm** (`storm_text`, `storm_ops`; {storms} clients): rooms of
  {s.get("storm_room_size")} holding a {s["text_doc_bytes"]} B document, {s.get("storm_writers")}
  writers per room typing {s.get("storm_rate", 0):g} edits/s. After
  {s.get("storm_warm_s", 0):g} s every connection is aborted at the same instant (no close
  frame: a network blip or a proxy restart as the server sees it), and every client comes back
  at once ({s.get("storm_concurrency")} handshakes in flight per generator worker, up to 5
  attempts each): ops clients resume with `version` (the last version they saw) and `client`
  (their stable id) and send what is not acked, the op in flight at the drop (same seq) and
  what they typed while away; text clients type nothing while away and reconnect. Until the
  last is back, what is typed waits (ops clients queue it), so no live typing falls in the
  storm's window. Reported: the time from the drop until the last client has its `init`, and
  the server's CPU from the drop until {s.get("storm_tail_s", 0):g} s after that, per client
  (disconnects, handshakes, room loads, resumes, `init`, join notices, the ops sent on resume).
  Then the queued edits go out, typing goes on for {s.get("storm_after_s", 0):g} s, and the
  check that nothing was missed: every receiver has every edit of its room's other writers
  (ops: all of them, live or in the resumed `init`; text: those sent more than
  {s.get("storm_margin_s", 0):g} s before the drop and those sent after its own `init` came
  back, since a text client gets the text in between whole in `init`), every edit is acked, no
  `init` went back in time, everyone came back. The floor keeps no history: its ops clients
  miss what was committed while they were away, which is what resuming is for.
- **Targets** (issue 8), as ratios to the floor of the same run: fanout CPU per delivered
  message <= 1.8x; rooms fan-out p50 <= 1.5x and 0 missing; projected capacity >= 0.75x; RSS per
  idle connection <= 1.5x; idle CPU with 2,000 connections ~0
  (<= {report.IDLE_CPU_MAX_CORES} cores); join of 100 KB p50 <= 10 ms.
- **Targets** (issue 18, text mode), as ratios to the floor of the same run, for `manage.py
  serve`: `rooms_text` CPU per edit <= 1.8x and fan-out p50 <= 1.5x; `fanout_text` CPU per
  delivered message <= 1.8x; `connect` CPU per connection <= 2x; below the prototype on each
  of those rows; `capacity_text` at least the ratio ops mode's `capacity` reaches in the same
  run. daphne (`runserver`): <= 2.5x on the same rows (capacity >= 1 / 2.5 = 0.4x). Every
  server: nothing missed after a storm.
"""


def results_section(results: dict[str, Any]) -> str:
    header, rows = report.comparison_rows(results)
    cheader, crows = report.check_rows(results)
    theader, trows = report.text_rows(results)
    text = ""
    if trows:
        text = f"""
### Text mode, connection set-up, storms (issue 18)

Ratios to the floor and to the prototype of the same run.

{report.md_table(theader, trows)}

{report.md_table(*report.text_check_rows(results))}
"""
    caps = []
    for name, scen in results["targets"].items():
        cap = scen.get("capacity") or {}
        if "stop_reason" in cap:
            caps.append(f"- {name}: {cap['stop_reason']}")
    return f"""## Results

{results["date"][:10]}, {results["mode"]} run. Ratios are ours / floor in the same run (lower is
better for times, CPU and memory; higher is better for rates).

{report.md_table(header, rows)}

### Targets

{report.md_table(cheader, crows)}
{text}
### Measurement health

{report.md_table(*report.health_rows(results))}

### Capacity steps

{chr(10).join(caps)}

![fan-out latency against offered load](benchmarks-latency.png)
"""


def profile_section(results: dict[str, Any], findings: str) -> str:
    parts = ["## Profile", ""]
    profiles = results.get("profiles") or {}
    if not profiles:
        parts.append("No profile in this run (`python -m bench --profile`).")
    for server, runs in profiles.items():
        for scenario, summary in runs.items():
            parts.append(f"### {server}, {scenario}")
            parts.append("")
            if "error" in summary:
                parts.append(f"py-spy failed: `{summary['error'][-200:]}`")
                parts.append("")
                continue
            parts.append(
                f"py-spy, {summary['duration_s']:g} s at {summary['rate_hz']} Hz: "
                f"{summary['samples']} busy samples (~{summary['busy_threads_avg']} busy threads; "
                f"{summary.get('idle_samples_dropped', 0)} idle-wait samples dropped). Threads: "
                + ", ".join(f"{k} {v:.0%}" for k, v in summary["threads"].items())
                + ". By component of the leaf frame: "
                + ", ".join(f"{k} {v:.0%}" for k, v in list(summary["components"].items())[:7])
                + "."
            )
            parts.append("")
            parts.append("| # | self time | frame | total time | frame |")
            parts.append("|---:|---:|---|---:|---|")
            for i in range(max(len(summary["self_top"]), len(summary["total_top"]))):
                a = (
                    summary["self_top"][i]
                    if i < len(summary["self_top"])
                    else {"share": None, "frame": ""}
                )
                b = (
                    summary["total_top"][i]
                    if i < len(summary["total_top"])
                    else {"share": None, "frame": ""}
                )
                fa = f"{a['share']:.1%}" if a["share"] is not None else ""
                fb = f"{b['share']:.1%}" if b["share"] is not None else ""
                parts.append(f"| {i + 1} | {fa} | `{a['frame']}` | {fb} | `{b['frame']}` |")
            parts.append("")
    if findings:
        parts.append(findings.rstrip() + "\n")
    return "\n".join(parts).rstrip() + "\n"


SCALE = "Scale-out"
SCALE_BEGIN = "<!-- scale-table:begin -->"
SCALE_END = "<!-- scale-table:end -->"


def scale_tables(results: dict[str, Any]) -> str:
    """The generated part of `## Scale-out`: both tables, with the run's date and load."""
    scale = results.get("scale") or {}
    loads = [str(c.get("loadavg_at_start", ["?"])[0]) for c in scale.get("configs", {}).values()]
    settings = results["settings"]
    command = (
        "`python -m bench` (all scenarios, this one last)"
        if results.get("targets")
        else "`python -m bench --scenarios scale`"
    )
    took = sum(c.get("elapsed_s", 0) for c in scale.get("configs", {}).values())
    paragraphs = [
        f"{results['date'][:16].replace('T', ' ')} UTC, {command}, {results['mode']} settings; "
        f"the scale part took {took:.0f} s. Load average (1 min) when each configuration "
        f"started: {', '.join(loads)}.",
        f"Fixed load: {settings.get('scale_rooms')} rooms x 2 users, ops mode, "
        f"{settings.get('scale_rate'):g} edits/s offered in all, {settings.get('scale_s'):g} s "
        "window (`*`: did not hold).",
        report.md_table(*report.scale_rows(results)),
        "The same load in text mode (each edit carries the whole text; `*`: did not hold):",
        report.md_table(*report.scale_text_rows(results)),
        "Issue 15's targets, against this run (ratios within the one run):",
        report.md_table(*report.scale_target_rows(results)),
        f"Step-up: the highest fixed rate held (p99 fan-out <= {settings.get('cap_p99_ms'):g} ms, "
        f"nothing missing), {settings.get('scale_step_s'):g} s windows.",
        report.md_table(*report.scale_held_rows(results)),
        f"One room, {settings.get('scale_hammer_users')} writers, "
        f"{settings.get('scale_hammer_rate'):g} edits/s in all (Poisson arrivals), "
        f"{settings.get('scale_hammer_s'):g} s window (sequencing retries):",
        report.md_table(*report.scale_retry_rows(results)),
    ]
    text = "\n\n".join(
        p if p.startswith("|") else textwrap.fill(p, width=96, break_on_hyphens=False)
        for p in paragraphs
    )
    return f"{SCALE_BEGIN}\n{text}\n{SCALE_END}"


def _scale_section(old: str | None, results: dict[str, Any]) -> str:
    tables = scale_tables(results)
    if old and SCALE_BEGIN in old and SCALE_END in old:
        head, rest = old.split(SCALE_BEGIN, 1)
        tail = rest.split(SCALE_END, 1)[1]
        return head + tables + tail
    return f"## {SCALE}\n\n{tables}\n"


def write(results: dict[str, Any], path: Path = DOC) -> list[str]:
    """Rewrite our sections from `results`; returns the titles written."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    preamble, sections = split_sections(text)
    if not preamble.strip():
        preamble = "# Benchmarks\n\n"
    existing = dict(sections)
    findings = ""
    old_profile = existing.get("Profile", "")
    if FINDINGS in old_profile:
        findings = old_profile[old_profile.index(FINDINGS) :]
    new = {}
    if results.get("targets"):
        new.update(
            {
                "Method": method(results),
                "Results": results_section(results),
                "Profile": profile_section(results, findings),
            }
        )
    if (results.get("scale") or {}).get("configs"):
        new[SCALE] = _scale_section(existing.get(SCALE), results)
    out_sections = []
    seen = set()
    for title, body in sections:
        if title in new:
            out_sections.append(new[title].rstrip() + "\n\n")
            seen.add(title)
        else:
            out_sections.append(body if body.endswith("\n\n") else body.rstrip("\n") + "\n\n")
    for title in [*OURS, SCALE]:
        if title in new and title not in seen:
            out_sections.append(new[title].rstrip() + "\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((preamble.rstrip("\n") + "\n\n" + "".join(out_sections)).rstrip("\n") + "\n")
    return list(new)


if __name__ == "__main__":
    source = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else PROJECT_ROOT / "bench" / "results" / "latest.json"
    )
    write(json.loads(source.read_text()))
    print(DOC)
