"""A room's history size (Room.history_bytes) and its quota (docs/deploying.md, "Memory and
storage budgets"): every commit counts what it adds, in every batch and on every path."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from rooms import document, ot
from rooms.changes import ROW_BYTES, copy_bytes, stored_bytes
from rooms.live import live_rooms
from rooms.models import Op, Room, Snapshot
from rooms.protocol import TOO_LARGE, ProtocolError

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_ops_stored_size_is_its_compact_json_and_a_row():
    # Exact but for escapes (a newline is two bytes in JSON, counted as one).
    for op in ([], ["abc"], [3, {"d": 12}, "é😀"], [123456, "x", {"d": 1}]):
        encoded = json.dumps(op, ensure_ascii=False, separators=(",", ":")).encode()
        assert ot.encoded_size(op) == len(encoded)
        assert stored_bytes(op) == ROW_BYTES + len(encoded)


async def history(room_id: str) -> tuple[int, int]:
    """(Room.history_bytes, what its op rows and its copies of the text hold)."""
    room = await Room.objects.aget(id=room_id)
    ops = [op async for op in Op.objects.filter(room_id=room_id).values_list("op", flat=True)]
    copies = [
        code
        async for code in Snapshot.objects.filter(room_id=room_id).values_list("code", flat=True)
    ]
    assert copies, "the rounds pass a version that stores a copy of the text"
    return room.history_bytes, sum(map(stored_bytes, ops)) + sum(map(copy_bytes, copies))


async def test_every_commit_adds_its_size_to_the_room_in_batches_and_snapshots_too():
    rooms = [await database_sync_to_async(document.room_create)() for _ in range(3)]
    lives = [await live_rooms.acquire(room.id) for room in rooms]
    for round_number in range(document.SNAPSHOT_EVERY + 2):  # one commit also copies the text
        await asyncio.gather(
            *(
                document.change_submit(
                    live, base_version=None, op=[f"r{round_number};"], user="u", client="c"
                )
                for live in lives
            )
        )
    for live in lives:
        counted, actual = await history(live.room_id)
        assert counted == actual == live.history_bytes
        assert counted > 0


async def test_a_change_past_the_history_quota_is_refused_and_changes_nothing(settings):
    room = await database_sync_to_async(document.room_create)(code="hi")
    live = await live_rooms.acquire(room.id)
    settings.COLLAB_ROOM_HISTORY_MAX_BYTES = 2 * stored_bytes(["ab"])
    for _ in range(2):
        await document.change_submit(live, base_version=None, op=["ab"], user="u", client="c")
    with pytest.raises(ProtocolError) as refused:
        await document.change_submit(live, base_version=None, op=[], user="u", client="c")
    assert refused.value.code == TOO_LARGE and "history" in refused.value.message
    assert (live.version, live.text) == (2, "ababhi")
    assert await Op.objects.filter(room_id=room.id).acount() == 2


def test_the_migration_counts_the_history_rooms_already_have():
    executor = MigrationExecutor(connection)
    executor.migrate([("rooms", "0007_history")])
    old_apps = executor.loader.project_state([("rooms", "0007_history")]).apps
    OldRoom, OldOp = old_apps.get_model("rooms", "Room"), old_apps.get_model("rooms", "Op")
    OldSnapshot = old_apps.get_model("rooms", "Snapshot")
    room = OldRoom.objects.create(id="legacy", version=2)
    ops = [["hello"], [5, {"d": 1}, "é"]]
    for version, op in enumerate(ops, start=1):
        OldOp.objects.create(room=room, version=version, op=op, user="u", client="c", ts=0)
    OldSnapshot.objects.create(room=room, version=2, ts=0, code="hellé", authorship="[]")
    executor = MigrationExecutor(connection)
    executor.migrate([("rooms", "0008_room_history_bytes")])
    counted = sum(stored_bytes(op) for op in ops) + len("hellé".encode())
    assert Room.objects.get(id="legacy").history_bytes == counted
