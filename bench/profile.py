"""Sample the server with py-spy while a scenario runs, and summarise where its time goes.

`py-spy record --pid <server> -d <s> -f raw` writes collapsed stacks ("frame;frame;... count",
frames as "function (file:line)"). Idle threads are not sampled, so the samples are CPU-ish time.
The summary gives the top frames by self time (the leaf) and by total time (anywhere in the
stack, once per sample), aggregated per function (line numbers dropped), the split between the
event-loop thread and the database/executor threads, and a coarse split by component.

Run alone on a raw file: `python -m bench.profile /tmp/x.txt`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# First match wins; checked against "file function".
COMPONENTS = [
    ("database (sqlite3 / Django ORM)", ("sqlite3/", "django/db/", "dbapi2", "sqlite3 ")),
    ("Channels layer / consumer plumbing", ("channels/",)),
    ("asgiref sync_to_async / threads", ("asgiref/", "concurrent/futures", "threading.py")),
    (
        "WebSocket protocol (autobahn/websockets/wsproto)",
        ("autobahn/", "websockets/", "wsproto/", "txaio/"),
    ),
    ("Twisted / daphne", ("twisted/", "daphne/")),
    ("uvicorn", ("uvicorn/",)),
    ("JSON", ("json/",)),
    ("OT (rooms/ot.py)", ("rooms/ot.py",)),
    ("rooms app (document/consumers/presence)", ("rooms/",)),
    ("Django (other)", ("django/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py", "uvloop")),
    ("logging", ("logging/",)),
]


# Frames under which everything runs (entry points, the loop's dispatch, thread bootstraps):
# left out of the total-time ranking, where they would only say "100%".
PLUMBING = (
    "manage.py",
    "django/core/management/",
    "daphne/management/",
    "daphne/server.py",
    "daphne/cli.py",
    "twisted/internet/asyncioreactor.py",
    "twisted/internet/base.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "asyncio/runners.py",
    "threading.py",
    "concurrent/futures/thread.py",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "click/",
    "<module>",
    "runpy.py",
    "rooms/management/commands/runserver.py",
    "rooms/management/commands/serve.py",
    "uvicorn/middleware/",
    # Twisted's dispatch wrappers around every reactor callback.
    "twisted/python/log.py",
    "twisted/python/context.py",
    "uvicorn/protocols/",
    # Channels' routing wrappers: every consumer call runs under all of them.
    "channels/routing.py",
    "channels/security/",
    "channels/utils.py",
    "AsyncConsumer.__call__ (channels/consumer.py)",
    "AsyncConsumer.as_asgi.<locals>.app (channels/consumer.py)",
    "rooms/origin.py",
    # The thread hop of sync_to_async: the executor-thread share is reported apart.
    "SyncToAsync.thread_handler (asgiref/sync.py)",
    "DatabaseSyncToAsync.thread_handler (channels/db.py)",
    "SyncToAsync.__call__.<locals>.func",
    "_WorkItem.run (concurrent/futures/thread.py)",
)


# Leaf frames that are a thread waiting, not working. py-spy's idle detection misses threads
# blocked on a lock or a futex (the executor's queue.get, a pipe readline), so these samples are
# dropped before ranking (and counted apart).
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py:81)",  # executor thread waiting for work
    "select (selectors.py",  # the event loop waiting in epoll
    "EpollSelector.select (selectors.py",
    "_enqueue_output (jedi/",  # a reader thread blocked on a pipe
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "_wait_for_tstate_lock (threading.py",
)


def is_idle(leaf: str) -> bool:
    return any(leaf.startswith(p) for p in IDLE_LEAVES)


def component_of(frame: str) -> str:
    for name, needles in COMPONENTS:
        if any(needle in frame for needle in needles):
            return name
    return "other"


def strip_line(frame: str) -> str:
    match = FRAME_RE.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({match['file']})"


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise(raw_text: str, rate_hz: int, duration_s: float, top: int = 10) -> dict[str, Any]:
    stacks = parse_raw(raw_text)
    idle = sum(count for frames, count in stacks if is_idle(frames[-1]))
    stacks = [(frames, count) for frames, count in stacks if not is_idle(frames[-1])]
    total = sum(count for _, count in stacks) or 1
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    components: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        names = [strip_line(f) for f in frames]
        self_time[names[-1]] += count
        for name in set(names):
            if not any(p in name for p in PLUMBING):
                total_time[name] += count
        # The component of a sample: the deepest frame outside the generic plumbing.
        components[component_of(names[-1])] += count
        is_worker = any("concurrent/futures/thread.py" in f or "threading.py" in f for f in frames)
        threads["executor threads (DB, sync_to_async)" if is_worker else "event-loop thread"] += (
            count
        )

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": name, "samples": n, "share": round(n / total, 3)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "rate_hz": rate_hz,
        "duration_s": duration_s,
        # A sample is one busy thread at one instant: samples / (rate * duration) ~ busy cores.
        "busy_threads_avg": round(total / max(1, rate_hz * duration_s), 3),
        "threads": {k: round(v / total, 3) for k, v in threads.most_common()},
        "components": {k: round(v / total, 3) for k, v in components.most_common()},
        "self_top": rows(self_time),
        "total_top": rows(total_time),
    }


class Recorder:
    """py-spy record on a pid for `duration_s`, started now, summarised by `finish()`."""

    def __init__(self, pid: int, out_path: Path, duration_s: float, rate_hz: int = 100) -> None:
        self.out_path = Path(out_path)
        self.duration_s = duration_s
        self.rate_hz = rate_hz
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.process = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "-d",
                str(int(duration_s)),
                "-r",
                str(rate_hz),
                "-f",
                "raw",
                "-o",
                str(self.out_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self, top: int = 10) -> dict[str, Any]:
        try:
            output, _ = self.process.communicate(timeout=self.duration_s + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate(timeout=10)
        if self.process.returncode != 0 or not self.out_path.exists():
            return {"error": f"py-spy exited {self.process.returncode}: {output[-500:]}"}
        summary = summarise(self.out_path.read_text(), self.rate_hz, self.duration_s, top)
        summary["raw_file"] = str(self.out_path)
        return summary


def py_spy_available() -> bool:
    return bool(shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists())


def format_summary(title: str, summary: dict[str, Any]) -> str:
    if "error" in summary:
        return f"{title}: {summary['error']}"
    lines = [
        f"{title}: {summary['samples']} busy samples "
        f"({summary.get('idle_samples_dropped', 0)} idle dropped), "
        f"~{summary['busy_threads_avg']} busy threads",
        "  threads: " + ", ".join(f"{k} {v:.0%}" for k, v in summary["threads"].items()),
        "  components (by leaf frame): "
        + ", ".join(f"{k} {v:.0%}" for k, v in list(summary["components"].items())[:8]),
        "  top self time:",
        *(f"    {row['share']:6.1%}  {row['frame']}" for row in summary["self_top"]),
        "  top total time:",
        *(f"    {row['share']:6.1%}  {row['frame']}" for row in summary["total_top"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1])
    print(format_summary(path.name, summarise(path.read_text(), 100, 1)))
