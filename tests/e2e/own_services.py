"""Redis and PostgreSQL instances of a test's own, on ports of their own, for tests that stop
and restart them (outages). The machine's shared services (6379, 5432) are never touched.

Both need the servers' binaries (`redis-server`; PostgreSQL's `initdb`, `pg_ctl`). Without them
the tests that use these are skipped locally and failed under CI=true, like the other services.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.server import free_port
from tests.e2e.services import _connect, service_unavailable

START_TIMEOUT_S = 30


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        service_unavailable(f"`{name}` is not installed: the outage tests start their own")
    return path


class OwnRedis:
    """A redis-server on a free port, without persistence; stop() and start() again keep the
    port, as a Redis restart does."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        self.process = subprocess.Popen(
            [
                _binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        # Ready when it says so (bounded by the process's own output: it exits on failure).
        for line in self.process.stdout:
            if "Ready to accept connections" in line:
                return self
        raise AssertionError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=START_TIMEOUT_S)
            self.process = None


class OwnPostgres:
    """A PostgreSQL cluster on a free port (trust authentication), run as the `postgres` system
    user when the tests run as root (PostgreSQL refuses to run as root). Its folder is a fresh
    one in the system's temporary folder, which that user can reach (pytest's are private)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="collab-own-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.database = "collab"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *command],
            check=True,
            timeout=START_TIMEOUT_S,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def create(self) -> OwnPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        self.start()
        with _connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-w", "start")

    def stop(self) -> None:
        # immediate: as if it crashed; its clients' connections are cut.
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
