"""rooms/sockets.py: a send that finishes at once costs no task; one that waits finishes later."""

import asyncio

import pytest

from rooms.sockets import send_now


class Socket:
    """An ASGI send that writes at once unless paused, like uvicorn's."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.written: list[str] = []

    async def send(self, message: dict) -> None:
        await self.writable.wait()
        if message["text"] == "boom":
            raise ValueError("boom")
        self.written.append(message["text"])


async def test_a_send_that_does_not_wait_completes_inline():
    socket = Socket()
    assert send_now(socket.send, {"text": "a"}) is None
    assert socket.written == ["a"]


async def test_a_send_that_waits_completes_in_a_task_once_the_socket_drains():
    socket = Socket()
    socket.writable.clear()
    pending = send_now(socket.send, {"text": "a"})
    assert pending is not None and not pending.done()
    assert socket.written == []
    socket.writable.set()
    await asyncio.wait_for(pending, 1)
    assert socket.written == ["a"]


async def test_an_error_after_waiting_reaches_the_task():
    socket = Socket()
    socket.writable.clear()
    pending = send_now(socket.send, {"text": "boom"})
    socket.writable.set()
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(pending, 1)


async def test_an_error_before_waiting_is_raised_at_once():
    socket = Socket()
    with pytest.raises(ValueError, match="boom"):
        send_now(socket.send, {"text": "boom"})


async def test_cancelling_a_waiting_send_cancels_the_send():
    socket = Socket()
    socket.writable.clear()
    pending = send_now(socket.send, {"text": "a"})
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pending, 1)
    socket.writable.set()
    await asyncio.sleep(0)
    assert socket.written == []
