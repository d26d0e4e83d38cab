"""Following a room's changes across processes: subscribing, announcing, and the version watcher.

With several processes (docs/deploying.md), each process that has a room live subscribes once to
the room's changes group (rooms/groups.py) and hands what arrives to its live room; a process
that commits a change announces it there, but only while another process follows the room:
each follower says so on the group when it subscribes (and again every FOLLOW_TTL_S / 3, and
when it stops), so a room whose connections are all on one process costs no message at all.
Changes of who may enter the room (rooms/sharing.py) travel the same way, always. A channel layer
may drop a message, so the `RoomWatcher` also compares the live rooms' versions and access
versions with the database every COLLAB_VERSION_POLL_S: a slow safety net, not the way changes
travel. With one process (the in-process channel layer) there is nobody to follow and all of
this is a no-op.

This module knows a live room only by what it calls on it (`Followed`): rooms/live.py subscribes
each room it loads and starts the watcher, so imports go one way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from rooms import store
from rooms.changes import Change
from rooms.groups import changes_group_name

logger = logging.getLogger(__name__)


class Followed(Protocol):
    """A room this process has live (rooms/live.py's LiveRoom), as following uses it."""

    room_id: str
    version: int
    access_version: int

    def change_at(self, version: int) -> Change | None: ...

    async def ingest(self, change: Change) -> None: ...

    async def reach(self, version: int) -> None: ...

    async def access_refresh(self, version: int | None = None) -> None: ...


# The channel-layer message that says a room's access changed (rooms/sharing.py).
ACCESS_EVENT = "room.access"
# The messages by which a process says it follows a room (and again, and no longer).
FOLLOW_EVENT = "room.follow"
UNFOLLOW_EVENT = "room.unfollow"
# This process, in those messages (it receives its own too: the group is its own as well).
PROCESS_ID = secrets.token_hex(8)
# How long a process counts as following a room after its last follow message. It repeats the
# message every third of this, so one lost message does not stop the announcements; a process
# that was killed is forgotten after this long (until then, its rooms' changes are published
# for nobody, which costs a message and nothing else).
FOLLOW_TTL_S = 30.0


class Followers:
    """The other processes that follow each of this process's live rooms, with expiries."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, float]] = {}

    def seen(self, room_id: str, process: str) -> bool:
        """`process` follows the room (for FOLLOW_TTL_S); True when it was not known to."""
        processes = self._rooms.setdefault(room_id, {})
        now = time.monotonic()
        new = processes.get(process, 0.0) <= now
        processes[process] = now + FOLLOW_TTL_S
        return new

    def gone(self, room_id: str, process: str | None = None) -> None:
        """`process` (None: every one) no longer follows the room."""
        if process is None:
            self._rooms.pop(room_id, None)
        elif (processes := self._rooms.get(room_id)) is not None:
            processes.pop(process, None)

    def any(self, room_id: str) -> bool:
        """Whether another process follows the room."""
        processes = self._rooms.get(room_id)
        if not processes:
            return False
        now = time.monotonic()
        for process, expires in list(processes.items()):
            if expires <= now:
                del processes[process]
        return bool(processes)


followers = Followers()


async def room_follow(room: Followed) -> asyncio.Task | None:
    """Subscribe this process to the room's changes made elsewhere (no-op with one process).

    Returns the task that hands them to the room (cancelling it unsubscribes), or None. Called
    before the room's first connection catches up from the op log, so every change arrives one
    way or the other: a process that commits to the room answers the follow message by
    announcing its latest change again, which covers what it committed before it heard of us.
    One subscription per process and room: a change costs one message per process, then this
    process's fan-out.
    """
    layer = get_channel_layer()
    if getattr(layer, "single_process", False):
        return None
    channel = await layer.new_channel()
    group = changes_group_name(room.room_id)
    await layer.group_add(group, channel)
    try:
        await _follow_say(room.room_id, FOLLOW_EVENT)
    except Exception as error:
        # Not a reason to refuse the connection (a Redis outage fails it where it must, with
        # 4503): the message is repeated every FOLLOW_TTL_S / 3, and the version watcher
        # delivers what others did not announce meanwhile.
        logger.warning("room %s: saying we follow it failed: %r", room.room_id, error)

    async def follow() -> None:
        try:
            while True:
                event = await layer.receive(channel)
                try:
                    await _take(room, event)
                except Exception:  # e.g. the database is down: the room watcher catches up later
                    logger.exception("room %s: taking a change from another process", room.room_id)
        finally:
            followers.gone(room.room_id)
            with contextlib.suppress(Exception):  # a killed process says nothing either
                await _follow_say(room.room_id, UNFOLLOW_EVENT)
            await layer.group_discard(group, channel)

    return asyncio.get_running_loop().create_task(follow(), name=f"feed-{room.room_id}")


async def _take(room: Followed, event: dict) -> None:
    kind = event["type"]
    if kind == ACCESS_EVENT:
        await room.access_refresh(event["access_version"])
    elif kind == FOLLOW_EVENT:
        if event["process"] != PROCESS_ID and followers.seen(room.room_id, event["process"]):
            # A new follower, which did not hear that we follow the room (we said so before
            # it subscribed): tell it, and announce what it may have missed from us.
            await _follow_say(room.room_id, FOLLOW_EVENT)
            if (latest := room.change_at(room.version)) is not None:
                await change_announce(room.room_id, latest)
    elif kind == UNFOLLOW_EVENT:
        followers.gone(room.room_id, event["process"])
    else:
        await room.ingest(Change.from_event(event))


async def _follow_say(room_id: str, kind: str) -> None:
    await get_channel_layer().group_send(
        changes_group_name(room_id), {"type": kind, "process": PROCESS_ID}
    )


async def change_announce(room_id: str, change: Change) -> None:
    """Tell the room's other processes about a committed change (this process's connections
    get it from the room's fan-out); nothing is sent while no other process follows it."""
    layer = get_channel_layer()
    if getattr(layer, "single_process", False) or not followers.any(room_id):
        return  # nobody else to tell
    await layer.group_send(changes_group_name(room_id), change.event())


async def access_announce(room_id: str, access_version: int) -> None:
    """Tell the room's other processes that who may enter it changed (committed as
    `access_version`), so that each refreshes its live room."""
    layer = get_channel_layer()
    if getattr(layer, "single_process", False):
        return
    await layer.group_send(
        changes_group_name(room_id), {"type": ACCESS_EVENT, "access_version": access_version}
    )


class RoomWatcher:
    """With several processes: delivers changes whose notification the channel layer lost, and
    applies access changes whose notification it lost.

    A channel layer may drop a message (channels-redis does, silently). Versions make a gap
    visible to the next message, but the last change of a burst has no next message; so every
    COLLAB_VERSION_POLL_S each process compares its live rooms with the database (one query for
    all of them, none while it has no room live) and, where it is behind, catches up and
    announces the latest change again (announcing is idempotent: versions already delivered
    are skipped). It also repeats, every FOLLOW_TTL_S / 3, that this process follows its live
    rooms.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self._follow_task: asyncio.Task | None = None

    def ensure_running(self, rooms: Callable[[], Iterable[Followed]]) -> None:
        """Watch the rooms that `rooms()` lists at each check, and repeat that this process
        follows them (only with Redis: one process has no other process to miss)."""
        if not settings.REDIS_URL:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(rooms), name="room-watcher")
            self._follow_task = loop.create_task(self._refollow(rooms), name="room-refollow")

    async def _run(self, rooms: Callable[[], Iterable[Followed]]) -> None:
        while True:
            await asyncio.sleep(settings.COLLAB_VERSION_POLL_S)
            try:
                await self.check(list(rooms()))
            except Exception:
                logger.exception("room watcher failed; retrying")

    async def _refollow(self, rooms: Callable[[], Iterable[Followed]]) -> None:
        while True:
            await asyncio.sleep(FOLLOW_TTL_S / 3)
            for live in list(rooms()):
                try:
                    await _follow_say(live.room_id, FOLLOW_EVENT)
                except Exception:
                    logger.exception("room %s: saying we follow it failed", live.room_id)

    async def check(self, rooms: list[Followed]) -> None:
        if not rooms:
            return
        versions = await store.room_versions([live.room_id for live in rooms])
        for live in rooms:
            version, access_version = versions.get(live.room_id, (0, 0))
            if version > live.version:
                await live.reach(version)
                if (latest := live.change_at(live.version)) is not None:
                    await change_announce(live.room_id, latest)
            if access_version > live.access_version:
                await live.access_refresh(access_version)


room_watcher = RoomWatcher()
