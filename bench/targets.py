"""The servers under test, each started as a subprocess on 127.0.0.1 with its own data.

- `floor`: bench/floor_server.py, the bare-websockets baseline.
- `prototype`: bench/prototype_server.py, the FastAPI prototype's behaviour (text mode only,
  no ack): the second baseline.
- `daphne`: our server as users start it, `manage.py runserver --noreload` (daphne), through the
  e2e harness `tests.e2e.server.LiveServer` (readiness from its log line, own SQLite DB).
- `uvicorn`: the same ASGI app under `uvicorn collabsite.asgi:application` (uvloop + httptools +
  websockets-sansio when installed), same settings, own SQLite DB.

Every target gives the same three things to the scenarios: `http_url`, `ws_base`, `pid`, and an
async `create_room(code)` that returns a room id.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import connect

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from tests.e2e.server import free_port, stop_gracefully  # noqa: E402

SNAPSHOT_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    "*.pyc",
    "*.sqlite3",
    "*.sqlite3-*",
    ".pytest_cache",
    ".ruff_cache",
    "test-artifacts",
    "results",
    "staticfiles",
)


def snapshot_code(ref: str | None, dest: Path) -> Path:
    """A frozen copy of the server code to run: the working tree as it is now (ref None), or a
    git commit. Other work goes on in the tree; the servers of one run all use this copy."""
    dest = Path(dest)
    if ref is None:
        shutil.copytree(PROJECT_ROOT, dest, ignore=SNAPSHOT_IGNORE)
    else:
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ref],
            cwd=PROJECT_ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest


def load_live_server(code_root: Path):
    """tests/e2e/server.py's LiveServer from the given code tree (its PROJECT_ROOT is that tree)."""
    path = Path(code_root) / "tests" / "e2e" / "server.py"
    spec = importlib.util.spec_from_file_location(f"bench_live_server_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.LiveServer


START_TIMEOUT_S = 60

# The limiter is not what we measure: every edit the bench sends must be served.
RATE_ENV = {"COLLAB_RATE_BURST": "1000000000", "COLLAB_RATE_PER_S": "1000000000"}


def ws_connect(url: str, **kwargs):
    """The one way every bench client connects: no compression (daphne does not negotiate it,
    so all servers are compared on plain frames), no client keepalive pings, bounded waits."""
    return connect(
        url,
        compression=None,
        max_size=8 * 1024 * 1024,
        ping_interval=None,
        open_timeout=30,
        close_timeout=5,
        **kwargs,
    )


class ProcTree:
    """CPU seconds and RSS of a server process and its descendants, sampled with psutil."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.root = psutil.Process(pid)

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> dict[int, float]:
        """{pid: user+system CPU seconds} for the tree (threads included)."""
        out = {}
        for proc in self._procs():
            try:
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return out

    @staticmethod
    def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(value - before.get(pid, 0.0) for pid, value in after.items())

    def rss(self) -> int:
        """RSS of the server process itself (the one holding the connections), bytes."""
        return self.root.memory_info().rss

    def tree_rss(self) -> int:
        total = 0
        for proc in self._procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total


class Target:
    name = "target"
    label = "target"
    ours = True
    # Whether the server acks each edit (every server but the prototype): without acks, an
    # edit counts as done when it reaches the room's other members (see scenarios.run_load).
    acks = True
    modes: tuple[str, ...] = ("text", "ops")
    # Whether room creation may reuse HTTP connections (the floor closes each one).
    http_keepalive = True

    http_url: str
    ws_base: str
    pid: int

    def start(self) -> Target:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> Target:
        """A fresh server process (same data): no state of an earlier scenario carries over."""
        self.stop()
        self.start()
        self.settle()
        return self

    settle_s: float = 0.0

    def settle(
        self, quiet_cores: float = 0.03, interval_s: float = 0.25, max_s: float = 30.0
    ) -> float:
        """Wait until the fresh server is quiet (our server warms Jedi up in a thread at start,
        which would show as latency spikes): CPU under `quiet_cores` over two intervals in a
        row, at most `max_s`. Returns (and keeps) the seconds it took."""
        tree = self.tree()
        started = time.monotonic()
        quiet = 0
        for _ in range(int(max_s / interval_s)):
            before = tree.cpu()
            time.sleep(interval_s)
            cores = tree.cpu_delta(before, tree.cpu()) / interval_s
            quiet = quiet + 1 if cores < quiet_cores else 0
            if quiet >= 2:
                break
        self.settle_s = round(time.monotonic() - started, 2)
        return self.settle_s

    def tree(self) -> ProcTree:
        return ProcTree(self.pid)

    async def create_room(self, code: str = "", client: httpx.AsyncClient | None = None) -> str:
        if client is None:
            async with httpx.AsyncClient(timeout=30) as client:
                return await self.create_room(code, client)
        response = await client.post(f"{self.http_url}/rooms", json={"code": code})
        response.raise_for_status()
        return response.json()["room_id"]

    async def create_rooms(self, count: int, code: str = "", concurrency: int = 8) -> list[str]:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_keepalive_connections=None if self.http_keepalive else 0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def one() -> str:
                async with sem:
                    return await self.create_room(code, client)

            return list(await asyncio.gather(*(one() for _ in range(count))))

    def describe(self) -> str:
        return self.label


class _Subprocess(Target):
    """A server subprocess whose readiness is a line in its output (read by a pump thread)."""

    ready_line = ""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    code_root: Path = PROJECT_ROOT

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=self.code_root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None
            for line in self.process.stdout:  # type: ignore[union-attr]
                if len(self.log) < 20000:  # bounded: thousands of connection log lines
                    self.log.append(line)
                if not ready.is_set():
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.log)) from None
            if line is None:
                raise RuntimeError(f"{self.name} exited while starting:\n" + "".join(self.log))
            if self.ready_line in line:
                break
        ready.set()  # the pump keeps reading the pipe (so the server never blocks on it)
        self.pid = self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        stop_gracefully(self.process)
        self.process = None


class FloorTarget(_Subprocess):
    name = "floor"
    label = "floor (bare websockets)"
    ours = False
    # websockets answers a plain HTTP request and closes the connection.
    http_keepalive = False
    ready_line = "floor listening on"
    script = PROJECT_ROOT / "bench" / "floor_server.py"

    def start(self) -> FloorTarget:
        port = free_port()
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._spawn([sys.executable, str(self.script), "--port", str(port)], env)
        return self

    async def create_room(self, code: str = "", client: httpx.AsyncClient | None = None) -> str:
        if client is None:
            async with httpx.AsyncClient(timeout=30) as client:
                return await self.create_room(code, client)
        response = await client.get(f"{self.http_url}/rooms/create")
        response.raise_for_status()
        room_id = response.json()["room_id"]
        if code:
            # No POST on the floor: the initial text is one sync_code.
            async with ws_connect(f"{self.ws_base}/ws/{room_id}?mode=text") as ws:
                await asyncio.wait_for(ws.recv(), 30)
                await ws.send(json.dumps({"type": "sync_code", "code": code}))
                for _ in range(10):
                    frame = await asyncio.wait_for(ws.recv(), 30)
                    if '"ack"' in frame[:20]:
                        break
        return room_id


class AsgiFloorTarget(FloorTarget):
    """The floor's relay as a bare ASGI app on uvicorn, set up as `manage.py serve` sets up
    ours: what uvicorn's WebSocket path costs with no application work at all."""

    name = "asgi-floor"
    label = "bare ASGI relay on uvicorn (transport ceiling)"
    ready_line = "Uvicorn running on"
    script = PROJECT_ROOT / "bench" / "asgi_floor.py"


class PrototypeTarget(FloorTarget):
    """The FastAPI prototype's behaviour (bench/prototype_server.py) on uvicorn's defaults,
    started like the floor; its rooms are created with `POST /rooms`."""

    name = "prototype"
    label = "FastAPI prototype (text relay, no ack)"
    acks = False
    modes = ("text",)
    http_keepalive = True
    ready_line = "Uvicorn running on"
    script = PROJECT_ROOT / "bench" / "prototype_server.py"
    command = "python bench/prototype_server.py (FastAPI on uvicorn, its defaults)"

    async def create_room(self, code: str = "", client: httpx.AsyncClient | None = None) -> str:
        return await Target.create_room(self, code, client)


class DaphneTarget(Target):
    name = "daphne"
    label = "ours: daphne (manage.py runserver)"

    def __init__(self, data_dir: Path, code_root: Path = PROJECT_ROOT) -> None:
        self.data_dir = data_dir
        self.code_root = Path(code_root)
        self.server = None

    def start(self) -> DaphneTarget:
        if self.server is None:
            live_server = load_live_server(self.code_root)
            self.server = live_server(self.data_dir, env=RATE_ENV)
            self.server.start()
        else:
            self.server.restart()  # same database, new port
        self.http_url = self.server.http_url
        self.ws_base = self.server.ws_base
        self.pid = self.server.process.pid  # type: ignore[union-attr]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def close(self) -> None:
        self.stop()
        self.server = None


class UvicornTarget(_Subprocess):
    name = "uvicorn"
    label = "ours: uvicorn (same ASGI app)"
    command = ""
    ready_line = "Uvicorn running on"

    def __init__(self, data_dir: Path, code_root: Path = PROJECT_ROOT) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.code_root = Path(code_root)

    def start(self) -> UvicornTarget:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.data_dir / 'db.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
            **RATE_ENV,
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=self.code_root,
            env=env,
            check=True,
            timeout=120,
        )
        if (self.code_root / "rooms" / "management" / "commands" / "serve.py").exists():
            # The project's production launcher (uvicorn, 1 worker = in-process).
            args = ["manage.py", "serve", "--workers", "1", "--host", "127.0.0.1"]
            self.command = "manage.py serve --workers 1"
        else:
            args = ["-m", "uvicorn", "collabsite.asgi:application", "--host", "127.0.0.1"]
            args += ["--ws-max-size", "4194304"]
            self.command = "uvicorn collabsite.asgi:application --ws-max-size 4194304"
        self._spawn([sys.executable, *args, "--port", str(port)], env)
        return self


