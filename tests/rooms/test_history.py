"""GET /rooms/<id>/history (docs/protocol.md section 3, "History") and the op log behind it."""

from __future__ import annotations

import pytest
from django.db import connection

from rooms import document, ot
from rooms.models import Op
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def room():
    return document.room_create(code="")


async def make_changes(room_id: str) -> None:
    ops_client = Client(f"/ws/{room_id}?mode=ops&client=ops-client")
    text_client = Client(f"/ws/{room_id}")
    await ops_client.connect()
    await text_client.connect()
    await ops_client.submit({"type": "op", "version": 0, "seq": 1, "op": ["def f():\n"]})
    await text_client.submit({"type": "sync_code", "code": "def f():\n    return 1\n"})
    await ops_client.submit({"type": "op", "version": 2, "seq": 2, "op": [4, {"d": 1}, "g"]})
    await ops_client.close()
    await text_client.close()


async def test_history_replayed_from_empty_gives_the_rooms_code(room, async_client):
    await make_changes(room.id)
    body = (await async_client.get(f"/rooms/{room.id}/history")).json()
    text = ""
    for entry in body["ops"]:
        text = ot.apply(text, entry["op"])
    detail = (await async_client.get(f"/rooms/{room.id}")).json()
    assert text == detail["code"] == "def g():\n    return 1\n"
    assert body["version"] == 3 and body["room_id"] == room.id


async def test_history_entries_carry_version_op_user_client_seq_ts(room, async_client):
    await make_changes(room.id)
    entries = (await async_client.get(f"/rooms/{room.id}/history?since=0")).json()["ops"]
    assert [e["version"] for e in entries] == [1, 2, 3]
    assert [e["seq"] for e in entries] == [1, None, 2]
    assert entries[0]["client"] == "ops-client" and entries[2]["client"] == "ops-client"
    assert entries[1]["op"] == [9, "    return 1\n"]  # a whole-text change is stored as its diff
    for entry in entries:
        assert set(entry) >= {"version", "op", "user", "client", "seq", "ts"}
        assert isinstance(entry["ts"], int) and entry["ts"] > 1_600_000_000_000
        assert isinstance(entry["user"], str)


async def test_history_since_returns_only_later_changes(room, async_client):
    await make_changes(room.id)
    entries = (await async_client.get(f"/rooms/{room.id}/history?since=2")).json()["ops"]
    assert [e["version"] for e in entries] == [3]
    at_head = (await async_client.get(f"/rooms/{room.id}/history/?since=3")).json()
    assert at_head["ops"] == []


@pytest.mark.parametrize("since", ["-1", "1.5", "abc", "4", "", "1e2"])
async def test_bad_since_is_400(room, async_client, since):
    await make_changes(room.id)
    response = await async_client.get(f"/rooms/{room.id}/history?since={since}")
    assert response.status_code == 400
    assert "error" in response.json()


async def test_history_of_unknown_or_malformed_room(async_client):
    assert (await async_client.get("/rooms/nope/history")).status_code == 404
    assert (await async_client.get("/rooms/" + "x" * 65 + "/history")).status_code == 400


async def test_a_failed_commit_is_not_acked_not_broadcast_and_uses_no_version(room):
    watcher = Client(f"/ws/{room.id}?mode=ops")
    writer = Client(f"/ws/{room.id}?mode=ops&client=writer-client")
    await watcher.connect()
    await writer.connect()
    await set_op_insert_failure(enabled=True)
    try:
        await writer.send({"type": "op", "version": 0, "seq": 1, "op": ["lost?"]})
        assert await writer.closed_with() == 4500  # no ack: the client will resubmit
    finally:
        await set_op_insert_failure(enabled=False)
    await watcher.next_is_pong()  # no broadcast reached the others
    assert await Op.objects.filter(room_id=room.id).acount() == 0
    assert (await document.Room.objects.aget(id=room.id)).version == 0
    # The resubmitted op (same seq) then commits as version 1, not 2.
    secret = writer.init["client_secret"]
    retry = Client(f"/ws/{room.id}?mode=ops&client=writer-client&client_secret={secret}&version=0")
    await retry.connect()
    assert retry.init["ops"] == []
    ack = await retry.submit({"type": "op", "version": 0, "seq": 1, "op": ["lost?"]})
    assert ack.items() >= {"type": "ack", "version": 1, "seq": 1}.items()
    assert "duplicate" not in ack
    await watcher.close()
    await retry.close()


async def set_op_insert_failure(*, enabled: bool) -> None:
    """A real database failure on the Op insert, injected with a trigger."""
    from channels.db import database_sync_to_async

    def toggle() -> None:
        with connection.cursor() as cursor:
            if enabled:
                cursor.execute(
                    "CREATE TRIGGER fail_op_insert BEFORE INSERT ON rooms_op "
                    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
                )
            else:
                cursor.execute("DROP TRIGGER IF EXISTS fail_op_insert")

    await database_sync_to_async(toggle)()
