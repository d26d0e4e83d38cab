"""A WebSocket that cannot be served because Redis or the database is down is closed with 4503
(docs/protocol.md section 4), never answered with an HTTP 500 or dropped without a close frame.

The room's modules do not catch these failures one by one: whatever step of the connection
raised one (the session lookup before the handshake, the room's load, presence, the channel
layer), `OutageGuard` around the WebSocket application closes the socket with 4503. The client
retries about every second, so it is back within a second or so of the service (see
collab-client.js). Failures while handling a message stay 4500: nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis.exceptions
from django.db import InterfaceError, OperationalError

from rooms.protocol import CLOSE_INTERNAL_ERROR, CLOSE_UNAVAILABLE

logger = logging.getLogger(__name__)

# What a service that is down or unreachable raises: Django's database errors for a lost or
# refused connection (and SQLite's "database is locked"), redis-py's for Redis, and the
# operating system's when a socket is refused or reset.
UNAVAILABLE = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
# What sending to a socket that is gone raises (uvicorn: an OSError; daphne: a RuntimeError).
GONE = (OSError, RuntimeError)


class OutageGuard:
    """ASGI middleware for the WebSocket stack: closes with 4503 when a service is down (4500
    on any other failure that reaches it)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = {"accepted": False, "closed": False}

        def watching_send(message: dict[str, Any]) -> Any:
            # A plain function returning the server's own awaitable: the room fan-out steps
            # sends by hand (rooms/sockets.py), and this adds no coroutine to each one.
            kind = message["type"]
            if kind == "websocket.accept":
                state["accepted"] = True
            elif kind == "websocket.close":
                state["closed"] = True
            return send(message)

        try:
            await self.application(scope, receive, watching_send)
        except UNAVAILABLE as error:
            logger.warning(
                "WebSocket %s closed with %d: a service is unavailable (%s: %s)",
                scope.get("path", "?"),
                CLOSE_UNAVAILABLE,
                type(error).__name__,
                error,
            )
            code = CLOSE_UNAVAILABLE
        except Exception:
            # A bug, not an outage: its traceback is logged, and the client still gets a
            # close code (4500: reconnect and resume) rather than an HTTP 500 or a bare drop.
            logger.exception("WebSocket %s failed", scope.get("path", "?"))
            code = CLOSE_INTERNAL_ERROR
        else:
            return
        if state["closed"]:
            return
        with contextlib.suppress(*GONE):
            if not state["accepted"]:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": code})
