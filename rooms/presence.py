"""Who is in each room: the registry behind `users`, `join` and `leave`.

Channels groups cannot be listed and a consumer's `disconnect()` is not guaranteed to run, so
presence is a registry of its own. Each entry belongs to one connection and carries an expiry
that the owning process pushes forward while the connection lives (`PRESENCE_HEARTBEAT_S`); an
entry whose connection stopped being seen expires and its room is told the user left. See
docs/protocol.md (section 8) for the messages.

Every change to a room's presence (an entry, a rename, a leave) takes the next number of the
room's presence sequence, in the same atomic step as the change. A connection's own entry number
says what its `init.users` already showed: an announcement reaches it only if its number is
higher (`presence_news`), so nobody hears of a user who was listed in their own `init`.

Announcing is split by room size: up to COLLAB_PRESENCE_FULL_LIST_MAX users, each `join` and
`leave` carries the whole list, as it always did; above it, the changes are gathered per room
and process for PRESENCE_BATCH_S and sent as one `presence` delta, so a join costs each member
about the size of one user instead of the whole room (`PresenceBatcher`).
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


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """One change to a room's presence: its number in the room's sequence, and how many users
    the room has after it."""

    seq: int
    count: int


@dataclass(frozen=True, slots=True)
class Entered(PresenceChange):
    """A connection's entry: its change, and the users listed at that moment (itself included)."""

    users: list[dict]


@dataclass(slots=True)
class Member:
    user_id: str
    name: str
    color: str
    expires_at: float
    seq: int = 0
    cursor: tuple[int, int, int] | None = None  # anchor, head, version

    def public(self) -> dict[str, Any]:
        return {"id": self.user_id, "name": self.name, "color": self.color}


