"""Private rooms (docs/protocol.md section 9): tokens for reading, editing, and nothing else."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from rooms import document, store
from rooms.models import Room
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def private(client):
    response = client.post(
        "/rooms",
        data=json.dumps({"private": True, "code": "secret", "name": "interview"}),
        content_type="application/json",
    )
    assert response.status_code == 201
    return response.json()


def test_private_room_creation_returns_an_edit_and_a_view_token(private):
    assert set(private) >= {"room_id", "ws_url", "token", "view_token"}
    assert private["token"] != private["view_token"]
    assert len(private["token"]) >= 32 and len(private["view_token"]) >= 32


def test_only_hashes_of_the_tokens_are_stored(private):
    room = Room.objects.get(id=private["room_id"])
    stored = json.dumps(list(Room.objects.filter(id=room.id).values().get().values()), default=str)
    assert private["token"] not in stored and private["view_token"] not in stored
    assert room.private and len(room.edit_token_hash) == 64


def test_public_rooms_carry_no_tokens(client):
    body = client.post("/rooms", data="{}", content_type="application/json").json()
    assert "token" not in body and "view_token" not in body


@pytest.mark.parametrize("path", ["/rooms/{id}", "/rooms/join?id={id}", "/rooms/{id}/history"])
def test_rest_without_a_valid_token_is_403(client, private, path):
    url = path.format(id=private["room_id"])
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}):
        response = client.get(url, **headers)
        assert response.status_code == 403
        assert "error" in response.json()


@pytest.mark.parametrize("which", ["token", "view_token"])
def test_rest_accepts_either_token_as_bearer_or_query(client, private, which):
    token = private[which]
    by_header = client.get(f"/rooms/{private['room_id']}", HTTP_AUTHORIZATION=f"Bearer {token}")
    by_query = client.get(f"/rooms/join?id={private['room_id']}&token={token}")
    assert by_header.status_code == by_query.status_code == 200
    assert by_header.json()["code"] == "secret"
    history = client.get(f"/rooms/{private['room_id']}/history?token={token}")
    assert history.status_code == 200


def test_unknown_room_is_404_before_any_token_question(client):
    assert client.get("/rooms/nosuchroom?token=x").status_code == 404


async def test_websocket_without_or_with_a_wrong_token_is_closed_4403(private):
    for query in ("", "?token=wrong", "?token="):
        client = Client(f"/ws/{private['room_id']}{query}")
        connected_ok, _ = await client.communicator.connect(timeout=3)
        assert connected_ok
        assert await client.closed_with() == 4403


async def test_token_is_checked_before_query_parameters(private):
    client = Client(f"/ws/{private['room_id']}?mode=bad")
    await client.communicator.connect(timeout=3)
    assert await client.closed_with() == 4403


async def test_edit_token_gives_full_access(private):
    editor = Client(f"/ws/{private['room_id']}?mode=ops&token={private['token']}")
    await editor.connect()
    ack = await editor.submit({"type": "op", "version": 0, "seq": 1, "op": [6, "!"]})
    assert ack["version"] == 1
    await editor.close()


@pytest.mark.parametrize(("which", "access"), [("token", "edit"), ("view_token", "view")])
async def test_init_says_whether_the_connection_may_edit(private, which, access):
    for mode in ("ops", "text"):
        client = Client(f"/ws/{private['room_id']}?mode={mode}&token={private[which]}")
        assert (await client.connect())["access"] == access
        await client.close()


async def test_init_of_a_public_room_gives_edit_access(client):
    room = await database_sync_to_async(client.post)(
        "/rooms", data="{}", content_type="application/json"
    )
    connection = Client(f"/ws/{room.json()['room_id']}")
    assert (await connection.connect())["access"] == "edit"
    await connection.close()


async def test_view_token_reads_everything_but_every_edit_is_forbidden(private):
    viewer = Client(f"/ws/{private['room_id']}?mode=ops&token={private['view_token']}")
    editor = Client(f"/ws/{private['room_id']}?mode=ops&token={private['token']}")
    assert (await viewer.connect())["code"] == "secret"
    await editor.connect()
    assert (await viewer.receive_type("join"))["user"]["id"] == editor.init["user_id"]
    for message in (
        {"type": "sync_code", "code": "mine"},
        {"type": "op", "version": 0, "seq": 1, "op": ["x"]},
        {"type": "cursor", "anchor": 0, "head": 0},
        {"type": "typing", "typing": True},
        {"type": "op"},  # forbidden is decided before validation
        {"type": "sync_code", "code": 5},
    ):
        error = await viewer.request(message, "error")
        assert error["code"] == "forbidden", message
    await viewer.send({"type": "join", "name": "watcher"})  # renaming is allowed
    assert (await editor.receive_type("join"))["user"]["name"] == "watcher"
    await editor.submit({"type": "op", "version": 0, "seq": 1, "op": ["# "]})
    update = await viewer.receive_type("op")
    assert update["op"] == ["# "] and update["version"] == 1
    room = await database_sync_to_async(document.room_get)(private["room_id"])
    code = await database_sync_to_async(store.room_code)(room)
    assert code == "# secret" and room.version == 1
    await viewer.close()
    await editor.close()


def test_tokens_are_redacted_from_access_logs():
    from rooms.logs import redact_secrets as redact

    assert redact("/rooms/abc?token=s3cret&x=1") == "/rooms/abc?token=[redacted]&x=1"
    assert redact("/ws/abc?mode=ops&token=s3cret") == "/ws/abc?mode=ops&token=[redacted]"
    assert "s3cret" not in redact("/rooms/join?id=a&TOKEN=s3cret")


def test_autocomplete_in_a_private_room_needs_a_token(client, private):
    url = f"/autocomplete?room={private['room_id']}&line=1&column=3"
    assert client.get(url).status_code == 403
    assert client.get(url + "&token=wrong").status_code == 403
    assert client.get(url + f"&token={private['view_token']}").status_code == 200
    with_header = client.get(url, HTTP_AUTHORIZATION=f"Bearer {private['token']}")
    assert with_header.status_code == 200
