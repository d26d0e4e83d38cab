"""Who may read and who may edit a room (docs/protocol.md, "Private rooms").

Public rooms are open to anyone with the link. A private room has two tokens: the edit token
gives full access, the view token read-only access. Only SHA-256 hashes are stored; tokens are
random (256 bits), so a plain hash is enough and a database leak reveals no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Literal

from django.http import HttpRequest

from rooms.models import Room

if TYPE_CHECKING:
    from rooms.live import LiveRoom

Access = Literal["edit", "view"]


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