class LocalPresence:
    """Presence for one process: the embedded default, where every connection is local."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Member]] = {}
        # One sequence for all rooms of the process: numbers only need to grow within a room,
        # and a room that empties and fills again must not reuse one.
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def enter(
        self, room_id: str, *, user_id: str, name: str, color: str, limit: int = 0
    ) -> Entered | None:
        """Add a user; None when the room already has `limit` users (0: no limit)."""
        members = self._rooms.setdefault(room_id, {})
        if limit and len(members) >= limit:
            if not members:
                del self._rooms[room_id]
            return None
        seq = self._next()
        members[user_id] = Member(user_id, name, color, time.time() + PRESENCE_TTL_S, seq)
        return Entered(seq, len(members), self._public(members))

    async def rename(self, room_id: str, *, user_id: str, name: str) -> PresenceChange | None:
        members = self._rooms.get(room_id, {})
        if user_id not in members:
            return None
        members[user_id].name = name
        return PresenceChange(self._next(), len(members))

    async def leave(self, room_id: str, *, user_id: str) -> PresenceChange | None:
        """Remove a user; None unless this call removed it (so one leave is announced)."""
        members = self._rooms.get(room_id, {})
        removed = members.pop(user_id, None) is not None
        if not members:
            self._rooms.pop(room_id, None)
        return PresenceChange(self._next(), len(members)) if removed else None

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

    async def expired(self, room_ids: Iterable[str]) -> list[tuple[str, dict, PresenceChange]]:
        """Remove and return (room id, user, change) for every entry no process has confirmed.

        One process holds every entry here, so every room is swept."""
        now = time.time()
        gone = []
        for room_id, members in list(self._rooms.items()):
            for user_id, member in list(members.items()):
                if member.expires_at < now:
                    del members[user_id]
                    change = PresenceChange(self._next(), len(members))
                    gone.append((room_id, member.public(), change))
            if not members:
                del self._rooms[room_id]
        return gone

    @staticmethod
    def _public(members: dict[str, Member]) -> list[dict]:
        return [member.public() for member in members.values()]


class RedisPresence:
    """Presence shared by every process through Redis (when REDIS_URL is set).

    Per room, a hash holds each user's public entry, entry number and cursor, a sorted set holds
    each user's expiry time (Unix seconds; processes share a clock source), and a counter gives
    the room's presence sequence. An entry is listed while its expiry is in the future. Every
    change is one atomic script, so exactly one process announces each leave, and a change's
    number and the list an entering user sees agree.
    """

    # Keys outlive their last member by a day at most, so abandoned rooms clean themselves up.
    KEY_TTL_S = 86_400

    _LIVE = """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
    if #ids == 0 then return {} end
    return redis.call('HMGET', KEYS[1], unpack(ids))
    """
    # ARGV: now, user id, entry (JSON), expiry, limit (0: none), key TTL.
    # Returns false when the room is full, else {seq, count, entries...}.
    _ENTER = """
    local count = redis.call('ZCOUNT', KEYS[2], ARGV[1], '+inf')
    local limit = tonumber(ARGV[5])
    if limit > 0 and count >= limit and not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
      return false
    end
    local seq = redis.call('INCR', KEYS[3])
    local entry = cjson.decode(ARGV[3])
    entry['seq'] = seq
    redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(entry))
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
    for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ARGV[6]) end
    local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
    local result = {seq, #ids}
    local entries = redis.call('HMGET', KEYS[1], unpack(ids))
    for _, raw in ipairs(entries) do
      if raw then table.insert(result, raw) end
    end
    return result
    """
    # ARGV: now, user id, fields to change (JSON), 1 to count it as a presence change.
    # Returns false when the user is absent, else {seq, count} (seq 0 when not counted).
    _UPDATE = """
    local raw = redis.call('HGET', KEYS[1], ARGV[2])
    if not raw then return false end
    local entry = cjson.decode(raw)
    for key, value in pairs(cjson.decode(ARGV[3])) do entry[key] = value end
    redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(entry))
    if ARGV[4] ~= '1' then return {0, 0} end
    return {redis.call('INCR', KEYS[3]), redis.call('ZCOUNT', KEYS[2], ARGV[1], '+inf')}
    """
    # ARGV: now, user id. Returns false unless this call removed the user, else {seq, count}.
    _LEAVE = """
    local removed = redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('HDEL', KEYS[1], ARGV[2])
    if removed == 0 then return false end
    return {redis.call('INCR', KEYS[3]), redis.call('ZCOUNT', KEYS[2], ARGV[1], '+inf')}
    """
    # ARGV: now. Returns {entry, seq, count, entry, seq, count, ...}.
    _TAKE_EXPIRED = """
    local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
    local gone = {}
    for _, id in ipairs(ids) do
      redis.call('ZREM', KEYS[2], id)
      local entry = redis.call('HGET', KEYS[1], id)
      redis.call('HDEL', KEYS[1], id)
      if entry then
        table.insert(gone, entry)
        table.insert(gone, redis.call('INCR', KEYS[3]))
        table.insert(gone, redis.call('ZCOUNT', KEYS[2], ARGV[1], '+inf'))
      end
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

            self._client = redis.asyncio.Redis.from_url(
                self.url, decode_responses=True, **settings.REDIS_CONNECTION_OPTIONS
            )
            self._loop = loop
        return self._client

    @staticmethod
    def _keys(room_id: str) -> tuple[str, str, str]:
        prefix = f"collab:presence:{room_id}"
        return f"{prefix}:members", f"{prefix}:alive", f"{prefix}:seq"

    async def _script(self, script: str, room_id: str, *args: Any) -> Any:
        return await self._redis().eval(script, 3, *self._keys(room_id), time.time(), *args)

    async def enter(
        self, room_id: str, *, user_id: str, name: str, color: str, limit: int = 0
    ) -> Entered | None:
        """Add a user; None when the room already has `limit` users (0: no limit). The count is
        shared by every process, so the limit holds across them."""
        entry = json.dumps({"id": user_id, "name": name, "color": color})
        result = await self._script(
            self._ENTER,
            room_id,
            user_id,
            entry,
            time.time() + PRESENCE_TTL_S,
            limit,
            self.KEY_TTL_S,
        )
        if result is None:
            return None
        seq, count, *raws = result
        return Entered(int(seq), int(count), self._public(raws))

    async def rename(self, room_id: str, *, user_id: str, name: str) -> PresenceChange | None:
        result = await self._script(self._UPDATE, room_id, user_id, json.dumps({"name": name}), 1)
        return None if result is None else PresenceChange(int(result[0]), int(result[1]))

    async def leave(self, room_id: str, *, user_id: str) -> PresenceChange | None:
        result = await self._script(self._LEAVE, room_id, user_id)
        return None if result is None else PresenceChange(int(result[0]), int(result[1]))

    async def users(self, room_id: str) -> list[dict]:
        return self._public(await self._live_raws(room_id))

    async def set_cursor(
        self, room_id: str, *, user_id: str, anchor: int, head: int, version: int
    ) -> None:
        await self._script(
            self._UPDATE, room_id, user_id, json.dumps({"cursor": [anchor, head, version]}), 0
        )

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

    async def expired(self, room_ids: Iterable[str]) -> list[tuple[str, dict, PresenceChange]]:
        """Take the expired entries of the rooms this process serves (their users need the
        leave); entries of rooms nobody serves stay hidden until someone joins."""
        gone = []
        for room_id in room_ids:
            result = await self._script(self._TAKE_EXPIRED, room_id)
            for index in range(0, len(result), 3):
                raw, seq, count = result[index : index + 3]
                (user,) = self._public([raw])
                gone.append((room_id, user, PresenceChange(int(seq), int(count))))
        return gone

    async def _live_raws(self, room_id: str) -> list[str | None]:
        members, alive, _ = self._keys(room_id)
        return await self._redis().eval(self._LIVE, 2, members, alive, time.time())

    async def _live_entries(self, room_id: str) -> list[dict]:
        return self._entries(await self._live_raws(room_id))

    @staticmethod
    def _entries(raws: list[str | None]) -> list[dict]:
        # In entry order; entries written before entries had numbers sort first.
        entries = [json.loads(raw) for raw in raws if raw]
        return sorted(entries, key=lambda e: (e.get("seq", 0), e.get("since", 0)))

    @classmethod
    def _public(cls, raws: list[str | None]) -> list[dict]:
        return [{"id": e["id"], "name": e["name"], "color": e["color"]} for e in cls._entries(raws)]


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
        while True:
            await asyncio.sleep(PRESENCE_HEARTBEAT_S)
            try:
                await presence.heartbeat(self.local)
                for room_id, user, change in await presence.expired(list(self.local)):
                    await presence_announce(
                        room_id, kind="leave", user=user, change=change, sender=None
                    )
            except Exception:
                logger.exception("presence heartbeat failed; retrying")