def uvicorn_available() -> bool:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return False
    return True


def fastapi_available() -> bool:
    """The prototype baseline needs FastAPI (bench/requirements.txt) besides uvicorn."""
    try:
        import fastapi  # noqa: F401
    except ImportError:
        return False
    return uvicorn_available()


# -- scale-out (issue 4): `manage.py serve --workers N` on Redis + PostgreSQL -----------------

REDIS_DEFAULT_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DEFAULT_URL = "postgres://postgres@127.0.0.1:5432"
SERVICE_TIMEOUT_S = 3
WORKER_LINE = re.compile(r"Started server process \[(\d+)\]")
# With several workers, the routing parent's line for each slot's worker (rooms/workers.py).
ROUTED_WORKER_LINE = re.compile(r"serve: worker (\d+) \[(\d+)\] ready")
STANDBY_LINE = re.compile(r"serve: standby \[(\d+)\] ready")


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL") or REDIS_DEFAULT_URL


def postgres_server_url() -> str:
    """The PostgreSQL server, without a database name (each run creates its own database)."""
    return (os.environ.get("BENCH_POSTGRES_URL") or POSTGRES_DEFAULT_URL).rstrip("/")


def services_problem() -> str | None:
    """Why the scale-out configurations cannot run (Redis or PostgreSQL unreachable), or None."""
    try:
        import redis

        client = redis.Redis.from_url(
            redis_url(), socket_connect_timeout=SERVICE_TIMEOUT_S, socket_timeout=SERVICE_TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        return f"Redis at {redis_url()}: {type(error).__name__}: {error}"
    try:
        import psycopg

        with psycopg.connect(
            f"{postgres_server_url()}/postgres", connect_timeout=SERVICE_TIMEOUT_S, autocommit=True
        ) as connection:
            connection.execute("SELECT 1")
    except Exception as error:
        return f"PostgreSQL at {postgres_server_url()}: {type(error).__name__}: {error}"
    return None


class PgDatabase:
    """A PostgreSQL database of one bench configuration: created empty, dropped at the end.

    Also the outside view of what the servers did in it: transaction counts from
    `pg_stat_database` (a version conflict rolls its transaction back) and the CPU of the
    backends serving it.
    """

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name

    @property
    def url(self) -> str:
        return f"{self.server_url}/{self.name}"

    def _connect(self, database: str):
        import psycopg

        return psycopg.connect(
            f"{self.server_url}/{database}", connect_timeout=SERVICE_TIMEOUT_S, autocommit=True
        )

    def create(self) -> None:
        with self._connect("postgres") as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with contextlib.suppress(Exception), self._connect("postgres") as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._connect(self.name) as connection:
            return connection.execute(sql, params).fetchall()

    def xacts(self) -> tuple[int, int]:
        """(committed, rolled back) transactions in this database so far. A backend publishes
        its counts at most once a second while busy and up to 10 s late when idle, but always
        when it exits: read this once the servers are stopped (`wait_disconnected`)."""
        with self._connect("postgres") as connection:
            row = connection.execute(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
                (self.name,),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def wait_disconnected(self, max_s: float = 15.0) -> bool:
        """Until no server is connected to this database (a backend publishes its transaction
        counts when it exits, so `xacts()` is then exact). Bounded."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            if not self.backend_pids():
                return True
            time.sleep(0.1)
        return False

    def backend_pids(self) -> list[int]:
        with self._connect("postgres") as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            ).fetchall()
        return [int(pid) for (pid,) in rows]


class PidSet:
    """CPU seconds of a set of processes (PostgreSQL backends, the Redis server): the same
    interface as ProcTree.cpu(), for the services the scaled-out servers lean on. `pids` is
    called on the first sample (backends exist only once the servers have connected)."""

    def __init__(self, pids) -> None:
        self.pids = pids
        self.procs: list[psutil.Process] | None = None

    def cpu(self) -> dict[int, float]:
        if self.procs is None:
            self.procs = []
            with contextlib.suppress(Exception):
                for pid in self.pids():
                    with contextlib.suppress(psutil.Error):
                        self.procs.append(psutil.Process(pid))
        out = {}
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
        return out


def redis_server_pids() -> list[int]:
    """The local redis-server process(es), to read their CPU (shared with other users)."""
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "redis-server" or (
                proc.info["cmdline"] and "redis-server" in proc.info["cmdline"][0]
            ):
                pids.append(proc.pid)
    return pids


class ServeTarget(_Subprocess):
    """`manage.py serve --workers N` (uvicorn; with N > 1 the routing parent, N workers and a
    standby, on one port). With `postgres` the workers share rooms through Redis and a fresh
    PostgreSQL database created for this target; without it, the single-process default:
    SQLite and the in-process channel layer, no Redis. `route`: `serve --route` (room: a room's
    connections to one worker; random: each connection to any worker)."""

    ready_line = "Uvicorn running on"

    def __init__(
        self,
        name: str,
        workers: int,
        data_dir: Path,
        code_root: Path = PROJECT_ROOT,
        *,
        database: PgDatabase | None = None,
        redis: str | None = None,
        env: dict[str, str] | None = None,
        route: str = "room",
        standby: int = 1,
    ) -> None:
        super().__init__()
        self.name = name
        self.workers = workers
        self.route = route
        self.standby = standby
        if workers > 1:
            self.ready_line = "serve: routing by"
        self.data_dir = Path(data_dir)
        self.code_root = Path(code_root)
        self.database = database
        self.redis = redis
        self.extra_env = env or {}
        self.worker_pids: list[int] = []
        self.port = 0
        self.migrated = False
        backend = "Redis + PostgreSQL" if database else "in-memory layer + SQLite"
        routing = f" --route {route}" if workers > 1 else ""
        self.label = f"manage.py serve --workers {workers}{routing} ({backend})"
        self.command = f"manage.py serve --workers {workers}{routing}" + (
            " (REDIS_URL, DATABASE_URL=postgres://...)"
            if database
            else " (defaults: no Redis, SQLite)"
        )

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
            **RATE_ENV,
            **self.extra_env,
        }
        env.pop("REDIS_URL", None)
        if self.database is not None:
            env["DATABASE_URL"] = self.database.url
            env["REDIS_URL"] = self.redis or redis_url()
        else:
            env["DATABASE_URL"] = f"sqlite:///{self.data_dir / 'db.sqlite3'}"
        return env

    def prepare(self) -> None:
        """A fresh database (PostgreSQL: created empty; SQLite: a new file), migrated. Once."""
        if self.migrated:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.database is not None:
            self.database.create()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=self.code_root,
            env=self.env(),
            check=True,
            timeout=120,
        )
        self.migrated = True

    def start(self) -> ServeTarget:
        self.prepare()
        env = self.env()
        self.port = free_port()
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.log = []
        args = ["manage.py", "serve", "--workers", str(self.workers), "--host", "127.0.0.1"]
        if self.workers > 1:
            args += ["--route", self.route, "--standby", str(self.standby)]
        self._spawn([sys.executable, *args, "--port", str(self.port)], env)
        # The parent announces the port before its workers are up: wait for each worker's
        # start line (its pid), and with several workers for the standby too, bounded.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            lines = list(self.log)
            if self.workers == 1:
                pids = [int(m.group(1)) for line in lines if (m := WORKER_LINE.search(line))]
                ready = len(pids) >= 1
            else:
                slots = {
                    int(m.group(1)): int(m.group(2))
                    for line in lines
                    if (m := ROUTED_WORKER_LINE.search(line))
                }
                pids = [slots[slot] for slot in sorted(slots)]
                ready = len(slots) >= self.workers and (
                    not self.standby or any(STANDBY_LINE.search(x) for x in lines)
                )
            if ready:
                self.worker_pids = pids[-self.workers :]
                break
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited while starting:\n" + "".join(self.log))
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"{self.name}: workers did not start:\n" + "".join(self.log))
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            root = psutil.Process(self.process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        super().stop()
        # Whatever the supervisor left behind (it normally stops its workers itself).
        for proc in tree[1:]:
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
        self.worker_pids = []

    def close(self) -> None:
        self.stop()
        if self.database is not None:
            self.database.drop()

    def connection_owners(self) -> dict[int, int]:
        """{client's local port: pid of the worker holding that connection}, read from each
        worker's sockets (psutil): which process each bench client landed on."""
        owners: dict[int, int] = {}
        for pid in self.worker_pids:
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                continue
            for conn in conns:
                if (
                    conn.status == psutil.CONN_ESTABLISHED
                    and conn.laddr
                    and conn.laddr.port == self.port
                    and conn.raddr
                ):
                    owners[conn.raddr.port] = pid
        return owners
