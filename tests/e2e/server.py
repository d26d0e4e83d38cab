"""Start the real server in a subprocess, as a user would: daphne through `manage.py runserver`
(LiveServer) or uvicorn through `manage.py serve` (ServeProcess).

Used by the end-to-end tests, the JavaScript client tests and the benchmarks. Readiness is read
from the server's own log line, never guessed with a sleep; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Listening on TCP address"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_gracefully(process: subprocess.Popen) -> None:
    """SIGTERM, as a service manager would; SIGKILL if it does not stop in time."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def project_copy(folder: Path) -> Path:
    """The server's code copied into `folder`, as a fresh clone would have it (no .env, no key
    file, no database): for tests of what a process finds, or makes, in its project folder."""
    for package in ("collabsite", "rooms", "autocomplete"):
        shutil.copytree(
            PROJECT_ROOT / package,
            folder / package,
            ignore=shutil.ignore_patterns("__pycache__", "node_modules"),
        )
    shutil.copy2(PROJECT_ROOT / "manage.py", folder / "manage.py")
    return folder


def migrate(env: dict[str, str], project_root: Path = PROJECT_ROOT) -> None:
    """Create or update the database `env` points the server at."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=project_root,
        env=env,
        check=True,
        timeout=120,
    )


class Addresses:
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class LiveServer(Addresses):
    """One server process on 127.0.0.1, restartable on the same database."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        project_root: Path = PROJECT_ROOT,
    ) -> None:
        self.project_root = project_root
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.data_dir / 'db.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    def migrate(self) -> None:
        migrate(self.env, self.project_root)

    @property
    def pid(self) -> int:
        """The process that serves (runserver --noreload serves in its own process)."""
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def start(self) -> LiveServer:
        self.migrate()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=self.project_root,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process, self._lines), daemon=True).start()
        self._wait_ready()
        return self

    def _pump(self, process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.log.append(line)
            lines.put(line)
        lines.put(None)

    def _wait_ready(self) -> None:
        while True:
            try:
                line = self._lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError("server did not start in time:\n" + "".join(self.log)) from None
            if line is None:
                raise RuntimeError("server exited while starting:\n" + "".join(self.log))
            if READY_LINE in line:
                return

    def wait_for_line(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The next line the server writes (after those an earlier call took) that matches
        `pattern`: its output arrives through a pipe, some time after the request it concerns."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(
                    f"the server wrote no line matching {pattern!r} within {timeout} s:\n"
                    + "".join(self.log[-40:])
                ) from None
            if line is None:
                raise AssertionError("the server exited:\n" + "".join(self.log[-40:]))
            if match := re.search(pattern, line):
                return match

    def stop(self) -> None:
        """Graceful stop (SIGTERM, as a service manager would)."""
        if self.process is None:
            return
        stop_gracefully(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up or flush anything."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None

    def restart(self) -> LiveServer:
        self.stop()
        self.port = free_port()
        return self.start()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


WORKER_STARTED = re.compile(r"Started server process \[(\d+)\]")
# With several workers, the parent's line for each worker slot that is ready (at start, and
# when the standby takes a dead worker's slot): rooms/workers.py.
WORKER_READY = re.compile(r"serve: worker (\d+) \[(\d+)\] ready")
STANDBY_READY = re.compile(r"serve: standby \[(\d+)\] ready")


class ServeProcess(Addresses):
    """`manage.py serve` in a subprocess; readiness from its log lines: uvicorn's own with one
    worker, the routing parent's with several (`worker_pids[slot]` is each slot's worker)."""

    def __init__(
        self, env: dict[str, str], workers: int, args: tuple[str, ...] = (), standby: int = 1
    ) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.workers = workers
        self.standby = standby if workers > 1 else 0
        self.args = (*args, "--standby", str(standby)) if standby != 1 else args
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.worker_pids: list[int] = []

    def start(self) -> ServeProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve",
                "--workers",
                str(self.workers),
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=PROJECT_ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers in a process group of their own
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_ready(self, timeout: float = 60) -> None:
        """Every worker is ready (uvicorn's "Started server process [pid]" with one worker; the
        parent's "worker N [pid] ready" and "standby [pid] ready" lines with several), then one
        HTTP request answers. A worker that dies while starting fails."""
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        slots: dict[int, int] = {}
        standbys: set[int] = set()
        try:
            while len(self.worker_pids) < self.workers or len(standbys) < self.standby:
                try:
                    line = self.lines.get(timeout=1)
                except queue.Empty:
                    if deadline.is_set():
                        raise AssertionError(self.failure("no workers ready in time")) from None
                    continue
                if line is None:
                    raise AssertionError(self.failure("serve exited while starting"))
                if "died" in line or "Traceback" in line:
                    raise AssertionError(self.failure("a worker failed while starting"))
                if self.workers == 1 and (match := WORKER_STARTED.search(line)):
                    self.worker_pids.append(int(match.group(1)))
                if self.workers > 1 and (match := WORKER_READY.search(line)):
                    slots[int(match.group(1))] = int(match.group(2))
                    if len(slots) == self.workers:
                        self.worker_pids = [slots[slot] for slot in range(self.workers)]
                if self.workers > 1 and (match := STANDBY_READY.search(line)):
                    standbys.add(int(match.group(1)))
        finally:
            timer.cancel()
        # Confirm over HTTP: a bounded loop of short requests (no event exists for "serving").
        for _ in range(20):
            try:
                if httpx.get(f"{self.http_url}/rooms/create", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        raise AssertionError(self.failure("workers started but GET /rooms/create never answered"))

    def wait_for_line(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """The next line written (after those an earlier wait took) that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(
                    self.failure(f"no line matching {pattern!r} within {timeout} s")
                ) from None
            if line is None:
                raise AssertionError(self.failure("serve exited"))
            if match := re.search(pattern, line):
                return match

    @property
    def pid(self) -> int:
        """The worker process that serves (with one worker)."""
        assert len(self.worker_pids) == 1, f"{len(self.worker_pids)} workers: which one?"
        return self.worker_pids[0]

    def failure(self, what: str) -> str:
        return f"manage.py serve --workers {self.workers}: {what}. Log:\n" + "".join(self.log[-60:])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # uvicorn's parent stops its workers
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        # Whatever is left of its process group (workers included) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        self.process = None


# The two ways users start the server: daphne through `manage.py runserver`, uvicorn through
# `manage.py serve`. Tests of transport behaviour run under both.
LAUNCHERS = ("runserver", "serve")


@contextlib.contextmanager
def launched(
    launcher: str, data_dir: Path, env: dict[str, str] | None = None
) -> Iterator[LiveServer | ServeProcess]:
    """A server of its own (SQLite in `data_dir`) under `launcher`, stopped on exit."""
    if launcher == "runserver":
        with LiveServer(data_dir, env=env) as server:
            yield server
        return
    assert launcher == "serve", launcher
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    process = ServeProcess(
        {"DATABASE_URL": f"sqlite:///{Path(data_dir) / 'db.sqlite3'}", **(env or {})}, workers=1
    )
    migrate(process.env)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
