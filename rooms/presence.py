"""Who is in each room: the registry behind `users`, `join` and `leave`.

Channels groups cannot be listed and a consumer's `disconnect()` is not guaranteed to run, so
presence is a registry of its own. Each entry belongs to one connection and carries an expiry
that the owning process pushes forward while the connection lives (`PRESENCE_HEARTBEAT_S`); an
entry whose connection stopped being seen expires and its room is told the user left. See
docs/protocol.md for the messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from rooms.groups import group_name

logger = logging.getLogger(__name__)

# How long an entry lives unless its process confirms it again: the bound on how long a user of
# a killed process stays listed. Heartbeats come three times per TTL, so one late heartbeat is
# not a leave.
PRESENCE_TTL_S = float(getattr(settings, "COLLAB_PRESENCE_TTL_S", 15.0))
PRESENCE_HEARTBEAT_S = PRESENCE_TTL_S / 3

# Distinct, readable on light and dark backgrounds.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#9a6324",
    "#469990",
    "#800000",
    "#808000",
    "#000075",
)


def color_for(client_id: str) -> str:
    """A stable colour per client id: the same on every process and across reconnects."""
    digest = hashlib.blake2s(client_id.encode(), digest_size=2).digest()
    return PALETTE[int.from_bytes(digest, "big") % len(PALETTE)]


@dataclass(slots=True)
class Member:
    user_id: str
    name: str
    color: str
    expires_at: float
    cursor: tuple[int, int, int] | None = None  # anchor, head, version

    def public(self) -> dict[str, Any]:
        return {"id": self.user_id, "name": self.name, "color": self.color}


class LocalPresence:
    """Presence for one process: the embedded default, where every connection is local."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Member]] = {}

    async def enter(self, room_id: str, *, user_id: str, name: str, color: str) -> list[dict]:
        members = self._rooms.setdefault(room_id, {})
        members[user_id] = Member(user_id, name, color, time.time() + PRESENCE_TTL_S)
        return self._public(members)

    async def rename(self, room_id: str, *, user_id: str, name: str) -> list[dict]:
        members = self._rooms.get(room_id, {})
        if user_id in members:
            members[user_id].name = name
        return self._public(members)

    async def leave(self, room_id: str, *, user_id: str) -> tuple[bool, list[dict]]:
        """Remove a user; says whether this call removed it (so one leave is announced)."""
        members = self._rooms.get(room_id, {})
        removed = members.pop(user_id, None) is not None
        if not members:
            self._rooms.pop(room_id, None)
        return removed, self._public(members)

    async def users(self, room_id: str) -> list[dict]:
        return self._public(self._rooms.get(room_id, {}))

    async def set_cursor(
        self, room_id: str, *, user_id: str, anchor: int, head: int, version: int
    ) -> None:
        member = self._rooms.get(room_id, {}).get(user_id)
        if member is not None:
            member.cursor = (anchor, head, version)

    async def cursors(self, room_id: str) -> list[dict]:
        """Each connected user's last cursor, at the version it was made."""
        return [
            {"user": m.user_id, "anchor": m.cursor[0], "head": m.cursor[1], "version": m.cursor[2]}
            for m in self._rooms.get(room_id, {}).values()
            if m.cursor is not None
        ]

    async def heartbeat(self, alive: dict[str, set[str]]) -> None:
        """Push forward the expiry of the connections this process still serves."""
        expires_at = time.time() + PRESENCE_TTL_S
        for room_id, user_ids in alive.items():
            for user_id in user_ids:
                member = self._rooms.get(room_id, {}).get(user_id)
                if member is not None:
                    member.expires_at = expires_at

    async def expired(self, room_ids: Iterable[str]) -> list[tuple[str, dict]]:
        """Remove and return (room id, user) for every entry no process has confirmed.

        One process holds every entry here, so every room is swept."""
        now = time.time()
        gone = []
        for room_id, members in list(self._rooms.items()):
            for user_id, member in list(members.items()):
                if member.expires_at < now:
                    del members[user_id]
                    gone.append((room_id, member.public()))
            if not members:
                del self._rooms[room_id]
        return gone

    @staticmethod
    def _public(members: dict[str, Member]) -> list[dict]:
        return [member.public() for member in members.values()]


