"""The text and authorship at any version, read from the copies kept every SNAPSHOT_EVERY changes
and the op log after them (rooms/history/past.py), against replaying the whole op log."""

from __future__ import annotations

import random

import pytest
from channels.db import database_sync_to_async

from rooms import document, ot
from rooms.history.authorship import Authorship
from rooms.history.past import past_at, version_at_time, version_times
from rooms.live import live_rooms
from rooms.models import Op, Snapshot
from tests.rooms.test_authorship import random_op

pytestmark = pytest.mark.django_db(transaction=True)

SNAPSHOT_EVERY = 7  # small, so that short histories cross many copies


@pytest.fixture(autouse=True)
def snapshot_every(monkeypatch):
    monkeypatch.setattr(document, "SNAPSHOT_EVERY", SNAPSHOT_EVERY)


def replayed(room_id: str, initial: str, version: int) -> str:
    """The text at `version` the long way: every op from version 0."""
    text = initial
    for op in (
        Op.objects.filter(room_id=room_id, version__lte=version)
        .order_by("version")
        .values_list("op", flat=True)
    ):
        text = ot.apply(text, op)
    return text


async def random_history(seed: int, changes: int) -> tuple[str, str, dict[int, dict]]:
    """A room edited `changes` times by three clients, in ops and as whole texts (text mode),
    from random base versions; returns (room id, initial text, {version: authorship encoding}
    as the live room had it)."""
    rng = random.Random(seed)
    initial = rng.choice(["", "def f():\n    pass\n", "a\nb\n"])
    room = await database_sync_to_async(document.room_create)(code=initial)
    live = await live_rooms.acquire(room.id)
    kept = {0: live.authorship.encode()}
    try:
        for _ in range(changes):
            client = rng.choice(["alice-client", "bob-client", "carol-client"])
            base = max(0, live.version - rng.randint(0, 3))
            base_text = await live.text_at(base)
            if rng.random() < 0.2:
                edited = ot.apply(base_text, ot.normalize(random_op(rng, base_text)))
                await document.change_submit(
                    live, base_version=base, text=edited, user=client[:5], client=client
                )
            else:
                op = ot.normalize(random_op(rng, base_text))
                await document.change_submit(
                    live, base_version=base, op=op, user=client[:5], client=client
                )
            kept[live.version] = live.authorship.encode()
    finally:
        live_rooms.release(live)
    return room.id, initial, kept


async def test_the_text_at_any_version_is_the_op_log_replayed_to_it():
    for seed in range(4):
        room_id, initial, _ = await random_history(seed, changes=60)
        assert await Snapshot.objects.filter(room_id=room_id).acount() == 60 // SNAPSHOT_EVERY
        for version in [*random.Random(seed).sample(range(61), 25), 0, 7, 8, 60]:
            past = await database_sync_to_async(past_at)(room_id=room_id, version=version)
            expected = await database_sync_to_async(replayed)(room_id, initial, version)
            assert (past.version, past.text) == (version, expected), (seed, version)


async def test_the_authorship_at_any_version_is_what_the_live_room_kept():
    room_id, _, kept = await random_history(11, changes=50)
    for version in range(51):
        past = await database_sync_to_async(past_at)(
            room_id=room_id, version=version, authorship=True
        )
        assert past.authorship.encode() == kept[version], version


async def test_a_room_loaded_again_has_the_same_authorship_as_before():
    room_id, _, kept = await random_history(5, changes=45)
    live = await live_rooms.acquire(room_id)  # from the database: copy at 42 + 3 ops
    try:
        assert live.version == 45
        assert live.authorship.encode() == kept[45]
        # ... and keeps it up to date like the first one did.
        await document.change_submit(
            live, base_version=45, op=[len(live.text), "!"], user="u", client="dave-client"
        )
        runs = live.authorship.encode()
        assert runs["authors"][runs["runs"][-1]] == "dave-client"
    finally:
        live_rooms.release(live)


async def test_each_copy_holds_the_text_and_authorship_of_its_version():
    room_id, initial, kept = await random_history(3, changes=30)
    async for copy in Snapshot.objects.filter(room_id=room_id):
        assert copy.version % SNAPSHOT_EVERY == 0
        assert copy.code == await database_sync_to_async(replayed)(room_id, initial, copy.version)
        assert Authorship.from_json(copy.authorship).encode() == kept[copy.version]
        op_ts = (
            await Op.objects.filter(room_id=room_id, version=copy.version)
            .values_list("ts", flat=True)
            .aget()
        )
        assert copy.ts == op_ts


async def test_the_version_at_a_time_is_the_last_change_made_by_then():
    room_id, _, _ = await random_history(8, changes=40)
    times = dict(
        [entry async for entry in Op.objects.filter(room_id=room_id).values_list("version", "ts")]
    )
    assert all(times[v] <= times[v + 1] for v in range(1, 40)), "times never go back"
    for version in (1, 6, 7, 8, 20, 21, 39, 40):
        at = times[version]
        found = await database_sync_to_async(version_at_time)(room_id=room_id, ts=at)
        # Several changes may share a millisecond: the last of them.
        assert found == max(v for v, ts in times.items() if ts <= at)
    room_start = (await database_sync_to_async(version_times)(room_id=room_id, head=40))[0]
    assert room_start[0] == 0
    assert await database_sync_to_async(version_at_time)(room_id=room_id, ts=room_start[1]) in (
        0,
        *[v for v, ts in times.items() if ts <= room_start[1]],
    )
    assert (
        await database_sync_to_async(version_at_time)(room_id=room_id, ts=room_start[1] - 1) is None
    )


async def test_the_time_axis_has_a_point_per_copy_and_the_head():
    room_id, _, _ = await random_history(9, changes=30)
    points = await database_sync_to_async(version_times)(room_id=room_id, head=30)
    assert [version for version, _ in points] == [0, 7, 14, 21, 28, 30]
    assert [ts for _, ts in points] == sorted(ts for _, ts in points)
