from __future__ import annotations

import pytest

from tests.e2e.server import LiveServer


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory) -> LiveServer:
    """One real server for a test module (tests create their own rooms, so they don't collide)."""
    server = LiveServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path) -> LiveServer:
    """A server of the test's own, for tests that stop, kill or restart it."""
    server = LiveServer(tmp_path / "server")
    server.start()
    yield server
    server.stop()
