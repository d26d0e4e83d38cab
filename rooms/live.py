"""This process's live rooms: each room's head in memory and the fan-out to its connections.

Each process keeps a `LiveRoom` per room that has connections here: the head text, the version,
the recent changes and the authorship of the text (rooms/history/authorship.py), so that
transforming and delivering a change needs no database read.
rooms/document.py changes a live room (under its lock) once a change is committed; the room
then delivers it to its members, the connections of this process (rooms/consumers.py), and
rooms/following.py brings in the changes other processes commit. A live room also holds who may
enter it (the link fields and the roles of the accounts connected here), refreshed whenever
rooms/sharing.py changes that, so that each connection decides its access again at once
(rooms/access.py decides). What reaches the sockets is described in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from django.conf import settings

from rooms import access, following, metrics, ot, store
from rooms.changes import Change, committed_bytes
from rooms.history.authorship import Authorship
from rooms.protocol import encode_frame

logger = logging.getLogger(__name__)

# Changes each live room keeps in memory: enough to transform a late op and to deliver to a
# slow socket without reading the database in the normal case. Their bytes are bounded too
# (COLLAB_RECENT_CHANGES_BYTES): a room whose changes rewrite large texts keeps fewer. Older
# changes come from the op log, so resuming from them still works.
RECENT_CHANGES_KEPT = 1000
# An older text is rebuilt by undoing recent changes only this far back: further, reading the
# copy of the text before it (at most 99 ops away, rooms/history/past.py) costs less.
UNDO_WALK_MAX = 100
# A Change object with its fields, beside the ops it holds (rooms.changes.Change), about.
CHANGE_OBJECT_BYTES = 400


class Member(Protocol):
    """A connection of this process that takes the room's deliveries (rooms/consumers.py)."""

    def deliver_now(self) -> None:
        """Send, without waiting, every committed change this connection has not seen yet."""

    def access_recheck(self) -> None:
        """Decide this connection's access again: who may enter the room has changed."""


