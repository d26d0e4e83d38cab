"""Redis and PostgreSQL for the scale-out tests: reachability, a fresh database per module.

Import the fixtures you need explicitly in a test module:

    from tests.e2e.services import postgres_database, redis_service  # noqa: F401

When a service is down the tests that need it are skipped with instructions, except in CI
(env CI == "true"), where a missing service is a failure: CI promises the services are there.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rooms import ot
from tests.e2e.server import PROJECT_ROOT, LiveServer

REDIS_DEFAULT_URL = "redis://127.0.0.1:6379/0"
# The server, without a database name: each module gets a database of its own on it.
POSTGRES_DEFAULT_URL = "postgres://postgres@127.0.0.1:5432"
CONNECT_TIMEOUT_S = 3

HOW_TO_RUN = (
    "These tests need Redis and PostgreSQL: start them (`redis-server`; PostgreSQL with "
    "`pg_ctlcluster <version> main start` or `docker run -p 5432:5432 -e "
    "POSTGRES_HOST_AUTH_METHOD=trust postgres`), point REDIS_URL / POSTGRES_URL at them if "
    "they are elsewhere, then run `pytest -m services`."
)


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or REDIS_DEFAULT_URL


def postgres_server_url() -> str:
    return (os.environ.get("POSTGRES_URL") or POSTGRES_DEFAULT_URL).rstrip("/")


def service_unavailable(message: str) -> None:
    """Fail in CI (the services are part of the CI set-up), skip elsewhere with instructions."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the services must be running)", pytrace=False)
    pytest.skip(f"{message}. {HOW_TO_RUN}")


def redis_problem(url: str) -> str | None:
    """Why Redis at `url` cannot be used, or None when it answers PING."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        client.ping()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    finally:
        client.close()
    return None


def _connect(url: str, **kwargs: Any):
    import psycopg

    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **kwargs)


def postgres_problem(server_url: str) -> str | None:
    """Why PostgreSQL at `server_url` cannot be used, or None when we may create databases."""
    try:
        with _connect(f"{server_url}/postgres", autocommit=True) as connection:
            connection.execute("SELECT 1")
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


class PostgresDatabase:
    """A database of one test module: created empty, migrated once, dropped at the end."""

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name
        self.migrated = False
        self._migrate_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.server_url}/{self.name}"

    def create(self) -> None:
        with _connect(f"{self.server_url}/postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        # FORCE: a killed server's connections may linger on the PostgreSQL side for a while.
        with _connect(f"{self.server_url}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def ensure_migrated(self, env: dict[str, str]) -> None:
        """Run the migrations the first time any server (or test) needs the schema."""
        with self._migrate_lock:
            if self.migrated:
                return
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=PROJECT_ROOT,
                env={**env, "DATABASE_URL": self.url},
                check=True,
                timeout=120,
            )
            self.migrated = True

    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with _connect(self.url) as connection:
            return connection.execute(sql, params).fetchall()

    def room(self, room_id: str) -> tuple[str, int]:
        """(code, version) of a room, read from the database itself: the copy of the text in
        the room row with the logged ops after it applied."""
        rows = self.query(
            "SELECT code, code_version, version FROM rooms_room WHERE id = %s", (room_id,)
        )
        assert rows, f"room {room_id} is not in the database"
        code, code_version, version = rows[0]
        ops = self.query(
            "SELECT op FROM rooms_op WHERE room_id = %s AND version > %s AND version <= %s"
            " ORDER BY version",
            (room_id, code_version, version),
        )
        for (op,) in ops:
            code = ot.apply(code, op)
        return code, version

    def op_versions(self, room_id: str) -> list[int]:
        rows = self.query(
            "SELECT version FROM rooms_op WHERE room_id = %s ORDER BY version", (room_id,)
        )
        return [version for (version,) in rows]


class ServiceServer(LiveServer):
    """A LiveServer on the shared Redis and a module's PostgreSQL database.

    Migrations run once per database (by whichever server starts first), not once per start.
    """

    def __init__(self, data_dir: Path, database: PostgresDatabase, env: dict[str, str]) -> None:
        super().__init__(data_dir, env={**env, "DATABASE_URL": database.url})
        self.database = database

    def migrate(self) -> None:
        self.database.ensure_migrated(self.env)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def service_env(redis: str, database: PostgresDatabase, **extra: str) -> dict[str, str]:
    """The environment of a scaled-out server process."""
    return {"REDIS_URL": redis, "DATABASE_URL": database.url, **extra}


def start_all(servers: list[LiveServer]) -> None:
    """Start several servers at once (each start waits for its own readiness line)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.start) for server in servers]:
            future.result()


@contextmanager
def running_processes(
    tmp_path_factory: pytest.TempPathFactory,
    database: PostgresDatabase,
    env: dict[str, str],
    count: int = 2,
) -> Iterator[list[ServiceServer]]:
    """`count` scaled-out server processes (each with a data folder of its own) started at
    once, and stopped when the block ends."""
    servers = [
        ServiceServer(tmp_path_factory.mktemp(f"process{number}"), database, env)
        for number in range(count)
    ]
    try:
        start_all(servers)
        yield servers
    finally:
        for server in servers:
            server.stop()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_service() -> str:
    """The Redis URL the servers share (REDIS_URL or redis://127.0.0.1:6379/0)."""
    url = redis_url()
    if problem := redis_problem(url):
        service_unavailable(f"Redis is not reachable at {url} ({problem})")
    return url


@pytest.fixture(scope="session")
def postgres_service() -> str:
    """The PostgreSQL server URL (POSTGRES_URL or postgres://postgres@127.0.0.1:5432)."""
    url = postgres_server_url()
    if problem := postgres_problem(url):
        service_unavailable(f"PostgreSQL is not reachable at {url} ({problem})")
    return url


@pytest.fixture(scope="module")
def postgres_database(postgres_service: str) -> Iterator[PostgresDatabase]:
    """A fresh, empty database for this test module; migrated by the first server that starts,
    dropped (WITH FORCE) at the end."""
    database = PostgresDatabase(postgres_service, f"collab_test_{secrets.token_hex(6)}")
    database.create()
    try:
        yield database
    finally:
        database.drop()
