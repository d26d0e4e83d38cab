"""The op log is what a commit writes; Room.code gets a copy of the whole text every
SNAPSHOT_EVERY changes, and every reader still sees the text at the head."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import document
from rooms.live import LiveRoom, live_rooms
from rooms.models import Room

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def snapshot_every_3(monkeypatch):
    monkeypatch.setattr(document, "SNAPSHOT_EVERY", 3)


async def type_letters(live: LiveRoom, letters: str) -> None:
    for letter in letters:
        await document.change_submit(
            live, base_version=live.version, op=[len(live.text), letter], user="u", client="c"
        )


async def stored(room_id: str) -> tuple[str, int, int]:
    room = await Room.objects.aget(id=room_id)
    return room.code, room.code_version, room.version


async def test_the_room_keeps_a_copy_of_its_text_every_snapshot_every_changes(snapshot_every_3):
    room = await database_sync_to_async(document.room_create)(code="> ")
    live = await live_rooms.acquire(room.id)
    try:
        await type_letters(live, "ab")
        assert await stored(room.id) == ("> ", 0, 2)  # the two ops are in the log only
        await type_letters(live, "c")
        assert await stored(room.id) == ("> abc", 3, 3)
        await type_letters(live, "de")
        assert await stored(room.id) == ("> abc", 3, 5)
    finally:
        live_rooms.release(live)


async def test_every_reader_sees_the_text_at_the_head_between_copies(snapshot_every_3, client):
    room = await database_sync_to_async(document.room_create)(code="> ")
    live = await live_rooms.acquire(room.id)
    try:
        await type_letters(live, "abcde")
    finally:
        live_rooms.release(live)
    assert await stored(room.id) == ("> abc", 3, 5)
    assert await joined_over_rest(client, room.id) == ("> abcde", 5)

    reloaded = await live_rooms.acquire(room.id)  # from the database: copy + 2 ops
    try:
        assert (reloaded.text, reloaded.version, reloaded.code_version) == ("> abcde", 5, 3)
        await type_letters(reloaded, "f")  # 6 - 3 = 3 changes past the copy: a new one
        assert await stored(room.id) == ("> abcdef", 6, 6)
    finally:
        live_rooms.release(reloaded)


async def joined_over_rest(client, room_id: str) -> tuple[str, int]:
    body = (await database_sync_to_async(client.get)(f"/rooms/join?id={room_id}")).json()
    return body["code"], body["version"]


@pytest.mark.parametrize("letters", ["", "ab", "abcde", "abcdef"])
async def test_a_room_loaded_from_the_database_is_the_room_that_was_live(
    snapshot_every_3, letters
):
    # Version 0 (no copy: the initial text, nobody's), ops only, a copy and ops after it, and
    # a copy at the head: the load (plain SQL, rooms/store.py) rebuilds the same head.
    room = await database_sync_to_async(document.room_create)(code="> \n", name="n")
    live = await live_rooms.acquire(room.id)
    try:
        await type_letters(live, letters)
        if letters:
            await document.change_submit(
                live, base_version=live.version, op=[1, "\n#"], user="u", client="d"
            )
        kept = (live.text, live.version, live.code_version, live.head_ts)
        authorship = live.authorship.encode()
    finally:
        live_rooms.release(live)
    reloaded = await live_rooms.acquire(room.id)
    try:
        assert (
            reloaded.text,
            reloaded.version,
            reloaded.code_version,
            reloaded.head_ts,
        ) == kept
        assert reloaded.authorship.encode() == authorship
        # As stored (the monkeypatched copy interval is document's alone, so the live count
        # differs here by the copy's size).
        assert reloaded.history_bytes == (await Room.objects.aget(id=room.id)).history_bytes
        assert (reloaded.name, reloaded.private, reloaded.link_access) == ("n", False, "edit")
    finally:
        live_rooms.release(reloaded)
    assert await live_rooms.acquire("no-such-room") is None
