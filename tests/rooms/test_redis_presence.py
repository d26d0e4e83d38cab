"""RedisPresence against a real Redis: the registry behind `users`, `join` and `leave` when
several server processes share rooms (docs/protocol.md section 8; rooms/presence.py).

Two RedisPresence instances stand for two server processes. Time is frozen by replacing
`rooms.presence.time` with an object whose `time()` returns a chosen instant, so expiry is
tested without waiting for it. Every test uses a room id of its own and deletes its keys.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from types import SimpleNamespace

import pytest

from rooms import presence as presence_module
from rooms.presence import RedisPresence
from tests.e2e.services import redis_service  # noqa: F401  (fixture)

pytestmark = pytest.mark.services

TTL = presence_module.PRESENCE_TTL_S


@pytest.fixture
def room_id(redis_service) -> str:  # noqa: F811
    room = f"test-presence-{secrets.token_urlsafe(12)}"
    yield room
    import redis

    client = redis.Redis.from_url(redis_service)
    try:
        client.delete(*RedisPresence._keys(room))
    finally:
        client.close()


@pytest.fixture
async def processes(redis_service):  # noqa: F811
    """Two presences, as two server processes would hold them."""
    made = [RedisPresence(redis_service), RedisPresence(redis_service)]
    yield made
    for one in made:
        if one._client is not None:
            await one._client.aclose()


@pytest.fixture
def clock(monkeypatch):
    """freeze(t): from now on rooms.presence reads `t` as the current time."""

    def freeze(at: float) -> None:
        monkeypatch.setattr(presence_module, "time", SimpleNamespace(time=lambda: at))

    return freeze


def ids(users: list[dict]) -> list[str]:
    return [user["id"] for user in users]


async def enter(presence: RedisPresence, room: str, user: str, name: str | None = None):
    return await presence.enter(room, user_id=user, name=name or f"name-{user}", color="#e6194b")


# -- enter, rename, leave, users ---------------------------------------------------------------


async def test_enter_lists_users_in_arrival_order_with_public_fields_only(processes, room_id):
    one, two = processes
    assert (await enter(one, room_id, "alice")).users == [
        {"id": "alice", "name": "name-alice", "color": "#e6194b"}
    ]
    users = (await enter(two, room_id, "bob")).users
    assert users == [
        {"id": "alice", "name": "name-alice", "color": "#e6194b"},
        {"id": "bob", "name": "name-bob", "color": "#e6194b"},
    ]
    # Every process sees the same list.
    assert await one.users(room_id) == users
    assert await two.users(room_id) == users


async def test_rooms_are_separate(processes, room_id):
    one, _ = processes
    other_room = f"{room_id}-other"
    try:
        await enter(one, room_id, "alice")
        await enter(one, other_room, "bob")
        assert ids(await one.users(room_id)) == ["alice"]
        assert ids(await one.users(other_room)) == ["bob"]
    finally:
        await one._redis().delete(*RedisPresence._keys(other_room))


async def test_rename_changes_the_name_everywhere_and_nothing_else(processes, room_id):
    one, two = processes
    await enter(one, room_id, "alice")
    await enter(two, room_id, "bob")
    assert await one.rename(room_id, user_id="alice", name="Alice B.") is not None
    users = await one.users(room_id)
    assert users == [
        {"id": "alice", "name": "Alice B.", "color": "#e6194b"},
        {"id": "bob", "name": "name-bob", "color": "#e6194b"},
    ]
    assert await two.users(room_id) == users


async def test_rename_of_an_absent_user_adds_nobody(processes, room_id):
    one, _ = processes
    await enter(one, room_id, "alice")
    assert await one.rename(room_id, user_id="ghost", name="boo") is None
    assert ids(await one.users(room_id)) == ["alice"]


async def test_leave_removes_once_and_returns_the_others(processes, room_id):
    one, two = processes
    await enter(one, room_id, "alice")
    await enter(two, room_id, "bob")
    assert (await one.leave(room_id, user_id="alice")).count == 1
    assert await one.leave(room_id, user_id="alice") is None
    assert ids(await two.users(room_id)) == ["bob"]
    assert (await two.leave(room_id, user_id="bob")).count == 0
    assert await one.users(room_id) == []


async def test_every_change_takes_the_next_number_of_the_rooms_sequence(processes, room_id):
    """Entries, renames and leaves of one room are numbered in the order Redis made them, on
    whichever process: a connection's own number tells which news it has seen."""
    one, two = processes
    alice = await enter(one, room_id, "alice")
    bob = await enter(two, room_id, "bob")
    renamed = await one.rename(room_id, user_id="alice", name="A")
    left = await two.leave(room_id, user_id="bob")
    assert [alice.seq, bob.seq, renamed.seq, left.seq] == list(range(alice.seq, alice.seq + 4))
    assert (alice.count, bob.count, renamed.count, left.count) == (1, 2, 2, 1)