class RedisPresence:
    """Presence shared by every process through Redis (when REDIS_URL is set).

    Per room, a hash holds each user's public entry and cursor, and a sorted set holds each
    user's expiry time (Unix seconds; processes share a clock source). An entry is listed while
    its expiry is in the future; taking expired entries is one atomic script, so exactly one
    process announces each leave.
    """

    # Keys outlive their last member by a day at most, so abandoned rooms clean themselves up.
    KEY_TTL_S = 86_400

    _LIVE = """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
    if #ids == 0 then return {} end
    return redis.call('HMGET', KEYS[1], unpack(ids))
    """
    _TAKE_EXPIRED = """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
    local gone = {}
    for _, id in ipairs(ids) do
      redis.call('ZREM', KEYS[2], id)
      local entry = redis.call('HGET', KEYS[1], id)
      redis.call('HDEL', KEYS[1], id)
      if entry then table.insert(gone, entry) end
    end
    return gone
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _redis(self) -> Any:
        # One client per event loop: redis.asyncio connections belong to the loop that made them.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(self.url, decode_responses=True)
            self._loop = loop
        return self._client

    @staticmethod
    def _keys(room_id: str) -> tuple[str, str]:
        return f"collab:presence:{room_id}:members", f"collab:presence:{room_id}:alive"

    async def enter(self, room_id: str, *, user_id: str, name: str, color: str) -> list[dict]:
        members, alive = self._keys(room_id)
        entry = {"id": user_id, "name": name, "color": color, "since": time.time()}
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hset(members, user_id, json.dumps(entry))
            pipe.zadd(alive, {user_id: time.time() + PRESENCE_TTL_S})
            pipe.expire(members, self.KEY_TTL_S)
            pipe.expire(alive, self.KEY_TTL_S)
            await pipe.execute()
        return await self.users(room_id)

    async def rename(self, room_id: str, *, user_id: str, name: str) -> list[dict]:
        await self._update(room_id, user_id, name=name)
        return await self.users(room_id)

    async def leave(self, room_id: str, *, user_id: str) -> tuple[bool, list[dict]]:
        members, alive = self._keys(room_id)
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.zrem(alive, user_id)
            pipe.hdel(members, user_id)
            removed, _ = await pipe.execute()
        return bool(removed), await self.users(room_id)

    async def users(self, room_id: str) -> list[dict]:
        return [
            {"id": e["id"], "name": e["name"], "color": e["color"]}
            for e in await self._live_entries(room_id)
        ]

    async def set_cursor(
        self, room_id: str, *, user_id: str, anchor: int, head: int, version: int
    ) -> None:
        await self._update(room_id, user_id, cursor=[anchor, head, version])

    async def cursors(self, room_id: str) -> list[dict]:
        return [
            {"user": e["id"], "anchor": c[0], "head": c[1], "version": c[2]}
            for e in await self._live_entries(room_id)
            if (c := e.get("cursor"))
        ]

    async def heartbeat(self, alive: dict[str, set[str]]) -> None:
        expires_at = time.time() + PRESENCE_TTL_S
        async with self._redis().pipeline(transaction=False) as pipe:
            for room_id, user_ids in alive.items():
                if user_ids:
                    pipe.zadd(self._keys(room_id)[1], dict.fromkeys(user_ids, expires_at), xx=True)
            await pipe.execute()

    async def expired(self, room_ids: Iterable[str]) -> list[tuple[str, dict]]:
        """Take the expired entries of the rooms this process serves (their users need the
        leave); entries of rooms nobody serves stay hidden until someone joins."""
        gone = []
        for room_id in room_ids:
            for raw in await self._redis().eval(
                self._TAKE_EXPIRED, 2, *self._keys(room_id), time.time()
            ):
                entry = json.loads(raw)
                gone.append(
                    (room_id, {"id": entry["id"], "name": entry["name"], "color": entry["color"]})
                )
        return gone

    async def _live_entries(self, room_id: str) -> list[dict]:
        raws = await self._redis().eval(self._LIVE, 2, *self._keys(room_id), time.time())
        entries = [json.loads(raw) for raw in raws if raw]
        return sorted(entries, key=lambda e: e["since"])

    async def _update(self, room_id: str, user_id: str, **changes: Any) -> None:
        # Only this user's own connection writes its entry, so read-modify-write is safe.
        members, _ = self._keys(room_id)
        raw = await self._redis().hget(members, user_id)
        if raw is not None:
            await self._redis().hset(members, user_id, json.dumps({**json.loads(raw), **changes}))


# At most ~20 cursor broadcasts a second per user: smooth to watch, never a flood.
CURSOR_INTERVAL_S = 0.05
# A user who said "typing" and then neither typed nor said so again has stopped.
TYPING_TTL_S = 5.0


class CursorThrottle:
    """Coalesces one connection's cursor moves: the first is sent at once, later ones at most
    once per interval, and always the latest position (intermediate ones are dropped)."""

    def __init__(self, publish: Callable[[tuple[int, int, int]], Awaitable[None]]) -> None:
        self.publish = publish
        self.latest: tuple[int, int, int] | None = None
        self.sent_at = float("-inf")
        self.timer: asyncio.TimerHandle | None = None

    def set(self, cursor: tuple[int, int, int]) -> Awaitable[None] | None:
        """Take a new position. When it may go out now, returns its publication for the caller
        to await: it then reaches the others before the connection's next message is handled
        (a leave right behind it would otherwise stop it). Else it is sent when the interval is
        over."""
        self.latest = cursor
        if self.timer is not None:
            return None
        loop = asyncio.get_running_loop()
        wait = self.sent_at + CURSOR_INTERVAL_S - loop.time()
        if wait <= 0:
            self.latest = None
            self.sent_at = loop.time()
            return self.publish(cursor)
        self.timer = loop.call_later(wait, self._send_latest)
        return None

    def _send_latest(self) -> None:
        self.timer = None
        cursor, self.latest = self.latest, None
        if cursor is not None:
            self.sent_at = asyncio.get_running_loop().time()
            _spawn(self.publish(cursor))

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class TypingState:
    """One connection's typing flag: announced when it changes, expired by the server."""

    def __init__(self, publish: Callable[[bool], Awaitable[None]]) -> None:
        self.publish = publish
        self.typing = False
        self.timer: asyncio.TimerHandle | None = None

    async def set(self, typing: bool) -> None:
        if typing:
            self._arm()
            if not self.typing:
                self.typing = True
                await self.publish(True)
        else:
            await self.stop()

    def edited(self) -> None:
        """An accepted edit counts as typing: push the expiry back."""
        if self.typing:
            self._arm()

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.typing:
            self.typing = False
            await self.publish(False)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(TYPING_TTL_S, self._expire)

    def _expire(self) -> None:
        self.timer = None
        _spawn(self.stop())


