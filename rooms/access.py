"""Who may read and who may edit a room: the one place that decides (docs/protocol.md, "Private
rooms" and "Accounts and sharing").

Public rooms are open to anyone with their id. A private room is open to its owner and members,
by role (owner and editor: edit; viewer: view), and to whoever holds one of its links, as far as
its link access allows: "edit" (the edit token edits, the view token views), "view" (both view)
or "none" (neither opens it). Someone with both a role and a link gets the better of the two.
Who may change a room's sharing: its owners (the creator and members with the "owner" role).

Views, the WebSocket consumer, the admin and the pages ask here; nothing else decides access.
Only SHA-256 hashes of link tokens are stored (rooms/accounts.py), so a database leak reveals
no usable token.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Literal, Protocol

from channels.db import database_sync_to_async
from django.http import HttpRequest

from rooms import accounts
from rooms.models import LinkAccess, Role, Room, RoomMember

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

Access = Literal["edit", "view"]

ROLE_ACCESS: dict[str, Access] = {Role.OWNER: "edit", Role.EDITOR: "edit", Role.VIEWER: "view"}


class Links(Protocol):
    """What decides a link's access: a Room row, or a live room's copy of it (rooms/live.py)."""

    private: bool
    link_access: str
    edit_token_hash: str
    view_token_hash: str


def token_access(room: Links, token: str | None) -> Access | None:
    """What a link token gives in a private room, under the room's link access."""
    if not token or room.link_access == LinkAccess.NONE:
        return None
    presented = accounts.token_hash(token)
    # Constant-time comparisons, both always made, so timing says nothing about either token.
    is_edit = hmac.compare_digest(presented, room.edit_token_hash)
    is_view = hmac.compare_digest(presented, room.view_token_hash)
    if not (is_edit or is_view):
        return None
    return "edit" if is_edit and room.link_access == LinkAccess.EDIT else "view"


def room_access(room: Links, *, role: str | None = None, token: str | None = None) -> Access | None:
    """The access someone with this role (None: no account, or not a member) and this link
    token gets to a room; None means no access."""
    if not room.private:
        return "edit"
    by_role = ROLE_ACCESS.get(role) if role else None
    if by_role == "edit":
        return "edit"
    return token_access(room, token) or by_role


def may_manage(role: str | None) -> bool:
    """Whether this role may change who has access (members, link access, the link itself)."""
    return role == Role.OWNER


def room_role(room: Room, user: AbstractBaseUser | None) -> str | None:
    """The account's role in the room: "owner" for its creator, a member's role, else None."""
    if user is None or not user.is_authenticated:
        return None
    if room.owner_id == user.pk:
        return Role.OWNER
    return (
        RoomMember.objects.filter(room_id=room.id, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )


@database_sync_to_async
def role_read(room_id: str, user_id: int) -> tuple[str | None, int] | None:
    """(the account's role, the room's access version), for a connection; None: no room.

    The version is read first: should a change land in between, the role is the newer one and
    the version the older, and a later refresh of that version reads the role again."""
    row = Room.objects.filter(id=room_id).values_list("access_version", "owner_id").first()
    if row is None:
        return None
    version, owner_id = row
    if owner_id == user_id:
        return Role.OWNER, version
    role = (
        RoomMember.objects.filter(room_id=room_id, user_id=user_id)
        .values_list("role", flat=True)
        .first()
    )
    return role, version


@database_sync_to_async
def access_state_read(room_id: str, user_ids: list[int]) -> tuple[dict, dict[int, str]] | None:
    """A room's link fields with its access version, and the roles of these accounts (those
    without one are left out); None when the room is gone. For a live room's refresh."""
    fields = ("access_version", "owner_id", "private", "link_access")
    row = (
        Room.objects.filter(id=room_id)
        .values(*fields, "edit_token_hash", "view_token_hash")
        .first()
    )
    if row is None:
        return None
    roles = dict(
        RoomMember.objects.filter(room_id=room_id, user_id__in=user_ids).values_list(
            "user_id", "role"
        )
    )
    if row["owner_id"] in user_ids:
        roles[row["owner_id"]] = Role.OWNER
    return row, roles


def rooms_of(user: AbstractBaseUser) -> list[tuple[Room, str]]:
    """The rooms this account owns or is a member of, with its role, newest activity first."""
    owned = Room.objects.filter(owner_id=user.pk)
    memberships = dict(RoomMember.objects.filter(user_id=user.pk).values_list("room_id", "role"))
    rooms = (owned | Room.objects.filter(id__in=list(memberships))).order_by("-updated_at", "id")
    return [
        (room, Role.OWNER if room.owner_id == user.pk else memberships[room.id])
        for room in rooms.only("id", "name", "private", "owner_id", "updated_at", "created_at")
    ]


# -- REST ------------------------------------------------------------------------------------


def request_access(request: HttpRequest, room: Room) -> Access | None:
    """What a REST request may do in a room: by its account's role (session or API token) and
    its link token (`Authorization: Bearer <token>` or `?token=`). Raises accounts.Refused for
    a bad API token or a session write without its CSRF token."""
    if not room.private:
        return "edit"
    identity = accounts.request_identity(request)
    return room_access(room, role=room_role(room, identity.user), token=identity.room_token)
