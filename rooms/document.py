"""The room document: the one place that changes a room.

This module owns a change's whole life: validation against the document, transformation
against concurrent changes, its version, the durable commit (an `Op` row and the room's new
version in one transaction, with a copy of the whole text every `SNAPSHOT_EVERY` changes), and
handing the committed change to delivery (the room's fan-out, and the channel layer for other
processes). Consumers and views only translate between the wire and the functions here. What the
versions and ops mean on the wire is described in docs/protocol.md.

Each process keeps a `LiveRoom` per room that has connections here: the head text, the version
and the recent changes, so that transforming and delivering a change needs no database read. The
database stays the arbiter between processes: the unique (room, version) constraint rejects a
commit built on a stale head, and the loser catches up from the op log and transforms again
(ShareDB's design).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from rooms import access, metrics, ot, store
from rooms.changes import Change
from rooms.groups import changes_group_name
from rooms.models import Op, Room
from rooms.protocol import (
    BAD_MESSAGE,
    BAD_OP,
    MAX_DOCUMENT_CODE_POINTS,
    TOO_LARGE,
    ProtocolError,
    encode_frame,
    new_room_id,
)

logger = logging.getLogger(__name__)

# Changes each live room keeps in memory: enough to transform a late op and to deliver to a
# slow socket without reading the database in the normal case.
RECENT_CHANGES_KEPT = 1000
# Changes between two copies of the whole text into Room.code. Each change is durable in the op
# log when it is acked; rewriting the text with every keystroke made a commit cost grow with the
# document (an insert at the top rewrites every page of it). Reading a room replays at most
# this many ops onto the copy.
SNAPSHOT_EVERY = 100


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class CommitResult:
    version: int
    text: str  # the room's text right after this change
    duplicate: bool = False


class Member(Protocol):
    """A connection of this process that takes the room's deliveries (rooms/consumers.py)."""

    def deliver_now(self) -> None:
        """Send, without waiting, every committed change this connection has not seen yet."""


