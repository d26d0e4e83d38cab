"""Secrets in query strings never reach the access logs, however the client spells the key.

The server reads query keys percent-decoded (`%74oken` is `token`), takes the last of repeated
keys, and splits only on `&`; each spelling it accepts must be redacted, by `manage.py runserver`
(daphne) and by `manage.py serve` (uvicorn) alike. See docs/deploying.md.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.e2e.server import LiveServer, ServeProcess

pytestmark = pytest.mark.e2e

WAIT_S = 10

# Spellings of `token` that the server accepts (each answers 200 on a private room's REST URL and
# opens its WebSocket), as query strings around the secret.
ACCEPTED_TOKEN_QUERIES = {
    "plain": "token={secret}",
    "percent-encoded t": "%74oken={secret}",
    "percent-encoded k": "to%6Ben={secret}",
    "all percent-encoded": "%74%6F%6B%65%6E={secret}",
    "repeated, last wins": "token=wrong&token={secret}",
    "after other keys": "x=1&%74oken={secret}&y=2",
}
# Spellings of `client_secret` that the WebSocket accepts (each opens the bound client id).
ACCEPTED_CLIENT_SECRET_QUERIES = {
    "plain": "client_secret={secret}",
    "percent-encoded c": "%63lient_secret={secret}",
    "percent-encoded underscore": "client%5Fsecret={secret}",
    "repeated, last wins": "client_secret=wrong&client_secret={secret}",
}
# Secret-named keys the server does not take as a token; they still carry secrets to hide.
OTHER_SECRET_QUERIES = {
    "upper case": "TOKEN={secret}",
    "view_token": "view_token={secret}",
    "client_secret": "client_secret={secret}",
    "percent-encoded client_secret": "%63lient_secret={secret}",
    "percent-encoded underscore": "view%5Ftoken={secret}",
    "semicolon-separated": "mode=text;token={secret}",
}


@pytest.fixture(scope="module", params=["runserver", "serve"])
def any_server(request, tmp_path_factory) -> Iterator[LiveServer | ServeProcess]:
    """The same checks under daphne and under uvicorn."""
    if request.param == "runserver":
        server = LiveServer(tmp_path_factory.mktemp("daphne"))
        server.start()
        yield server
        server.stop()
        return
    data = tmp_path_factory.mktemp("uvicorn")
    env = {"DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}", "LOG_LEVEL": "INFO"}
    LiveServer(data, env).migrate()
    server = ServeProcess(env, workers=1)
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def private_room(server: LiveServer | ServeProcess) -> dict[str, str]:
    response = httpx.post(f"{server.http_url}/rooms", json={"private": True}, timeout=WAIT_S)
    assert response.status_code == 201, response.text
    return response.json()


async def opens(server: LiveServer | ServeProcess, room_id: str, query: str) -> bool:
    """Whether a WebSocket with this query is let into the private room (init received)."""
    url = f"{server.ws_base}/ws/{room_id}?{query}"
    async with websockets.connect(url, open_timeout=WAIT_S, close_timeout=WAIT_S) as ws:
        async with asyncio.timeout(WAIT_S):
            first = json.loads(await ws.recv())
    return first.get("type") == "init"


async def logged_up_to_a_marker(server: LiveServer | ServeProcess) -> str:
    """The server's log once every earlier request is in it: a last request's line has arrived."""
    marker = f"log-marker-{secrets.token_hex(8)}"
    assert httpx.get(f"{server.http_url}/rooms/{marker}", timeout=WAIT_S).status_code == 404
    deadline = time.monotonic() + WAIT_S
    while not any(marker in line for line in list(server.log)):
        assert time.monotonic() < deadline, f"{marker!r} never reached the log"
        await asyncio.sleep(0.02)  # polling the log reader thread, condition checked each time
    return "".join(server.log)


async def test_every_accepted_spelling_of_token_is_redacted(any_server):
    room = private_room(any_server)
    rid, secret = room["room_id"], room["token"]
    with httpx.Client(base_url=any_server.http_url, timeout=WAIT_S) as http:
        for name, query in ACCEPTED_TOKEN_QUERIES.items():
            url = f"/rooms/{rid}?{query.format(secret=secret)}"
            assert http.get(url).status_code == 200, f"{name}: the server should accept it"
    for name, query in ACCEPTED_TOKEN_QUERIES.items():
        assert await opens(any_server, rid, query.format(secret=secret)), name
    log = await logged_up_to_a_marker(any_server)
    assert f"/rooms/{rid}" in log and f"/ws/{rid}" in log, "the requests are logged"
    assert secret not in log


async def test_secret_named_keys_the_server_ignores_are_redacted_too(any_server):
    room = private_room(any_server)
    rid = room["room_id"]
    secrets_sent = []
    with httpx.Client(base_url=any_server.http_url, timeout=WAIT_S) as http:
        for query in OTHER_SECRET_QUERIES.values():
            secret = secrets.token_urlsafe(16)
            secrets_sent.append(secret)
            http.get(f"/rooms/{rid}?{query.format(secret=secret)}")
    log = await logged_up_to_a_marker(any_server)
    assert f"/rooms/{rid}" in log
    for name, secret in zip(OTHER_SECRET_QUERIES, secrets_sent, strict=True):
        assert secret not in log, name


async def test_every_accepted_spelling_of_client_secret_is_redacted(any_server):
    room = private_room(any_server)
    rid, token = room["room_id"], room["token"]
    client = f"redact-{secrets.token_hex(4)}"
    first = f"/ws/{rid}?token={token}&mode=ops&client={client}"
    async with websockets.connect(f"{any_server.ws_base}{first}", open_timeout=WAIT_S) as ws:
        async with asyncio.timeout(WAIT_S):
            secret = json.loads(await ws.recv())["client_secret"]
    for name, query in ACCEPTED_CLIENT_SECRET_QUERIES.items():
        spelled = query.format(secret=secret)
        assert await opens(any_server, rid, f"token={token}&client={client}&{spelled}"), name
    assert not await opens(any_server, rid, f"token={token}&client={client}"), "it is bound"
    log = await logged_up_to_a_marker(any_server)
    assert f"/ws/{rid}" in log, "the connections are logged"
    assert secret not in log


async def test_an_accepted_websocket_is_logged_on_one_line(any_server):
    # uvicorn's "[accepted]" line and daphne's CONNECT name the path and the client; the
    # websockets library's "connection open" after the one and daphne's HANDSHAKING before the
    # other said nothing more, on every connection (docs/benchmarks.md). A connection's end
    # is a line of its own.
    room = private_room(any_server)
    rid, token = room["room_id"], room["token"]
    before = len(any_server.log)
    assert await opens(any_server, rid, f"token={token}")
    await logged_up_to_a_marker(any_server)
    lines = list(any_server.log)[before:]
    opening = [line for line in lines if f"/ws/{rid}" in line and "DISCONNECT" not in line]
    assert len(opening) == 1, lines
    assert not any("connection open" in line for line in lines), lines
