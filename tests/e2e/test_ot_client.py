"""The test OT client (tests/support/ot_client.py) fails a test when the server ends a connection.

The convergence, durability, scale-out and fuzz tests drive the server through this client. A
real client resumes after a 4500 close and the text still converges, so these tests only notice
a server that fails commits if the client reports every close the test did not cause. Here a live
server really fails a commit (a trigger makes its database refuse the op insert), and really dies
(SIGKILL), to show that it does.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.e2e.server import LiveServer
from tests.support.ot_client import ABNORMAL_CLOSURE, OTClient, UnexpectedClose

pytestmark = pytest.mark.e2e

WAIT_S = 10


def create_room(server: LiveServer) -> str:
    response = httpx.get(f"{server.http_url}/rooms/create", timeout=WAIT_S)
    assert response.status_code == 200, response.text
    return response.json()["room_id"]


def refuse_op_inserts(server: LiveServer) -> None:
    """A real database failure for the server's next commit."""
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=WAIT_S) as database:
        database.execute(
            "CREATE TRIGGER fail_op_insert BEFORE INSERT ON rooms_op "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )


async def test_a_commit_the_server_fails_is_an_unexpected_close(server):
    client = OTClient(server.ws_base, create_room(server), "failedcommitclient")
    try:
        await client.connect()
        await client.edit(["kept?"])
        await client.wait_until(lambda: client.settled, WAIT_S)
        refuse_op_inserts(server)

        await client.edit(["lost?"])
        with pytest.raises(UnexpectedClose, match="closed the connection with 4500"):
            await client.wait_until(lambda: client.settled, WAIT_S)
        assert [close.code for close in client.unexpected_closes] == [4500]
        # Resuming would hide the failure: the client refuses to go on.
        with pytest.raises(UnexpectedClose):
            await client.connect()
    finally:
        await client.close()


async def test_a_killed_server_is_a_failure_unless_the_test_said_it_would_kill_it(server):
    room_id = create_room(server)
    warned = OTClient(server.ws_base, room_id, "warnedkillclient")
    surprised = OTClient(server.ws_base, room_id, "surprisedkillclient")
    try:
        for client in (warned, surprised):
            await client.connect()
        warned.expect_server_loss(server.ws_base)
        server.kill()

        with pytest.raises(ConnectionError):  # disconnected: it may resume
            await warned.wait_until(lambda: False, WAIT_S)
        assert [close.code for close in warned.closes] == [ABNORMAL_CLOSURE]
        assert warned.unexpected_closes == []
        with pytest.raises(UnexpectedClose, match=f"with {ABNORMAL_CLOSURE}"):
            await surprised.wait_until(lambda: False, WAIT_S)
        assert [close.code for close in surprised.unexpected_closes] == [ABNORMAL_CLOSURE]

        # The warning covered the connections open at the kill, not those opened after it.
        server.start()
        await warned.connect()
        server.kill()
        with pytest.raises(UnexpectedClose):
            await warned.wait_until(lambda: False, WAIT_S)
    finally:
        for client in (warned, surprised):
            await client.close()
