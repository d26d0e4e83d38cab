"""A WebSocket to a path that names no room is accepted and closed with 4404, under both
launchers (docs/protocol.md section 4): never an HTTP 500 with a traceback in the log."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.e2e.server import LAUNCHERS, launched

pytestmark = pytest.mark.e2e

WAIT_S = 10
PATHS = ["/ws/a/b", "/ws", "/ws/", "/nothing", "/", "/ws/a/b/c/"]


@pytest.fixture(scope="module", params=LAUNCHERS)
def any_server(request, tmp_path_factory):
    with launched(request.param, tmp_path_factory.mktemp(request.param)) as server:
        yield server


@pytest.mark.parametrize("path", PATHS)
async def test_a_path_naming_no_room_is_closed_with_4404(any_server, path):
    async with websockets.connect(f"{any_server.ws_base}{path}", open_timeout=WAIT_S) as ws:
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4404
    assert not [line for line in any_server.log if "Traceback" in line], "".join(any_server.log)