class LiveRoom:
    """One room's head state in this process. Mutated only under `lock`.

    Delivery is pull-based: each member tracks the last version it sent, and whenever the head
    advances one fan-out pass asks every member to send what it lacks. The changes are encoded
    once and the same bytes go to every socket; a member that is busy (its own change is being
    acked, or its socket is not taking writes) is passed by and catches up by version when it is
    free again, or is closed with 4413 once it is further behind than the budgets allow
    (rooms/consumers.py). So the cost of a change is O(room), with no task wake-up per socket.
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
        link_access: str = "edit",
        access_version: int = 0,
        authorship: Authorship | None = None,
        head_ts: int = 0,
        history_bytes: int = 0,
    ) -> None:
        self.room_id = room_id
        self.name = name
        self.text = text
        self.version = version
        self.code_version = code_version  # the version of the text copy in Room.code
        # Who wrote each character and last touched each line of `text`, kept with every change.
        self.authorship = Authorship.initial(text, head_ts) if authorship is None else authorship
        self.head_ts = head_ts  # when the head version's change was made (epoch ms)
        # What rooms.access.room_access reads, as of `access_version` (rooms/sharing.py raises
        # it with every change); a room's privacy never changes once created.
        self.private = private
        self.link_access = link_access
        self.edit_token_hash = edit_token_hash
        self.view_token_hash = view_token_hash
        self.access_version = access_version
        # The role (None: none) of each account that connected here, kept for the room's life.
        self.roles: dict[int, str | None] = {}
        self.access_lock = asyncio.Lock()
        # What the room's op log holds (rooms.changes.stored_bytes), for its quota.
        self.history_bytes = history_bytes
        self.recent: deque[Change] = deque()
        self.recent_bytes = 0  # the sum of their memory_bytes
        # The length of every text-mode broadcast so far (each sends the whole text).
        self.texts_sent = 0
        self.lock = asyncio.Lock()
        self.connections = 0
        # Highest seq committed per client, learned lazily: a resubmitted op is found without
        # a database read.
        self.last_seq: dict[str, int] = {}
        self._text_frame: tuple[int, str] | None = None
        self.members: set[Member] = set()
        self.feed: asyncio.Task | None = None  # other processes' changes (with several)
        # Another process committed to the room just before our last commit here: the next one
        # takes the room's turn at once (rooms/document.py).
        self.contended = False

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

    def advance(
        self,
        change: Change,
        new_text: str | None = None,
        authorship: Authorship | None = None,
    ) -> None:
        """Apply a committed change to the head (`new_text`, `authorship`: the results, if
        already known)."""
        if change.version != self.version + 1:
            raise AssertionError(f"{self.room_id}: {change.version} after {self.version}")
        change.undo = ot.invert(self.text, change.op)
        if authorship is None:
            self.authorship.apply(
                self.text, change.op, author=change.client, version=change.version, ts=change.ts
            )
        else:
            self.authorship = authorship
        self.text = ot.apply(self.text, change.op) if new_text is None else new_text
        self.version = change.version
        self.head_ts = change.ts
        self.history_bytes += committed_bytes(change.version, change.op, self.text)
        change.texts_before = self.texts_sent
        self.texts_sent += len(self.text)
        self.remember(change)
        if change.seq is not None:
            self.last_seq[change.client] = max(change.seq, self.last_seq.get(change.client, 0))
        self.fan_out()

    def remember(self, change: Change) -> None:
        """Keep `change` with the recent ones, within the count and the bytes they may take."""
        # The op, its encoded frame (made once there are ops-mode sockets) and its inverse.
        change.memory_bytes = (
            CHANGE_OBJECT_BYTES + 2 * ot.encoded_size(change.op) + ot.encoded_size(change.undo)
        )
        self.recent.append(change)
        self.recent_bytes += change.memory_bytes
        budget = settings.COLLAB_RECENT_CHANGES_BYTES
        # The newest stays whatever its size: the fan-out delivers it from here.
        while len(self.recent) > RECENT_CHANGES_KEPT or (
            self.recent_bytes > budget and len(self.recent) > 1
        ):
            self.recent_bytes -= self.recent.popleft().memory_bytes

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

    async def catch_up_to_join(self, version: int | None) -> None:
        """Before a new connection's init: apply what other processes committed that this room
        has not heard of yet, and whatever the joining client (resuming from `version`) has seen.

        A room nobody else follows (one process, `feed` None) already holds the head: every
        change of it was committed through it. Reading the op log for nothing was a sixth of a
        connection's CPU (docs/benchmarks.md), so it is read only for a client that claims a
        version beyond the head, to tell it apart from one ahead of the room.
        """
        if self.feed is None and (version is None or version <= self.version):
            return
        async with self.lock:
            await self.catch_up()

    async def ingest(self, change: Change) -> None:
        """Take a change announced on the channel layer (ours or another process's)."""
        if change.version <= self.version:
            return
        async with self.lock:
            if change.version == self.version + 1:
                self.advance(change)
            elif change.version > self.version:
                await self.catch_up()

    def text_backlog(self, after: int) -> int | None:
        """The code points of the text-mode broadcasts after version `after` up to the head
        (each the whole text), or None when memory no longer holds the change after `after`."""
        first = self.change_at(after + 1)
        return None if first is None else self.texts_sent - first.texts_before

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

    # -- who may enter ----------------------------------------------------------------------

    async def role_of(self, user_id: int) -> str | None:
        """An account's role here, read from the database at its first connection."""
        if user_id in self.roles:
            return self.roles[user_id]
        read = await access.role_read(self.room_id, user_id)
        if read is None:
            return None  # the room was deleted meanwhile
        role, version = read
        self.roles[user_id] = role
        if version != self.access_version:
            # Read across a change of access: load the room's access as of now, roles included.
            await self.access_refresh()
        return self.roles[user_id]

    async def access_refresh(self, version: int | None = None) -> None:
        """Load who may enter again, if `version` (None: whatever it is now) is newer than what
        this room holds, and have every connection decide its access again."""
        if version is not None and version <= self.access_version:
            return
        async with self.access_lock:
            if version is not None and version <= self.access_version:
                return  # loaded while we waited
            user_ids = list(self.roles)
            state = await access.access_state_read(self.room_id, user_ids)
            if state is None:
                return  # the room was deleted: its connections go with the process
            row, roles = state
            self.link_access = row["link_access"]
            self.edit_token_hash = row["edit_token_hash"]
            self.view_token_hash = row["view_token_hash"]
            self.access_version = row["access_version"]
            self.roles.update({user_id: roles.get(user_id) for user_id in user_ids})
        for member in tuple(self.members):
            member.access_recheck()

    async def position_moved(self, positions: list[int], after: int, through: int) -> list[int]:
        """Positions at version `after`, moved through the changes up to `through`."""
        for change in await self.changes_between(after, through):
            positions = [ot.transform_position(p, change.op) for p in positions]
        return positions

    async def text_at(self, version: int) -> str:
        """The text as it was at `version` (0 <= version <= head)."""
        if version == self.version:
            return self.text
        if self.version - version > UNDO_WALK_MAX:
            return await store.text_at(self.room_id, version)
        text = self.text
        for v in range(self.version, version, -1):
            change = self.change_at(v)
            if change is None or change.undo is None:
                return await store.text_at(self.room_id, version)
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
        following.room_watcher.ensure_running(self.rooms)
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
                live.feed = await following.room_follow(live)
                self._rooms[room_id] = live
            future.set_result(live)
            return live
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            del self._loading[room_id]


live_rooms = LiveRooms()


async def access_changed(room_id: str, access_version: int) -> None:
    """Who may enter a room changed (committed as `access_version`): its connections here and
    on every other process decide their access again."""
    live = live_rooms.get(room_id)
    if live is not None:
        await live.access_refresh(access_version)
    await following.access_announce(room_id, access_version)


metrics.rooms_live_counted_by(lambda: len(live_rooms))
metrics.recent_changes_measured_by(lambda: sum(live.recent_bytes for live in live_rooms.rooms()))