async def test_entering_a_full_room_is_refused_across_processes(processes, room_id):
    one, two = processes
    await enter(one, room_id, "alice")
    assert await two.enter(room_id, user_id="bob", name="b", color="#e6194b", limit=2)
    assert await one.enter(room_id, user_id="carol", name="c", color="#e6194b", limit=2) is None
    assert ids(await two.users(room_id)) == ["alice", "bob"]
    await one.leave(room_id, user_id="alice")
    assert await one.enter(room_id, user_id="carol", name="c", color="#e6194b", limit=2)


async def test_concurrent_entries_are_capped_exactly(processes, room_id):
    one, two = processes
    entries = await asyncio.gather(
        *(
            (one, two)[number % 2].enter(
                room_id, user_id=f"user{number}", name="n", color="#e6194b", limit=5
            )
            for number in range(20)
        )
    )
    assert sum(entry is not None for entry in entries) == 5
    assert len(await one.users(room_id)) == 5


async def test_concurrent_leaves_of_one_user_remove_it_exactly_once(processes, room_id):
    one, two = processes
    for number in range(20):
        user = f"user{number}"
        await enter(one, room_id, user)
        results = await asyncio.gather(
            one.leave(room_id, user_id=user), two.leave(room_id, user_id=user)
        )
        assert sorted(left is not None for left in results) == [False, True], (user, results)
        assert user not in ids(await one.users(room_id))


async def test_keys_expire_eventually_so_abandoned_rooms_clean_up(processes, room_id):
    one, _ = processes
    await enter(one, room_id, "alice")
    for key in RedisPresence._keys(room_id):
        assert 0 < await one._redis().ttl(key) <= RedisPresence.KEY_TTL_S


# -- cursors -----------------------------------------------------------------------------------


async def test_cursors_of_present_users_are_shared_between_processes(processes, room_id):
    one, two = processes
    await enter(one, room_id, "alice")
    await enter(two, room_id, "bob")
    assert await two.cursors(room_id) == []
    await one.set_cursor(room_id, user_id="alice", anchor=1, head=4, version=7)
    assert await two.cursors(room_id) == [{"user": "alice", "anchor": 1, "head": 4, "version": 7}]
    await one.set_cursor(room_id, user_id="alice", anchor=2, head=2, version=8)
    await two.set_cursor(room_id, user_id="bob", anchor=0, head=3, version=8)
    assert await one.cursors(room_id) == [
        {"user": "alice", "anchor": 2, "head": 2, "version": 8},
        {"user": "bob", "anchor": 0, "head": 3, "version": 8},
    ]
    # A rename keeps the cursor; a leave takes it away.
    await one.rename(room_id, user_id="alice", name="A")
    assert len(await two.cursors(room_id)) == 2
    await one.leave(room_id, user_id="alice")
    assert await two.cursors(room_id) == [{"user": "bob", "anchor": 0, "head": 3, "version": 8}]


async def test_cursor_of_an_absent_user_is_not_stored(processes, room_id):
    one, _ = processes
    await one.set_cursor(room_id, user_id="ghost", anchor=0, head=0, version=0)
    assert await one.cursors(room_id) == []
    assert await one.users(room_id) == []


# -- expiry and heartbeat ----------------------------------------------------------------------