def full_list_max() -> int:
    """Up to this many users, `join` and `leave` carry the whole list (docs/protocol.md 8)."""
    return settings.COLLAB_PRESENCE_FULL_LIST_MAX


# How long a big room's presence changes are gathered before one `presence` message carries
# them: a burst of arrivals costs each member a few frames instead of one per arrival, and a
# join shows up a tenth of a second later at most.
PRESENCE_BATCH_S = 0.1


def _group_send(room_id: str, event: dict[str, Any]) -> Awaitable[None]:
    # Imported here: the channel layer is configured by settings, after this module loads.
    from channels.layers import get_channel_layer

    return get_channel_layer().group_send(group_name(room_id), event)


class PresenceBatcher:
    """A big room's presence changes made in this process, gathered for PRESENCE_BATCH_S and
    sent to the room as one `room.presence` event."""

    def __init__(self) -> None:
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.counts: dict[str, int] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}

    def add(self, room_id: str, change: dict[str, Any], count: int) -> None:
        self.pending.setdefault(room_id, []).append(change)
        self.counts[room_id] = count
        if room_id not in self.timers:
            loop = asyncio.get_running_loop()
            self.timers[room_id] = loop.call_later(
                PRESENCE_BATCH_S, lambda: _spawn(self.flush(room_id))
            )

    async def flush(self, room_id: str) -> None:
        """Send what is gathered for the room now (also before a full-list announcement from
        this process, so the room hears this process's changes in their order)."""
        timer = self.timers.pop(room_id, None)
        if timer is not None:
            timer.cancel()
        changes = self.pending.pop(room_id, None)
        count = self.counts.pop(room_id, 0)
        if changes:
            changes.sort(key=lambda change: change["seq"])
            await _group_send(
                room_id, {"type": "room.presence", "changes": changes, "count": count}
            )


batcher = PresenceBatcher()


async def presence_announce(
    room_id: str, *, kind: str, user: dict, change: PresenceChange, sender: str | None
) -> None:
    """Tell the room a user joined, was renamed ("rename") or left: as a `join` or `leave`
    with the whole list while the room is small, else as part of a `presence` delta."""
    if change.count <= full_list_max():
        await batcher.flush(room_id)
        await _group_send(
            room_id,
            {
                "type": "room.leave" if kind == "leave" else "room.join",
                "user": user,
                "seq": change.seq,
                "sender": sender,
            },
        )
    else:
        batcher.add(room_id, {"kind": kind, "user": user, "seq": change.seq}, change.count)


def presence_news(event_seq: int | None, *, seen_seq: int) -> bool:
    """Whether a connection whose entry is number `seen_seq` needs to hear of change
    `event_seq`: changes up to its own entry were in its `init.users` already. An event without
    a number (from a process of an older version, during a rolling upgrade) is news."""
    return event_seq is None or event_seq > seen_seq


def presence_delta(event: dict[str, Any], *, seen_seq: int, user_id: str) -> dict | None:
    """The `presence` message a `room.presence` event makes for one connection: the changes
    it has not seen, without its own, a user's last state only; None when nothing is left."""
    joined: dict[str, dict] = {}
    left: dict[str, dict] = {}
    arrived: set[str] = set()
    for change in event["changes"]:
        user = change["user"]
        if not presence_news(change["seq"], seen_seq=seen_seq) or user["id"] == user_id:
            continue
        if change["kind"] == "leave":
            joined.pop(user["id"], None)
            if user["id"] not in arrived:
                left[user["id"]] = user  # a user who came and went in one message never was
        else:
            joined[user["id"]] = user
            if change["kind"] == "join":
                arrived.add(user["id"])
    if not joined and not left:
        return None
    return {
        "type": "presence",
        "joined": list(joined.values()),
        "left": list(left.values()),
        "count": event["count"],
    }


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
    batcher.__init__()
