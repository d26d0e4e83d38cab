"""Group commit: changes arriving together share a transaction; each lands or fails alone."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from rooms import document, store
from rooms.live import LiveRoom, live_rooms
from rooms.models import Op, Room

pytestmark = pytest.mark.django_db(transaction=True)


async def acquired_rooms(count: int) -> list[LiveRoom]:
    rooms = [await database_sync_to_async(document.room_create)() for _ in range(count)]
    return [await live_rooms.acquire(room.id) for room in rooms]


async def test_concurrent_changes_of_many_rooms_share_transactions(monkeypatch):
    batches: list[int] = []
    original = store._commit_batch

    async def counting(batch):
        batches.append(len(batch))
        return await original(batch)

    monkeypatch.setattr(store, "_commit_batch", counting)
    lives = await acquired_rooms(10)
    results = await asyncio.gather(
        *(
            document.change_submit(live, base_version=0, op=["x"], user="u", client="c")
            for live in lives
        )
    )
    assert [r.version for r in results] == [1] * 10
    assert sum(batches) == 10 and len(batches) < 10
    assert await Op.objects.acount() == 10
    rooms = [room async for room in Room.objects.filter(version=1)]
    codes = [await database_sync_to_async(store.room_code)(room) for room in rooms]
    assert codes == ["x"] * 10


async def test_a_change_that_lost_its_race_does_not_sink_the_others_in_its_batch():
    lives = await acquired_rooms(3)
    stale = lives[0]
    # Another process committed version 1 of the first room behind this process's back.
    await database_sync_to_async(_commit_elsewhere)(stale.room_id)
    results = await asyncio.gather(
        *(
            document.change_submit(live, base_version=0, op=["mine "], user="u", client="c")
            for live in lives
        )
    )
    assert [r.version for r in results] == [2, 1, 1]  # the stale one caught up and retried
    assert results[0].text == "mine theirs"
    assert await Op.objects.acount() == 4


def _commit_elsewhere(room_id: str) -> None:
    Op.objects.create(room_id=room_id, version=1, op=["theirs"], user="o", client="o", ts=0)
    Room.objects.filter(id=room_id).update(code="theirs", version=1)