async def test_expired_entries_are_hidden_then_taken_exactly_once(processes, room_id, clock):
    """A process died with alice and bob connected; carol's process lives and heartbeats.
    Two surviving processes sweep at once: each dead user is taken by exactly one of them."""
    dead, live = processes
    survivor = RedisPresence(dead.url)  # a third process, racing `live` for the sweep
    try:
        await enter(dead, room_id, "alice")
        await enter(dead, room_id, "bob")
        await enter(live, room_id, "carol")
        await live.set_cursor(room_id, user_id="carol", anchor=0, head=0, version=0)
        await dead.set_cursor(room_id, user_id="alice", anchor=0, head=0, version=0)

        later = time.time() + TTL + 1
        clock(later)
        await live.heartbeat({room_id: {"carol"}})  # at the frozen instant: carol stays
        # Not yet swept, but no longer listed: a dead process's users vanish at the TTL.
        assert ids(await live.users(room_id)) == ["carol"]
        assert [c["user"] for c in await live.cursors(room_id)] == ["carol"]

        taken = await asyncio.gather(live.expired([room_id]), survivor.expired([room_id]))
        all_taken = [user["id"] for batch in taken for _, user, _ in batch]
        assert sorted(all_taken) == ["alice", "bob"], taken
        for batch in taken:
            for room, user, _ in batch:
                assert room == room_id
                assert user == {"id": user["id"], "name": f"name-{user['id']}", "color": "#e6194b"}
        # Nothing is taken twice, and a late leave of a taken user announces nothing.
        assert await live.expired([room_id]) == []
        assert await survivor.expired([room_id]) == []
        assert await dead.leave(room_id, user_id="alice") is None
        assert ids(await dead.users(room_id)) == ["carol"]
    finally:
        if survivor._client is not None:
            await survivor._client.aclose()


async def test_expired_only_sweeps_the_rooms_asked_for(processes, room_id, clock):
    one, two = processes
    await enter(one, room_id, "alice")
    clock(time.time() + TTL + 1)
    assert await two.expired([f"{room_id}-elsewhere"]) == []
    assert [user["id"] for _, user, _ in await two.expired([room_id])] == ["alice"]


async def test_heartbeat_keeps_entries_alive_past_the_ttl(processes, room_id, clock):
    one, two = processes
    start = time.time()
    await enter(one, room_id, "alice")
    await enter(two, room_id, "bob")
    # Heartbeats come every TTL/3: alice's process keeps beating, bob's stopped.
    for beat in (1, 2, 3, 4, 5, 6):
        clock(start + beat * TTL / 3)
        await one.heartbeat({room_id: {"alice"}})
    clock(start + 2 * TTL)
    assert ids(await two.users(room_id)) == ["alice"]
    assert [user["id"] for _, user, _ in await two.expired([room_id])] == ["bob"]
    assert ids(await one.users(room_id)) == ["alice"]


async def test_a_late_heartbeat_does_not_bring_back_a_user_who_left_or_expired(
    processes, room_id, clock
):
    one, two = processes
    start = time.time()
    await enter(one, room_id, "alice")
    await enter(one, room_id, "bob")
    await one.leave(room_id, user_id="alice")
    clock(start + TTL + 1)
    assert [user["id"] for _, user, _ in await two.expired([room_id])] == ["bob"]
    await one.heartbeat({room_id: {"alice", "bob"}})
    assert await two.users(room_id) == []
    assert await two.expired([room_id]) == []


async def test_leave_racing_the_sweep_is_announced_exactly_once(processes, room_id, clock):
    """A process closes a connection just as another sweeps its expired entry."""
    one, two = processes
    start = time.time()
    users = [f"user{number}" for number in range(20)]
    for user in users:
        await enter(one, room_id, user)
    clock(start + TTL + 1)
    results = await asyncio.gather(
        two.expired([room_id]), *(one.leave(room_id, user_id=user) for user in users)
    )
    swept = [user["id"] for _, user, _ in results[0]]
    left = [user for user, change in zip(users, results[1:], strict=True) if change is not None]
    assert sorted(swept + left) == sorted(users), (swept, left)
