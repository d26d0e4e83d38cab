"""The wire vocabulary shared by the consumer, the REST views and the tests.

Message shapes, error codes and limits live here so that every error is produced the same way.
The full interface is described in docs/protocol.md.
"""

import json
import re
import secrets
from typing import Any

from django.http import JsonResponse

# Every WebSocket frame is compact JSON with non-ASCII kept as is. One encoder for all of them:
# json.dumps with non-default options builds a new encoder on every call.
_FRAME_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_frame(message: dict[str, Any]) -> str:
    return _FRAME_ENCODER.encode(message)


ROOM_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")

MAX_MESSAGE_BYTES = 1_048_576  # a frame of exactly this many bytes is still accepted
MAX_NAME_LENGTH = 64
MAX_SEQ = 2**63 - 1  # stored in a 64-bit integer column

# WebSocket close codes.
CLOSE_NORMAL = 1000
# The server failed to handle a message (e.g. the database was down); nothing was acked, so
# reconnect and resume. Not 1011: daphne's WebSocket layer only lets applications send 1000
# and 3000-4999.
CLOSE_INTERNAL_ERROR = 4500
CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_IDLE = 4408  # nothing received for COLLAB_IDLE_TIMEOUT_S; reconnect when needed
# The connection fell too far behind: what it has not read yet outgrew COLLAB_SEND_BACKLOG_BYTES
# or the room's recent changes in memory (docs/deploying.md). Reconnect and resume; the
# frames sent before the close were complete and in order.
CLOSE_TOO_FAR_BEHIND = 4413
# The room already has COLLAB_ROOM_MAX_CONNECTIONS connections (docs/deploying.md): try again
# later, with backoff.
CLOSE_ROOM_FULL = 4429
# Redis or the database is down: the connection could not be set up (rooms/outage.py).
# Reconnect in about a second.
CLOSE_UNAVAILABLE = 4503

# WebSocket error codes (docs/protocol.md, section 11).
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
BAD_OP = "bad_op"
VERSION_TOO_OLD = "version_too_old"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
FORBIDDEN = "forbidden"
ROOM_FULL = "room_full"


class ProtocolError(Exception):
    """Bad client input: becomes one `error` message; nothing changes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_valid_room_id(value: object) -> bool:
    return isinstance(value, str) and ROOM_ID_RE.fullmatch(value) is not None


def new_room_id() -> str:
    # 16 random bytes = 128 bits, above the 96 docs/protocol.md promises; URL-safe alphabet.
    return secrets.token_urlsafe(16)


def ws_url(room_id: str) -> str:
    return f"/ws/{room_id}"


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def json_error(status: int, message: str) -> JsonResponse:
    """The one shape of every REST error: `{"error": "..."}` with a 4xx status."""
    return JsonResponse({"error": message}, status=status)