_background: set[asyncio.Task] = set()


def _spawn(coroutine: Awaitable[None]) -> None:
    """Run a timer's follow-up on the loop, keeping a reference so it is not collected."""
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


class PresenceKeeper:
    """This process's side of presence: which users it serves, and the heartbeat that says so."""

    def __init__(self) -> None:
        self.local: dict[str, set[str]] = {}
        self._task: asyncio.Task | None = None

    def add(self, room_id: str, user_id: str) -> None:
        self.local.setdefault(room_id, set()).add(user_id)
        self._ensure_running()

    def discard(self, room_id: str, user_id: str) -> None:
        users = self.local.get(room_id)
        if users is not None:
            users.discard(user_id)
            if not users:
                del self.local[room_id]

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="presence-keeper")

    async def _run(self) -> None:
        # Imported here: the channel layer is configured by settings, after this module loads.
        from channels.layers import get_channel_layer

        while True:
            await asyncio.sleep(PRESENCE_HEARTBEAT_S)
            try:
                await presence.heartbeat(self.local)
                for room_id, user in await presence.expired(list(self.local)):
                    users = await presence.users(room_id)
                    await get_channel_layer().group_send(
                        group_name(room_id),
                        {"type": "room.leave", "user": user, "users": users, "sender": None},
                    )
            except Exception:
                logger.exception("presence heartbeat failed; retrying")


keeper = PresenceKeeper()
presence: LocalPresence | RedisPresence = (
    RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else LocalPresence()
)


def presence_reset() -> None:
    """Forget all presence (tests run each case on a fresh event loop)."""
    if isinstance(presence, LocalPresence):
        presence.__init__()
    else:
        presence._client = None
    keeper.__init__()
