"""The in-process channel layer (rooms/layers.py): Channels' layer API, fan-out by group."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull

from rooms import layers
from rooms.layers import RoomChannelLayer


async def test_group_send_reaches_every_member_and_only_them():
    layer = RoomChannelLayer()
    a, b, outsider = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("room.x", a)
    await layer.group_add("room.x", b)
    await layer.group_send("room.x", {"type": "room.change", "version": 1})
    assert await asyncio.wait_for(layer.receive(a), 1) == {"type": "room.change", "version": 1}
    assert await asyncio.wait_for(layer.receive(b), 1) == {"type": "room.change", "version": 1}
    assert layer._queue(outsider).empty()


async def test_discarded_channel_gets_nothing_more():
    layer = RoomChannelLayer()
    a = await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_discard("g", a)
    await layer.group_send("g", {"type": "x"})
    assert layer._queue(a).empty()
    assert "g" not in layer.groups


async def test_direct_send_and_receive_in_order():
    layer = RoomChannelLayer()
    a = await layer.new_channel()
    for number in range(3):
        await layer.send(a, {"type": "n", "n": number})
    assert [(await layer.receive(a))["n"] for _ in range(3)] == [0, 1, 2]


async def test_full_channel_drops_group_messages_and_refuses_direct_ones():
    layer = RoomChannelLayer(capacity=2)
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", a)
    await layer.group_add("g", b)
    for number in range(3):
        await layer.group_send("g", {"type": "n", "n": number})
    assert layer._queue(a).qsize() == 2
    with pytest.raises(ChannelFull):
        await layer.send(a, {"type": "n"})


async def test_abandoned_queues_are_swept(monkeypatch):
    monkeypatch.setattr(layers, "SWEEP_EVERY_NEW_CHANNELS", 4)
    layer = RoomChannelLayer()
    gone = await layer.new_channel()
    await layer.group_add("g", gone)
    await layer.group_send("g", {"type": "x"})
    await layer.group_discard("g", gone)
    member = await layer.new_channel()
    await layer.group_add("g", member)
    await layer.group_send("g", {"type": "x"})
    for _ in range(4):
        await layer.new_channel()
    assert gone not in layer.queues and member in layer.queues


async def test_a_waiting_receiver_keeps_its_queue():
    layer = RoomChannelLayer()
    waiting = await layer.new_channel()
    receiver = asyncio.ensure_future(layer.receive(waiting))
    await asyncio.sleep(0)  # let the receiver start waiting: it is the state under test
    layer._sweep()
    await layer.send(waiting, {"type": "late"})
    assert (await asyncio.wait_for(receiver, 1))["type"] == "late"


class Recorder:
    """A subscriber whose handling of each message waits until the test lets it finish."""

    def __init__(self) -> None:
        self.handled: list[dict] = []
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()
        self.release.set()
        self.all_in = asyncio.Event()
        self.expected = 0

    async def handle(self, message: dict) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await self.release.wait()
        self.handled.append(message)
        self.running -= 1
        if len(self.handled) == self.expected:
            self.all_in.set()


async def test_a_subscribed_channel_hands_messages_over_in_order_one_at_a_time():
    layer = RoomChannelLayer()
    channel = await layer.new_channel()
    recorder = Recorder()
    recorder.expected = 3
    recorder.release.clear()
    layer.subscribe(channel, recorder.handle)
    await layer.group_add("g", channel)
    await layer.send(channel, {"n": 1})
    await layer.group_send("g", {"n": 2})
    await layer.send(channel, {"n": 3})
    recorder.release.set()
    await asyncio.wait_for(recorder.all_in.wait(), 1)
    assert recorder.handled == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert recorder.most_at_once == 1


async def test_an_idle_subscribed_channel_holds_no_task_and_no_queue():
    layer = RoomChannelLayer()
    channel = await layer.new_channel()
    recorder = Recorder()
    recorder.expected = 1
    layer.subscribe(channel, recorder.handle)
    await layer.send(channel, {"n": 1})
    await asyncio.wait_for(recorder.all_in.wait(), 1)
    await asyncio.sleep(0)  # the drain task finishes after its last message
    inbox = layer.inboxes[channel]
    assert inbox.task is None and inbox.pending is None
    assert channel not in layer.queues


async def test_a_full_inbox_refuses_sends_and_group_sends_skip_it():
    layer = RoomChannelLayer(capacity=2)
    channel = await layer.new_channel()
    recorder = Recorder()
    recorder.release.clear()
    layer.subscribe(channel, recorder.handle)
    await layer.group_add("g", channel)
    await layer.send(channel, {"n": 1})
    await asyncio.sleep(0)  # the first is being handled; two more fill the inbox
    await layer.send(channel, {"n": 2})
    await layer.send(channel, {"n": 3})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"n": 4})
    await layer.group_send("g", {"n": 5})  # dropped for this channel, no error
    recorder.expected = 3
    recorder.release.set()
    await asyncio.wait_for(recorder.all_in.wait(), 1)
    assert [m["n"] for m in recorder.handled] == [1, 2, 3]


async def test_unsubscribing_stops_the_handling_and_later_sends_queue_instead():
    layer = RoomChannelLayer()
    channel = await layer.new_channel()
    recorder = Recorder()
    recorder.release.clear()
    layer.subscribe(channel, recorder.handle)
    await layer.send(channel, {"n": 1})
    await asyncio.sleep(0)
    task = layer.inboxes[channel].task
    layer.unsubscribe(channel)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    assert recorder.handled == []
    await layer.send(channel, {"n": 2})
    assert await asyncio.wait_for(layer.receive(channel), 1) == {"n": 2}


async def test_a_channel_queue_is_bounded_in_bytes_as_well_as_in_messages():
    layer = RoomChannelLayer(capacity=1000, capacity_bytes=1000)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    big = {"type": "x", "text": "a" * 400}
    await layer.send(channel, big)
    await layer.send(channel, big)  # about 830 bytes now held
    with pytest.raises(ChannelFull):
        await layer.send(channel, big)
    await layer.group_send("g", big)  # dropped for this channel, no error
    assert layer._queue(channel).qsize() == 2
    assert await layer.receive(channel) == big
    await layer.send(channel, big)  # room again once one is taken
    assert layer._queue(channel).qsize() == 2


async def test_one_message_fits_an_empty_queue_whatever_its_size():
    layer = RoomChannelLayer(capacity_bytes=10)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "text": "a" * 100})
    assert (await layer.receive(channel))["text"] == "a" * 100


async def test_a_subscriber_is_told_when_a_message_is_dropped_for_it():
    layer = RoomChannelLayer(capacity_bytes=1000)
    channel = await layer.new_channel()
    recorder = Recorder()
    recorder.release.clear()
    dropped = []
    layer.subscribe(channel, recorder.handle, overflow=lambda: dropped.append(True))
    await layer.group_add("g", channel)
    big = {"type": "x", "text": "a" * 400}
    await layer.group_send("g", big)
    await asyncio.sleep(0)  # the first is being handled: the inbox holds none
    await layer.group_send("g", big)
    await layer.group_send("g", big)
    assert dropped == []
    await layer.group_send("g", big)  # a third waiting would pass 1,000 bytes
    assert dropped == [True]
    recorder.expected = 3
    recorder.release.set()
    await asyncio.wait_for(recorder.all_in.wait(), 1)
    assert len(recorder.handled) == 3
