"""The documented multi-machine set-up, for real: nginx (docs/nginx.conf) and HAProxy
(docs/haproxy.cfg) in front of two server processes on Redis and PostgreSQL (issue 15).

Each proxy runs the config file from docs/ as written, with only its listening port and its
upstream servers replaced by this test's (and nginx's log and temp paths moved into a temp
folder), as its own process: never the system service. Through it, every connection to a room
must reach one process (the `X-Collab-Process` header of the handshake names it), rooms must
spread over both processes, pages and REST must be served, and clients editing through the
proxy, reconnecting now and then, must converge with each other and the database.

nginx and haproxy are Debian packages (`apt-get install nginx haproxy`); without them these
tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.server import PROJECT_ROOT, ServeProcess, free_port, stop_gracefully
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    postgres_database,
    postgres_service,
    redis_service,
    service_env,
)
from tests.e2e.test_scale_out import (
    SCALE_ENV,
    RoamingClient,
    RoamingTypist,
    assert_everyone_agrees,
    close_all,
    parse_tokens,
    tokens_in,
)

pytestmark = [pytest.mark.services, pytest.mark.e2e]

DOCS = PROJECT_ROOT / "docs"
PROXIES = ("nginx", "haproxy")
READY_S = 20  # bound on the wait for a started proxy to answer


def proxy_binary(name: str) -> str:
    """The proxy's executable (PATH, else Debian's /usr/sbin); missing: skip, or fail in CI."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        message = f"{name} is not installed (apt-get install nginx haproxy)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true: the proxy tests must run", pytrace=False)
        pytest.skip(message)
    return path


def _replace_servers(text: str, pattern: str, lines: list[str]) -> str:
    """Each run of upstream `server` lines matching `pattern` replaced by `lines`, indented as
    the first of the run was."""
    out: list[str] = []
    runs = 0
    previous_matched = False
    for line in text.splitlines():
        matched = re.match(pattern, line) is not None
        if matched and not previous_matched:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + server for server in lines)
            runs += 1
        if not matched:
            out.append(line)
        previous_matched = matched
    assert runs, f"no server lines matching {pattern!r}: has the config changed shape?"
    return "\n".join(out) + "\n"


