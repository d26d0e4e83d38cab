"""Writing to a socket without a task per write: the room fan-out's send (rooms/live.py).

An ASGI server's `send` writes the frame synchronously unless the socket's buffer is full, and
only then waits for it to drain (uvicorn, and daphne as `manage.py runserver` tunes it: plain
daphne never waits and buffers without bound). Running each send as a task, or
in each connection's own task, costs a task wake-up per socket per change; stepping the
coroutine by hand costs nothing when it finishes at once, which is almost always, and still
lets a slow socket wait on its own, without holding up the rest of the room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any


def send_now(
    send: Callable[[dict[str, Any]], Awaitable[None]], message: dict[str, Any]
) -> asyncio.Future | None:
    """Start `send(message)` now. None if it completed; else a task that completes it."""
    coroutine = send(message)
    try:
        suspended_on = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_Rest(coroutine, suspended_on))


class _Rest:
    """The rest of a coroutine that was stepped until its first suspension, as an awaitable.

    It hands what the coroutine waits on (a future, already marked as awaited) to the task that
    runs it, and resumes the coroutine with whatever the task sends back, as `await` would.
    """

    __slots__ = ("coroutine", "suspended_on")

    def __init__(self, coroutine: Coroutine, suspended_on: Any) -> None:
        self.coroutine = coroutine
        self.suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, Any]:
        waiting_on = self.suspended_on
        while True:
            try:
                value = yield waiting_on
            except BaseException as error:  # cancellation included: the coroutine decides
                step = self.coroutine.throw
                argument: Any = error
            else:
                step = self.coroutine.send
                argument = value
            try:
                waiting_on = step(argument)
            except StopIteration as done:
                return done.value
