"""Who may read and who may edit a room (docs/protocol.md, "Private rooms").

Public rooms are open to anyone with the link. A private room has two tokens: the edit token
gives full access, the view token read-only access. Only SHA-256 hashes are stored; tokens are
random (256 bits), so a plain hash is enough and a database leak reveals no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING, Literal

from django.http import HttpRequest

from rooms.models import Room

if TYPE_CHECKING:
    from rooms.document import LiveRoom

Access = Literal["edit", "view"]


# Query values that must never reach a log: private rooms' tokens travel in `?token=`.
SECRET_QUERY_VALUE = re.compile(r"([?&](?:token|view_token)=)[^&#\s]*", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """`text` (a URL or a log line) with token values replaced by [redacted]."""
    return SECRET_QUERY_VALUE.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Logging filter for access logs (uvicorn's, or any) that print full URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact_secrets(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        record.msg = redact_secrets(str(record.msg))
        return True


def token_new() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def request_token(request: HttpRequest) -> str | None:
    """A REST request's token: `Authorization: Bearer <token>` or `?token=<token>`."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.GET.get("token") or None


def room_access(room: Room | LiveRoom, token: str | None) -> Access | None:
    """The access a token gives to a room; None means no access."""
    if not room.private:
        return "edit"
    if not token:
        return None
    presented = token_hash(token)
    # Constant-time comparisons, both always made, so timing says nothing about either token.
    is_edit = hmac.compare_digest(presented, room.edit_token_hash)
    is_view = hmac.compare_digest(presented, room.view_token_hash)
    if is_edit:
        return "edit"
    return "view" if is_view else None