class LiveRoom:
    """One room's head state in this process. Mutated only under `lock`.

    Delivery is pull-based: each member tracks the last version it sent, and whenever the head
    advances one fan-out pass asks every member to send what it lacks. The changes are encoded
    once and the same bytes go to every socket; a member that is busy (its own change is being
    acked, or its socket is not taking writes) is passed by and catches up by version when it is
    free again. So the cost of a change is O(room), with no task wake-up per socket.
    """

    def __init__(
        self,
        room_id: str,
        name: str,
        text: str,
        version: int,
        private: bool = False,
        edit_token_hash: str = "",
        view_token_hash: str = "",
        code_version: int = 0,
    ) -> None:
        self.room_id = room_id
        self.name = name
        self.text = text
        self.version = version
        self.code_version = code_version  # the version of the text copy in Room.code
        # What rooms.access.room_access reads; a room's privacy never changes once created.
        self.private = private
        self.edit_token_hash = edit_token_hash
        self.view_token_hash = view_token_hash
        self.recent: deque[Change] = deque(maxlen=RECENT_CHANGES_KEPT)
        self.lock = asyncio.Lock()
        self.connections = 0
        # Highest seq committed per client, learned lazily: a resubmitted op is found without
        # a database read.
        self.last_seq: dict[str, int] = {}
        self._text_frame: tuple[int, str] | None = None
        self.members: set[Member] = set()
        self.feed: asyncio.Task | None = None  # other processes' changes (with several)

    # -- reading ---------------------------------------------------------------------------

    def change_at(self, version: int) -> Change | None:
        if not self.recent or version > self.version:
            return None
        index = version - self.recent[0].version
        return self.recent[index] if index >= 0 else None

    def text_frame(self, user_of_change: str) -> str:
        """The text-mode broadcast of the head version, encoded once for every text socket."""
        if self._text_frame is None or self._text_frame[0] != self.version:
            frame = encode_frame(
                {
                    "type": "sync_code",
                    "code": self.text,
                    "version": self.version,
                    "user": user_of_change,
                }
            )
            self._text_frame = (self.version, frame)
        return self._text_frame[1]

    # -- changing (callers hold the lock) ----------------------------------------------------

    def advance(self, change: Change, new_text: str | None = None) -> None:
        """Apply a committed change to the head (`new_text`: the result, if already known)."""
        if change.version != self.version + 1:
            raise AssertionError(f"{self.room_id}: {change.version} after {self.version}")
        change.undo = ot.invert(self.text, change.op)
        self.text = ot.apply(self.text, change.op) if new_text is None else new_text
        self.version = change.version
        self.recent.append(change)
        if change.seq is not None:
            self.last_seq[change.client] = max(change.seq, self.last_seq.get(change.client, 0))
        self.fan_out()

    # -- delivering ------------------------------------------------------------------------

    def fan_out(self) -> None:
        """Send the head to every member that lacks it, as soon as a change is applied.

        Inline rather than on a later loop iteration: when a group commit wakes several
        submitters at once, each room's other members then get its change before the next
        submitter's ack instead of after all of them (fan-out p50 -25% in `rooms`,
        docs/benchmarks.md). The submitter is busy meanwhile and gets its ack instead.
        """
        clock = asyncio.get_running_loop().time
        started = clock()
        for member in tuple(self.members):  # a failed send may end a connection mid-pass
            try:
                member.deliver_now()
            except Exception:
                logger.exception("room %s: delivery to one connection failed", self.room_id)
        metrics.fanout_done(clock() - started)

    async def catch_up(self) -> None:
        """Apply every change other processes committed after our head."""
        for change in await store.changes_after(self.room_id, self.version):
            self.advance(change)

    async def ingest(self, change: Change) -> None:
        """Take a change announced on the channel layer (ours or another process's)."""
        if change.version <= self.version:
            return
        async with self.lock:
            if change.version == self.version + 1:
                self.advance(change)
            elif change.version > self.version:
                await self.catch_up()

    def recent_between(self, after: int, through: int) -> list[Change] | None:
        """Changes with versions in (after, through] if memory holds them all, else None."""
        if through <= after:
            return []
        first = self.change_at(after + 1)
        if first is None or through > self.version:
            return None
        start = first.version - self.recent[0].version
        return [self.recent[start + i] for i in range(through - after)]

    async def changes_between(self, after: int, through: int) -> list[Change]:
        """Changes with versions in (after, through], from memory or else the op log."""
        changes = self.recent_between(after, through)
        if changes is None:
            changes = await store.changes_after(self.room_id, after, through)
        return changes

    async def reach(self, version: int) -> None:
        """Make sure this process has applied every change up to `version`."""
        if version > self.version:
            async with self.lock:
                await self.catch_up()

    async def position_moved(self, positions: list[int], after: int, through: int) -> list[int]:
        """Positions at version `after`, moved through the changes up to `through`."""
        for change in await self.changes_between(after, through):
            positions = [ot.transform_position(p, change.op) for p in positions]
        return positions

    async def text_at(self, version: int) -> str:
        """The text as it was at `version` (0 <= version <= head)."""
        if version == self.version:
            return self.text
        text = self.text
        for v in range(self.version, version, -1):
            change = self.change_at(v)
            if change is None or change.undo is None:
                return await store.text_replayed(self.room_id, version)
            text = ot.apply(text, change.undo)
        return text


class LiveRooms:
    """The live rooms of this process, kept while they have connections here."""

    def __init__(self) -> None:
        self._rooms: dict[str, LiveRoom] = {}
        self._loading: dict[str, asyncio.Future[LiveRoom | None]] = {}

    async def acquire(self, room_id: str) -> LiveRoom | None:
        """The live room for a new connection, or None when the room does not exist."""
        live = self._rooms.get(room_id)
        if live is None:
            live = await self._load(room_id)
            if live is None:
                return None
        live.connections += 1
        if settings.REDIS_URL:
            room_watcher.ensure_running()
        return live

    def release(self, live: LiveRoom) -> None:
        live.connections -= 1
        if live.connections <= 0 and self._rooms.get(live.room_id) is live:
            del self._rooms[live.room_id]
            if live.feed is not None:
                live.feed.cancel()

    def get(self, room_id: str) -> LiveRoom | None:
        return self._rooms.get(room_id)

    def rooms(self) -> list[LiveRoom]:
        return list(self._rooms.values())

    def __len__(self) -> int:
        return len(self._rooms)

    async def _load(self, room_id: str) -> LiveRoom | None:
        # Connections arriving together share one database read and one LiveRoom.
        pending = self._loading.get(room_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LiveRoom | None] = asyncio.get_running_loop().create_future()
        self._loading[room_id] = future
        try:
            row = await store.room_row(room_id)
            live = LiveRoom(room_id, *row) if row else None
            if live is not None:
                await _follow_other_processes(live)
                self._rooms[room_id] = live
            future.set_result(live)
            return live
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            del self._loading[room_id]