def nginx_config(port: int, backends: list[int], folder: Path) -> str:
    text = (DOCS / "nginx.conf").read_text()
    text, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", text)
    assert listens == 1, "docs/nginx.conf: expected one `listen 80;`"
    text = _replace_servers(
        text,
        r"^\s*server 127\.0\.0\.1:\d+",
        [f"server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in backends],
    )
    # Debian's nginx writes its temp files and access log under /var: keep them in the folder.
    paths = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text, https = re.subn(
        r"^http \{", f"http {{\n{paths}\n    access_log {folder / 'access.log'};", text, flags=re.M
    )
    assert https == 1, "docs/nginx.conf: expected one `http {` block"
    return text


def haproxy_config(port: int, backends: list[int]) -> str:
    text = (DOCS / "haproxy.cfg").read_text()
    text, binds = re.subn(r"bind :80\b", f"bind 127.0.0.1:{port}", text)
    assert binds == 1, "docs/haproxy.cfg: expected one `bind :80`"
    return _replace_servers(
        text,
        r"^\s*server collab\d+ ",
        [
            f"server collab{n} 127.0.0.1:{p} check inter 1s fall 2 rise 2"
            for n, p in enumerate(backends)
        ],
    )


class Proxy:
    """nginx or haproxy as this test's own foreground process, on a free port."""

    def __init__(self, name: str, backends: list[int], folder: Path) -> None:
        self.name = name
        self.port = free_port()
        self.folder = folder
        binary = proxy_binary(name)
        if name == "nginx":
            config = folder / "nginx.conf"
            config.write_text(nginx_config(self.port, backends, folder))
            directives = (
                f"daemon off; pid {folder / 'nginx.pid'}; error_log {folder / 'error.log'};"
            )
            self.command = [binary, "-p", str(folder), "-c", str(config), "-g", directives]
        else:
            config = folder / "haproxy.cfg"
            config.write_text(haproxy_config(self.port, backends))
            self.command = [binary, "-db", "-f", str(config)]
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self.process = subprocess.Popen(
            self.command,
            stdout=(self.folder / "stdout.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        # No readiness event exists: poll with short requests until it answers, bounded by
        # READY_S (a refused connection returns at once, hence the pause between tries).
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.http_url}/metrics", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.name} did not answer through {self.http_url}:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}"
            for path in sorted(self.folder.glob("*.log"))
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_gracefully(self.process)
        self.process = None


def start_backends(redis: str, database) -> list[ServeProcess]:
    """Two server processes (`manage.py serve --workers 1` each) sharing Redis and PostgreSQL."""
    env = service_env(redis, database, **SCALE_ENV)
    database.ensure_migrated({**os.environ, **env})
    servers = [ServeProcess(env, workers=1).start() for _ in range(2)]
    try:
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@pytest.fixture(scope="module")
def backends(redis_service, postgres_database) -> Iterator[list[ServeProcess]]:  # noqa: F811
    servers = start_backends(redis_service, postgres_database)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def running_proxy(name: str, servers: list[ServeProcess]) -> Iterator[Proxy]:
    with tempfile.TemporaryDirectory(prefix=f"collab-{name}-") as folder:
        os.chmod(folder, 0o755)  # nginx's workers (user nobody when started as root) write here
        proxy = Proxy(name, [server.port for server in servers], Path(folder))
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.stop()


@pytest.fixture(params=PROXIES)
def proxy(request, backends) -> Iterator[Proxy]:
    with running_proxy(request.param, backends) as proxy:
        yield proxy


def served_by(socket) -> int:
    return int(socket.response.headers["X-Collab-Process"])


async def create_room(http: httpx.AsyncClient) -> str:
    response = await http.get("/rooms/create")
    assert response.status_code == 200, response.text
    return response.json()["room_id"]


async def test_through_the_proxy_each_room_is_on_one_process_and_rooms_use_every_process(
    proxy, backends
):
    pids = {server.pid for server in backends}
    homes: dict[str, int] = {}
    sockets = []
    try:
        async with httpx.AsyncClient(base_url=proxy.http_url, timeout=10) as http:
            # Rooms until both processes are some room's home (40 rooms miss one: 2^-39).
            for _ in range(40):
                room_id = await create_room(http)
                for n in range(3):
                    socket = await websockets.connect(
                        f"{proxy.ws_base}/ws/{room_id}?name=u{n}&client=c{n}{room_id[:6]}",
                        open_timeout=10,
                    )
                    sockets.append(socket)
                    assert served_by(socket) == homes.setdefault(room_id, served_by(socket)), (
                        f"{proxy.name}: room {room_id}'s connections reached two processes"
                    )
                if set(homes.values()) == pids:
                    break
        assert set(homes.values()) == pids, f"{proxy.name} sent every room to one process"
    finally:
        for socket in sockets:
            await socket.close()


async def test_pages_and_rest_are_served_through_the_proxy(proxy, backends):
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=proxy.http_url, timeout=10, limits=fresh) as http:
        for path in ("/", "/static/rooms/collab-client.js", "/metrics"):
            response = await http.get(path)
            assert response.status_code == 200, (proxy.name, path, response.status_code)
        created = await http.post("/rooms", json={"code": "x = 1\n"})
        assert created.status_code == 201, created.text
        room = await http.get(f"/rooms/{created.json()['room_id']}")
        assert room.json()["code"] == "x = 1\n"


async def test_clients_editing_through_the_proxy_converge(
    proxy,
    backends,
    postgres_database,  # noqa: F811
):
    async with httpx.AsyncClient(base_url=proxy.http_url, timeout=10) as http:
        rooms = [await create_room(http) for _ in range(3)]
    bases = [proxy.ws_base]
    clients = {
        room_id: [RoamingClient(bases, 0, room_id, f"{proxy.name}{r}x{n}") for n in range(2)]
        for r, room_id in enumerate(rooms)
    }
    everyone = [client for pair in clients.values() for client in pair]
    # Reconnecting now and then: through the proxy, every connection is routed again.
    typists = [
        RoamingTypist(client, random.Random(n), deletes=True, drop_rate=0.1)
        for n, client in enumerate(everyone)
    ]
    try:
        for client in everyone:
            await client.connect()
        async with asyncio.timeout(90):
            await asyncio.gather(*(typist.run(25) for typist in typists))
        for room_id, pair in clients.items():
            homes = {served_by(c.socket) for c in pair}
            assert len(homes) == 1, (proxy.name, room_id, homes)
            code, version, _ = await assert_everyone_agrees(
                [proxy.http_url], postgres_database, room_id, pair
            )
            deleted = set().union(*(t.deleted for t in typists if t.client in pair))
            typed = [tok for t in typists if t.client in pair for tok in t.typed]
            assert sorted(parse_tokens(code)) == sorted(t for t in typed if t not in deleted)
            assert version == sum(len(c.acked_seqs) for c in pair)
    finally:
        await close_all(everyone)


@pytest.mark.parametrize("name", PROXIES)
async def test_when_a_process_dies_its_rooms_move_to_the_other_and_nothing_acked_is_lost(
    name,
    redis_service,  # noqa: F811
    postgres_database,  # noqa: F811
):
    servers = start_backends(redis_service, postgres_database)
    clients: dict[str, list[RoamingClient]] = {}
    everyone: list[RoamingClient] = []
    stop = asyncio.Event()
    load: list[asyncio.Task] = []
    try:
        with running_proxy(name, servers) as proxy:
            async with httpx.AsyncClient(base_url=proxy.http_url, timeout=10) as http:
                rooms = [await create_room(http) for _ in range(4)]
            bases = [proxy.ws_base]
            clients = {
                room_id: [RoamingClient(bases, 0, room_id, f"{name}{r}die{n}") for n in range(2)]
                for r, room_id in enumerate(rooms)
            }
            everyone = [client for pair in clients.values() for client in pair]
            typists = [
                RoamingTypist(client, random.Random(n), deletes=False, drop_rate=0.02)
                for n, client in enumerate(everyone)
            ]
            for client in everyone:
                await client.connect()
            load = [asyncio.create_task(t.run(stop=stop)) for t in typists]

            async def wait_for(condition, what: str) -> None:
                try:
                    async with asyncio.timeout(30):
                        while not condition():
                            await asyncio.wait(load, timeout=0.02)
                            for task in load:
                                if task.done():
                                    task.result()
                except TimeoutError:
                    raise AssertionError(f"{name}: not within 30 s: {what}") from None

            await wait_for(lambda: sum(len(c.acked_ops) for c in everyone) >= 40, "40 acks")
            victim = served_by(clients[rooms[0]][0].socket)
            survivor = next(s.pid for s in servers if s.pid != victim)
            acked_at_kill = {c.client_id: len(c.acked_ops) for c in everyone}
            for client in everyone:
                client.expect_server_loss(proxy.ws_base)
            os.kill(victim, signal.SIGKILL)
            await wait_for(
                lambda: all(len(c.acked_ops) > acked_at_kill[c.client_id] + 3 for c in everyone),
                "every client acknowledged again after the kill",
            )
            stop.set()
            async with asyncio.timeout(60):
                for task in load:
                    await task
            for room_id, pair in clients.items():
                assert {served_by(c.socket) for c in pair} == {survivor}, (name, room_id)
                code, _, _ = await assert_everyone_agrees(
                    [proxy.http_url], postgres_database, room_id, pair
                )
                typed = [tok for t in typists if t.client in pair for tok in t.typed]
                assert sorted(parse_tokens(code)) == sorted(typed), (name, room_id)
                acked = set().union(*(tokens_in(op) for c in pair for op in c.acked_ops))
                assert acked <= set(parse_tokens(code)), (name, room_id)
    finally:
        stop.set()
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        await close_all(everyone)
        for server in servers:
            server.stop()
