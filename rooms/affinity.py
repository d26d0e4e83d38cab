"""Room affinity: which process serves a room, and how a response tells which one did.

Every connection to a room should reach the room's home process, so that one process holds the
room, commits its changes and fans them out (docs/deploying.md, "Room affinity"). Correctness
never depends on it: a connection that lands elsewhere works through the database and Redis as
before, only at a higher cost.

- `room_of_request_line` reads the room id from the first line of an HTTP request (the
  WebSocket upgrade `GET /ws/<room_id>`), the one thing `manage.py serve --workers N` looks at
  before it hands the socket to a worker (rooms/workers.py).
- `home_of` picks a room's home among worker slots by rendezvous hashing: a room's home only
  changes when its own slot goes away.
- `process_header_middleware` and `PROCESS_HEADER`: every HTTP response, and under
  `manage.py serve` the WebSocket handshake, names the process that answered (its pid), so
  tests, benchmarks and operators can see where a proxy sent a connection.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.utils.decorators import sync_and_async_middleware

# The header that names the process (its pid) that answered. Pids are unique per machine; in
# front of several machines the proxy's own log says which machine (nginx $upstream_addr).
PROCESS_HEADER = "X-Collab-Process"

# The same paths rooms/routing.py routes to the room consumer.
_WEBSOCKET_TARGET = re.compile(rb"^/ws/([^/?#]*)/?(?:[?#]|$)")


def room_of_request_line(line: bytes) -> str | None:
    """The room id of a request line (`GET /ws/<room_id>?... HTTP/1.1`), or None when the
    request is not for a room's WebSocket (pages, REST, static files, anything malformed)."""
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return None
    match = _WEBSOCKET_TARGET.match(parts[1])
    if match is None or not match.group(1):
        return None
    try:
        return match.group(1).decode("ascii")
    except UnicodeDecodeError:
        return None


def _score(room_id: str, slot: int) -> bytes:
    return hashlib.blake2b(f"{slot}/{room_id}".encode(), digest_size=8).digest()


def home_of(room_id: str, slots: Sequence[int]) -> int:
    """The room's home among `slots` (rendezvous hashing: the slot with the highest score).

    Every process that asks with the same slots gets the same answer; removing a slot moves
    only the rooms whose home it was, each to its next-highest slot.
    """
    if not slots:
        raise ValueError("no slot to choose from")
    return max(slots, key=lambda slot: _score(room_id, slot))


def process_header_value() -> str:
    """This process's id as the header carries it."""
    return str(os.getpid())


def process_header_pair() -> tuple[bytes, bytes]:
    """The header as an ASGI `websocket.accept` carries it (uvicorn sends it; daphne, which
    serves one process anyway, drops accept headers)."""
    return (PROCESS_HEADER.lower().encode(), process_header_value().encode())


@sync_and_async_middleware
def process_header_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Adds `X-Collab-Process: <pid>` to every HTTP response (docs/deploying.md)."""
    if iscoroutinefunction(get_response):

        async def middleware(request: Any) -> Any:
            response = await get_response(request)
            response[PROCESS_HEADER] = process_header_value()
            return response

    else:

        def middleware(request: Any) -> Any:
            response = get_response(request)
            response[PROCESS_HEADER] = process_header_value()
            return response

    return middleware
