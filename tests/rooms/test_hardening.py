"""Limits that protect the service: room creation per address, idle connections."""

from __future__ import annotations

import pytest

from rooms import document, views
from rooms.limits import PerAddressLimit
from tests.rooms.wsclient import Client


@pytest.mark.django_db
def test_room_creation_over_the_per_address_limit_is_429(client, monkeypatch):
    monkeypatch.setattr(views, "room_creation_limit", PerAddressLimit(3))
    statuses = [client.get("/rooms/create").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = client.post("/rooms", data="{}", content_type="application/json")
    assert refused.status_code == 429 and "error" in refused.json()
    other_address = client.get("/rooms/create", REMOTE_ADDR="10.9.8.7")
    assert other_address.status_code == 200


@pytest.mark.django_db
def test_room_creation_is_not_limited_by_default(client):
    assert views.room_creation_limit.per_minute == 0
    assert all(client.get("/rooms/create").status_code == 200 for _ in range(50))


def test_per_address_memory_is_bounded(monkeypatch):
    from rooms import limits

    monkeypatch.setattr(limits, "MAX_TRACKED_ADDRESSES", 100)
    limit = PerAddressLimit(10)
    for number in range(1000):
        limit.allow(f"10.0.{number // 256}.{number % 256}")
    assert len(limit.buckets) == 100


@pytest.mark.django_db(transaction=True)
async def test_idle_connection_is_closed_after_the_timeout(settings):
    settings.COLLAB_IDLE_TIMEOUT_S = 0.05
    from channels.db import database_sync_to_async

    room = await database_sync_to_async(document.room_create)()
    idle = Client(f"/ws/{room.id}")
    await idle.connect()
    assert await idle.closed_with() == 4408


@pytest.mark.django_db(transaction=True)
async def test_a_connection_that_keeps_talking_is_not_closed_as_idle(settings):
    settings.COLLAB_IDLE_TIMEOUT_S = 0.4
    import asyncio

    from channels.db import database_sync_to_async

    room = await database_sync_to_async(document.room_create)()
    talker = Client(f"/ws/{room.id}")
    quiet = Client(f"/ws/{room.id}")
    await talker.connect()
    await quiet.connect()
    # The quiet one is closed after the timeout; meanwhile the talker pings 10 times a second.
    closed = asyncio.ensure_future(quiet.closed_with())
    while not closed.done():
        await talker.next_is_pong()
        await asyncio.sleep(0.1)
    assert closed.result() == 4408
    for _ in range(5):  # a full timeout more, still served
        await talker.next_is_pong()
        await asyncio.sleep(0.1)
    await talker.close()
