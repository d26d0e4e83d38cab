"""Access changes across processes (docs/deploying.md): two server processes share Redis and
PostgreSQL; an owner changes access through one, and the member's or the link's open socket on
the other follows at once. A change whose announcement never came (written straight into the
database here) still reaches it, through each process's poll of its rooms."""

from __future__ import annotations

import pytest
import websockets

from tests.e2e.accounts import Person, close_code, next_of, receive
from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    postgres_database,
    postgres_service,
    redis_service,
    running_processes,
    service_env,
)

pytestmark = [pytest.mark.services, pytest.mark.e2e]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, redis_service, postgres_database):  # noqa: F811
    # No DJANGO_SECRET_KEY: processes of one installation share the key it keeps in a file, so
    # a session made through one process is honoured by the other.
    env = service_env(redis_service, postgres_database, COLLAB_VERSION_POLL_S="0.5")
    with running_processes(tmp_path_factory, postgres_database, env) as servers:
        yield servers


@pytest.fixture(scope="module")
def team(two_processes):
    """alice owns a private room, made through the first process; bob has an account."""
    first = two_processes[0]
    alice, bob = Person(first.http_url, "alice"), Person(first.http_url, "bob")
    room = alice.call("POST", "/rooms", {"private": True, "code": "shared"}).json()
    yield alice, bob, room
    alice.close()
    bob.close()


async def test_a_membership_change_reaches_a_socket_on_another_process(two_processes, team):
    _first, second = two_processes
    alice, bob, room = team
    members = f"/rooms/{room['room_id']}/members"
    assert alice.call("POST", members, {"user": "bob", "role": "viewer"}).status_code == 201
    async with bob.at(second.http_url).ws(second.ws_base, room["room_id"]) as ws:
        init = await receive(ws)
        assert (init["access"], init["name"]) == ("view", "bob")
        assert alice.call("PATCH", f"{members}/bob", {"role": "editor"}).status_code == 200
        assert await next_of(ws, "access") == {"type": "access", "access": "edit"}
        await ws.send('{"type": "op", "version": 0, "seq": 1, "op": ["x"]}')
        assert (await next_of(ws, "ack", "error"))["type"] == "ack"
        assert alice.call("DELETE", f"{members}/bob").status_code == 204
        assert (await next_of(ws, "error"))["code"] == "forbidden"
        assert await close_code(ws) == 4403


async def test_a_new_link_shuts_out_the_old_links_sockets_on_another_process(two_processes, team):
    _first, second = two_processes
    alice, _, room = team
    url = f"{second.ws_base}/ws/{room['room_id']}?token={room['view_token']}"
    async with websockets.connect(url, open_timeout=10) as ws:
        assert (await receive(ws))["access"] == "view"
        fresh = alice.call("POST", f"/rooms/{room['room_id']}/link/rotate")
        assert fresh.status_code == 200
        assert (await next_of(ws, "error"))["code"] == "forbidden"
        assert await close_code(ws) == 4403
    room.update(fresh.json())


async def test_an_access_change_whose_announcement_was_lost_still_arrives(
    two_processes,
    team,
    postgres_database,  # noqa: F811
):
    _, second = two_processes
    alice, bob, room = team
    members = f"/rooms/{room['room_id']}/members"
    assert alice.call("POST", members, {"user": "bob", "role": "editor"}).status_code == 201
    async with bob.at(second.http_url).ws(second.ws_base, room["room_id"]) as ws:
        assert (await receive(ws))["access"] == "edit"
        # Straight into the database: no process announces this change.
        postgres_database.query(
            "UPDATE rooms_roommember SET role = 'viewer' WHERE room_id = %s RETURNING id",
            (room["room_id"],),
        )
        postgres_database.query(
            "UPDATE rooms_room SET access_version = access_version + 1 WHERE id = %s"
            " RETURNING access_version",
            (room["room_id"],),
        )
        assert await next_of(ws, "access") == {"type": "access", "access": "view"}
