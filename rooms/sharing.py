"""Changing who may enter a room: members and their roles, what the room's links allow, new links
in place of the old ones, and (from the admin) its owner.

Each change is one transaction that also raises the room's access version and records who did
what (AccessChange). Once committed, the room's open connections on every process are told
(rooms/live.py): each decides its access again (rooms/access.py), so a removed member is
disconnected and a demoted one becomes read-only at once. Whether the caller may make the
change is for the caller to ask rooms/access.py; the REST views and the admin call here. What
the API looks like: docs/protocol.md, "Accounts and sharing".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F

from rooms import accounts, live
from rooms.models import AccessChange, LinkAccess, Role, Room, RoomMember

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

Action = AccessChange.Action


class SharingError(Exception):
    """A change that cannot be made; nothing changed. `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, and through what: "page" (a signed-in browser), "api_token" or
    "admin"."""

    user: AbstractBaseUser | None
    via: str


@dataclass(frozen=True, slots=True)
class Member:
    user: AbstractBaseUser
    role: str
    creator: bool  # the room's owner by creation (Room.owner), not a RoomMember row


def room_members(room: Room) -> list[Member]:
    """Everyone with a role in the room: its creator first, then members in invitation order."""
    members = [Member(room.owner, Role.OWNER, True)] if room.owner_id else []
    rows = RoomMember.objects.filter(room_id=room.id).select_related("user").order_by("added_at")
    return members + [Member(row.user, row.role, False) for row in rows]


def member_invite(*, room: Room, invitee: str, role: str, actor: Actor) -> Member:
    """Give the account named by `invitee` (a user name, or an e-mail address) a role."""
    _require_private(room)
    _require_role(role)
    user = _account_named(invitee)
    with _changing(room) as locked:
        if locked.owner_id == user.pk:
            raise SharingError(409, f"{user.get_username()} owns this room already")
        if RoomMember.objects.filter(room_id=room.id, user_id=user.pk).exists():
            raise SharingError(
                409, f"{user.get_username()} is a member already: change their role instead"
            )
        RoomMember.objects.create(room_id=room.id, user=user, role=role)
        _record(locked, actor, Action.MEMBER_ADDED, subject=user, after=role)
    return Member(user, role, False)


def member_role_set(*, room: Room, username: str, role: str, actor: Actor) -> Member:
    _require_private(room)
    _require_role(role)
    with _changing(room) as locked:
        member = _membership(locked, username)
        before = member.role
        if before != role:
            RoomMember.objects.filter(id=member.id).update(role=role)
            _record(
                locked, actor, Action.ROLE_CHANGED, subject=member.user, before=before, after=role
            )
    return Member(member.user, role, False)


def member_remove(*, room: Room, username: str, actor: Actor) -> None:
    _require_private(room)
    with _changing(room) as locked:
        member = _membership(locked, username)
        member.delete()
        _record(locked, actor, Action.MEMBER_REMOVED, subject=member.user, before=member.role)


def link_access_set(*, room: Room, access: str, actor: Actor) -> None:
    """What the room's links give: "edit" (the edit link edits, the view link views), "view"
    (both view) or "none" (neither opens the room)."""
    _require_private(room)
    if access not in LinkAccess.values:
        raise SharingError(400, "'access' must be one of " + ", ".join(LinkAccess.values))
    with _changing(room) as locked:
        if locked.link_access != access:
            Room.objects.filter(id=room.id).update(link_access=access)
            _record(
                locked, actor, Action.LINK_ACCESS_CHANGED, before=locked.link_access, after=access
            )


def link_rotate(*, room: Room, actor: Actor) -> dict[str, str]:
    """New edit and view tokens in place of the old ones, which stop working at once, also for
    connections they opened. Returns {"token", "view_token"}: the only time they are shown."""
    _require_private(room)
    tokens = {"token": accounts.token_new(), "view_token": accounts.token_new()}
    with _changing(room) as locked:
        Room.objects.filter(id=room.id).update(
            edit_token_hash=accounts.token_hash(tokens["token"]),
            view_token_hash=accounts.token_hash(tokens["view_token"]),
        )
        _record(locked, actor, Action.LINK_ROTATED)
    return tokens


def owner_set(*, room: Room, owner: AbstractBaseUser | None, actor: Actor) -> None:
    """Make `owner` the room's owner by creation (the admin's way to hand a room over). A
    member who becomes the owner leaves the member list: the owner's role is not a row."""
    with _changing(room) as locked:
        if locked.owner_id == (owner.pk if owner else None):
            return
        before = locked.owner
        if owner is not None:
            RoomMember.objects.filter(room_id=room.id, user_id=owner.pk).delete()
        Room.objects.filter(id=room.id).update(owner=owner)
        _record(
            locked,
            actor,
            Action.OWNER_CHANGED,
            subject=owner,
            before=before.get_username() if before else "",
            after=owner.get_username() if owner else "",
        )


# -- the pieces --------------------------------------------------------------------------------


@contextlib.contextmanager
def _changing(room: Room) -> Iterator[Room]:
    """One access change: the room row locked, so that concurrent changes apply one after the
    other and each records what it saw; the room's access version raised; its connections told
    once the transaction commits (also when it is the admin's, around this one)."""
    with transaction.atomic():
        # Only the room row: PostgreSQL refuses to lock the nullable side of the owner join.
        locked = (
            Room.objects.select_for_update(of=("self",)).select_related("owner").get(id=room.id)
        )
        yield locked
        Room.objects.filter(id=room.id).update(access_version=F("access_version") + 1)
        version = Room.objects.values_list("access_version", flat=True).get(id=room.id)
        transaction.on_commit(partial(_announce, room.id, version))


def _announce(room_id: str, access_version: int) -> None:
    async_to_sync(live.access_changed)(room_id, access_version)


def _record(
    room: Room,
    actor: Actor,
    action: str,
    *,
    subject: AbstractBaseUser | None = None,
    before: str = "",
    after: str = "",
) -> None:
    AccessChange.objects.create(
        room_id=room.id,
        actor=actor.user,
        actor_name=actor.user.get_username() if actor.user else "",
        via=actor.via,
        action=action,
        subject=subject,
        subject_name=subject.get_username() if subject else "",
        before=before,
        after=after,
    )


def _require_private(room: Room) -> None:
    if not room.private:
        raise SharingError(
            409, "this room is public: anyone with its id may edit it, so it has no sharing"
        )


def _require_role(role: object) -> None:
    if role not in Role.values:
        raise SharingError(400, "'role' must be one of " + ", ".join(Role.values))


def _account_named(invitee: object) -> AbstractBaseUser:
    """The account with this user name or, failing that, this e-mail address."""
    if not isinstance(invitee, str) or not invitee.strip():
        raise SharingError(400, "'user' must be a user name or an e-mail address")
    invitee = invitee.strip()
    users = get_user_model().objects
    user = users.filter(username=invitee).first()
    if user is not None:
        return user
    by_email = list(users.filter(email__iexact=invitee)[:2]) if "@" in invitee else []
    if len(by_email) > 1:
        raise SharingError(409, "several accounts use that e-mail address: invite by user name")
    if not by_email:
        raise SharingError(404, f"no account with the user name or e-mail address {invitee!r}")
    return by_email[0]


def _membership(room: Room, username: str) -> RoomMember:
    if room.owner is not None and room.owner.get_username() == username:
        raise SharingError(
            409, f"{username} owns this room by creating it: that role cannot change here"
        )
    member = (
        RoomMember.objects.filter(room_id=room.id, user__username=username)
        .select_related("user")
        .first()
    )
    if member is None:
        raise SharingError(404, f"{username!r} is not a member of this room")
    return member
