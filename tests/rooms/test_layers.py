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
