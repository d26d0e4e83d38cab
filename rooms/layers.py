"""An in-process channel layer built for room fan-out: the embedded default.

Channels' InMemoryChannelLayer scans every channel of the process on each send and receive (to
expire messages), deep-copies each message per recipient and starts a task per recipient of a
group send, so the cost of one broadcast grows with every connection in the process. Here a
group send is one `put_nowait` per member of that group and nothing else:

- messages are shared, not copied: receivers must treat them as read-only (ours do);
- each channel's queue is bounded in messages (`capacity`) and in bytes (`capacity_bytes`,
  COLLAB_CONNECTION_QUEUE_BYTES): a receiver that stopped taking messages holds at most that
  much. A full queue drops the message for that channel, as every channel layer may, and tells
  the subscriber (`overflow`): a connection that missed messages is closed and resumes
  (rooms/consumers.py);
- no expiry scan: queues of channels that left every group and have nobody waiting on them are
  swept now and then, amortised over new channels;
- a consumer may `subscribe` its channel instead of receiving from it: messages then go to its
  `Inbox`, which runs a task only while messages wait. An idle connection then holds no queue
  and no waiting task (about 7 KiB less per connection; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

# Sweep abandoned queues once per this many new channels (amortised O(1) per connection).
SWEEP_EVERY_NEW_CHANNELS = 256
DEFAULT_CAPACITY_BYTES = 8 * 1024 * 1024

# Sizes are measured as compact JSON, once per message whatever its number of receivers.
_SIZE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr)


def message_size(message: dict) -> int:
    """About the bytes a message holds (its JSON length; bytes values count as their repr)."""
    return len(_SIZE_ENCODER.encode(message))


class Inbox:
    """One subscribed channel's messages, handed to `handle` one at a time, in order."""

    __slots__ = ("capacity", "capacity_bytes", "handle", "overflow", "pending", "size", "task")

    def __init__(
        self,
        handle: Callable[[dict], Awaitable[None]],
        capacity: int,
        capacity_bytes: int,
        overflow: Callable[[], None] | None = None,
    ) -> None:
        self.handle = handle
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self.overflow = overflow
        self.pending: deque[tuple[dict, int]] | None = None  # created when a message arrives
        self.size = 0  # bytes of the pending messages
        self.task: asyncio.Task | None = None  # runs only while messages wait

    def deliver(self, message: dict, size: int) -> None:
        if self.pending is None:
            self.pending = deque()
        elif len(self.pending) >= self.capacity or self.size + size > self.capacity_bytes:
            # One message always fits, however large: the bound is on what piles up.
            if self.overflow is not None:
                self.overflow()
            raise asyncio.QueueFull
        self.pending.append((message, size))
        self.size += size
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self.pending:
                message, size = self.pending.popleft()
                self.size -= size
                await self.handle(message)
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

    def __init__(
        self, capacity: int = 1000, capacity_bytes: int = DEFAULT_CAPACITY_BYTES, **kwargs: Any
    ) -> None:
        super().__init__(capacity=capacity, **kwargs)
        self.capacity_bytes = capacity_bytes
        # Channels nobody subscribed: (message, size) pairs, and the bytes each queue holds.
        self.queues: dict[str, asyncio.Queue] = {}
        self.queued_bytes: dict[str, int] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.groups: dict[str, set[str]] = {}
        self.memberships: dict[str, int] = {}
        self.new_channels = 0

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.queues.get(channel)
        if queue is None:
            queue = self.queues[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    def subscribe(
        self,
        channel: str,
        handle: Callable[[dict], Awaitable[None]],
        overflow: Callable[[], None] | None = None,
    ) -> None:
        """Hand this channel's messages to `handle` (one at a time) instead of `receive`;
        `overflow` is called when a message is dropped because the channel's queue is full."""
        self.inboxes[channel] = Inbox(
            handle, self.get_capacity(channel), self.capacity_bytes, overflow
        )

    def unsubscribe(self, channel: str) -> None:
        inbox = self.inboxes.pop(channel, None)
        if inbox is not None:
            inbox.close()

    def _put(self, channel: str, message: dict, size: int) -> None:
        inbox = self.inboxes.get(channel)
        if inbox is not None:
            inbox.deliver(message, size)
            return
        queue = self._queue(channel)
        held = self.queued_bytes.get(channel, 0)
        if not queue.empty() and held + size > self.capacity_bytes:
            raise asyncio.QueueFull
        queue.put_nowait((message, size))
        self.queued_bytes[channel] = held + size

    async def send(self, channel: str, message: dict) -> None:
        try:
            self._put(channel, message, message_size(message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        message, size = await self._queue(channel).get()
        self.queued_bytes[channel] -= size
        return message

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
        channels = self.groups.get(group)
        if not channels:
            return
        size = message_size(message)
        for channel in channels:
            # A full queue means this receiver is behind: it was told (`overflow`).
            with contextlib.suppress(asyncio.QueueFull):
                self._put(channel, message, size)

    async def flush(self) -> None:
        for inbox in self.inboxes.values():
            inbox.close()
        self.inboxes.clear()
        self.queues.clear()
        self.queued_bytes.clear()
        self.groups.clear()
        self.memberships.clear()

    async def close(self) -> None:
        pass

    def _sweep(self) -> None:
        for channel, queue in list(self.queues.items()):
            # `_getters` holds the receivers waiting on the queue: a live consumer always has one.
            if channel not in self.memberships and not queue._getters:
                del self.queues[channel]
                self.queued_bytes.pop(channel, None)