async def _follow_other_processes(live: LiveRoom) -> None:
    """Subscribe this process to the room's changes made elsewhere (no-op with one process).

    Subscribed before the room's first connection catches up from the op log, so every change
    arrives one way or the other. One subscription per process and room: a change costs one
    message per process, then this process's fan-out.
    """
    layer = get_channel_layer()
    if getattr(layer, "single_process", False):
        return
    channel = await layer.new_channel()
    group = changes_group_name(live.room_id)
    await layer.group_add(group, channel)

    async def follow() -> None:
        try:
            while True:
                event = await layer.receive(channel)
                try:
                    await live.ingest(Change.from_event(event))
                except Exception:  # e.g. the database is down: the room watcher catches up later
                    logger.exception("room %s: taking a change from another process", live.room_id)
        finally:
            await layer.group_discard(group, channel)

    live.feed = asyncio.get_running_loop().create_task(follow(), name=f"feed-{live.room_id}")


class RoomWatcher:
    """With several processes: delivers changes whose notification the channel layer lost.

    A channel layer may drop a message (channels-redis does, silently). Versions make a gap
    visible to the next message, but the last change of a burst has no next message; so every
    COLLAB_VERSION_POLL_S each process compares its live rooms with the database and, where it
    is behind, catches up and announces the latest change again (announcing is idempotent:
    versions already delivered are skipped).
    """

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="room-watcher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.COLLAB_VERSION_POLL_S)
            try:
                await self.check()
            except Exception:
                logger.exception("room watcher failed; retrying")

    async def check(self) -> None:
        rooms = list(live_rooms.rooms())
        if not rooms:
            return
        versions = await store.room_versions([live.room_id for live in rooms])
        for live in rooms:
            if versions.get(live.room_id, 0) > live.version:
                await live.reach(versions[live.room_id])
                if (latest := live.change_at(live.version)) is not None:
                    await change_announce(live.room_id, latest)


live_rooms = LiveRooms()
room_watcher = RoomWatcher()


def live_rooms_reset() -> None:
    """Forget every live room (tests run each case on a fresh database and event loop)."""
    live_rooms.__init__()
    room_watcher.__init__()
    store.committer.__init__()


# -- changes ---------------------------------------------------------------------------------


