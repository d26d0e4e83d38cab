"""An in-process channel layer built for room fan-out: the embedded default.

Channels' InMemoryChannelLayer scans every channel of the process on each send and receive (to
expire messages), deep-copies each message per recipient and starts a task per recipient of a
group send, so the cost of one broadcast grows with every connection in the process. Here a
group send is one `put_nowait` per member of that group and nothing else:

- messages are shared, not copied: receivers must treat them as read-only (ours do);
- a full queue drops the message for that channel, as every channel layer may; the room
  protocol's versions make the gap visible and the consumer fills it (rooms/consumers.py);
- no expiry scan: queues of channels that left every group and have nobody waiting on them are
  swept now and then, amortised over new channels;
- a consumer may `subscribe` its channel instead of receiving from it: messages then go to its
  `Inbox`, which runs a task only while messages wait. An idle connection then holds no queue
  and no waiting task (about 7 KiB less per connection; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

# Sweep abandoned queues once per this many new channels (amortised O(1) per connection).
SWEEP_EVERY_NEW_CHANNELS = 256


class Inbox:
    """One subscribed channel's messages, handed to `handle` one at a time, in order."""

    __slots__ = ("capacity", "handle", "pending", "task")

    def __init__(self, handle: Callable[[dict], Awaitable[None]], capacity: int) -> None:
        self.handle = handle
        self.capacity = capacity
        self.pending: deque[dict] | None = None  # created when a message arrives
        self.task: asyncio.Task | None = None  # runs only while messages wait

    def deliver(self, message: dict) -> None:
        if self.pending is None:
            self.pending = deque()
        elif len(self.pending) >= self.capacity:
            raise asyncio.QueueFull
        self.pending.append(message)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.pending:
                await self.handle(self.pending.popleft())
        finally:
            self.task = None
            if not self.pending:
                self.pending = None

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class RoomChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]
    # Every connection lives in this process: its live room (rooms/live.py) delivers committed
    # changes to them directly, and rooms/following.py skips announcing them here.
    single_process = True

    def __init__(self, capacity: int = 1000, **kwargs: Any) -> None:
        super().__init__(capacity=capacity, **kwargs)
        self.queues: dict[str, asyncio.Queue] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.groups: dict[str, set[str]] = {}
        self.memberships: dict[str, int] = {}
        self.new_channels = 0

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    def subscribe(self, channel: str, handle: Callable[[dict], Awaitable[None]]) -> None:
        """Hand this channel's messages to `handle` (one at a time) instead of `receive`."""
        self.inboxes[channel] = Inbox(handle, self.get_capacity(channel))

    def unsubscribe(self, channel: str) -> None:
        inbox = self.inboxes.pop(channel, None)
        if inbox is not None:
            inbox.close()

    def _put(self, channel: str, message: dict) -> None:
        inbox = self.inboxes.get(channel)
        if inbox is not None:
            inbox.deliver(message)
        else:
            self._queue(channel).put_nowait(message)

    async def send(self, channel: str, message: dict) -> None:
        try:
            self._put(channel, message)
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        return await self._queue(channel).get()

    async def new_channel(self, prefix: str = "specific.") -> str:
        self.new_channels += 1
        if self.new_channels % SWEEP_EVERY_NEW_CHANNELS == 0:
            self._sweep()
        return f"{prefix}.local!{secrets.token_hex(8)}"

    async def group_add(self, group: str, channel: str) -> None:
        members = self.groups.setdefault(group, set())
        if channel not in members:
            members.add(channel)
            self.memberships[channel] = self.memberships.get(channel, 0) + 1

    async def group_discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is None or channel not in members:
            return
        members.discard(channel)
        if not members:
            del self.groups[group]
        left = self.memberships.get(channel, 1) - 1
        if left:
            self.memberships[channel] = left
        else:
            self.memberships.pop(channel, None)

    async def group_send(self, group: str, message: dict) -> None:
        for channel in self.groups.get(group, ()):
            # A full queue means this receiver is behind: it catches up by version.
            with contextlib.suppress(asyncio.QueueFull):
                self._put(channel, message)

    async def flush(self) -> None:
        for inbox in self.inboxes.values():
            inbox.close()
        self.inboxes.clear()
        self.queues.clear()
        self.groups.clear()
        self.memberships.clear()

    async def close(self) -> None:
        pass

    def _sweep(self) -> None:
        for channel, queue in list(self.queues.items()):
            # `_getters` holds the receivers waiting on the queue: a live consumer always has one.
            if channel not in self.memberships and not queue._getters:
                del self.queues[channel]