async def change_submit(
    live: LiveRoom,
    *,
    base_version: int | None,
    op: object | None = None,
    text: str | None = None,
    user: str,
    client: str,
    seq: int | None = None,
) -> CommitResult:
    """Commit one change, given as an op or as a whole new text, and announce it.

    `base_version` is the version the change was made against (None: the head). Returns once
    the change is durable. Raises ProtocolError for a change that cannot be applied; then
    nothing changed.
    """
    if op is not None:
        try:
            op = ot.normalize(op)
        except ot.InvalidOp as error:
            raise ProtocolError(BAD_OP, str(error)) from None
    async with live.lock:
        head = live.version
        base = head if base_version is None else base_version
        if not 0 <= base <= head:
            raise ProtocolError(BAD_OP, f"version {base} is not between 0 and {head}")
        if seq is not None:
            first_version = await _duplicate_version(live, client, seq)
            if first_version is not None:
                return CommitResult(first_version, live.text, duplicate=True)
        if text is not None:
            op = ot.diff(await live.text_at(base), text)
        else:
            base_length = len(live.text) if base == head else len(await live.text_at(base))
            if ot.base_length(op) > base_length:
                raise ProtocolError(BAD_OP, f"the op reaches past the document at {base}")
        for concurrent in await live.changes_between(base, head):
            op = ot.transform(op, concurrent.op, "left")
        while True:
            new_text = ot.apply(live.text, op)
            if len(new_text) > MAX_DOCUMENT_CODE_POINTS:
                raise ProtocolError(
                    TOO_LARGE, f"the document would exceed {MAX_DOCUMENT_CODE_POINTS} code points"
                )
            change = Change(live.version + 1, op, user, client, seq, now_ms())
            snapshot = change.version - live.code_version >= SNAPSHOT_EVERY
            try:
                await store.change_commit(
                    change,
                    room_id=live.room_id,
                    expected_version=live.version,
                    new_text=new_text if snapshot else None,
                )
                if snapshot:
                    live.code_version = change.version
                break
            except store.VersionConflict:
                # Another process got there first: take its changes, move our op past them.
                seen = live.version
                await live.catch_up()
                if live.version == seen:
                    raise RuntimeError(f"{live.room_id}: conflict at {seen}, no newer op") from None
                for concurrent in await live.changes_between(seen, live.version):
                    op = ot.transform(op, concurrent.op, "left")
            except store.DuplicateSeq:
                first_version = await store.seq_version(live.room_id, client, seq)
                await live.catch_up()
                return CommitResult(first_version, live.text, duplicate=True)
        live.advance(change, new_text)
        metrics.change_committed()
        result = CommitResult(change.version, new_text)
    await change_announce(live.room_id, change)
    return result


async def change_announce(room_id: str, change: Change) -> None:
    """Tell the room's other processes about a committed change (this process's connections
    get it from the room's fan-out)."""
    layer = get_channel_layer()
    if getattr(layer, "single_process", False):
        return  # nobody else to tell
    await layer.group_send(changes_group_name(room_id), change.event())


async def _duplicate_version(live: LiveRoom, client: str, seq: int) -> int | None:
    last = live.last_seq.get(client)
    if last is None:
        last = await store.last_seq(live.room_id, client)
        live.last_seq[client] = last
    if seq > last:
        return None
    first_version = await store.seq_version(live.room_id, client, seq)
    if first_version is None:
        raise ProtocolError(BAD_OP, f"seq {seq} was never used and is below {last}: seq must grow")
    return first_version


async def cursor_at_head(
    live: LiveRoom, *, anchor: int, head: int, version: int | None
) -> tuple[int, int, int]:
    """Validate a cursor made at `version` (None: head) and move it to the head version."""
    at = live.version if version is None else version
    if not 0 <= at <= live.version:
        raise ProtocolError(BAD_MESSAGE, f"cursor version {at} is not between 0 and {live.version}")
    length = len(live.text) if at == live.version else len(await live.text_at(at))
    if not (0 <= anchor <= length and 0 <= head <= length):
        raise ProtocolError(BAD_MESSAGE, f"cursor positions must be between 0 and {length}")
    target = live.version
    anchor, head = await live.position_moved([anchor, head], at, target)
    return anchor, head, target


# -- rooms (REST) ----------------------------------------------------------------------------


def room_create(*, code: str = "", name: str = "") -> Room:
    """Create a public room with a fresh random id; `code` is its text at version 0."""
    return Room.objects.create(id=new_room_id(), code=code, initial_code=code, name=name)


def room_create_private(*, code: str = "", name: str = "") -> tuple[Room, dict[str, str]]:
    """Create a private room. Its tokens ({"token", "view_token"}) are returned only here:
    the database keeps their hashes."""
    tokens = {"token": access.token_new(), "view_token": access.token_new()}
    room = Room.objects.create(
        id=new_room_id(),
        code=code,
        initial_code=code,
        name=name,
        private=True,
        edit_token_hash=access.token_hash(tokens["token"]),
        view_token_hash=access.token_hash(tokens["view_token"]),
    )
    return room, tokens


def room_get(room_id: str) -> Room | None:
    return Room.objects.filter(id=room_id).first()


def room_history(room: Room, *, since: int) -> list[dict[str, Any]]:
    return [
        {
            "version": row.version,
            "op": row.op,
            "user": row.user,
            "client": row.client,
            "seq": row.seq,
            "ts": row.ts,
        }
        for row in Op.objects.filter(room_id=room.id, version__gt=since).order_by("version")
    ]
