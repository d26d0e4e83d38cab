"""The admin's side of accounts: a room's owner, members (with what each may do, as rooms/access.py
decides) and access record; changes made there go through rooms/sharing.py, so they are
recorded as the admin's; users with their API tokens."""

from __future__ import annotations

import pytest

from rooms import accounts, document
from rooms.models import AccessChange, Room, RoomMember
from tests.rooms.support_accounts import user_new

pytestmark = pytest.mark.django_db


def management(prefix: str, total: int, initial: int) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def change_form(room: Room, **fields) -> dict[str, str]:
    """The room's change form as the admin posts it, with no inline rows."""
    return {
        "owner": str(room.owner_id or ""),
        "link_access": room.link_access,
        **management("members", 0, 0),
        **management("access_changes", 0, 0),
        **management("ops", 0, 0),
        **fields,
    }


def test_a_room_shows_its_owner_members_with_their_access_and_the_access_record(admin_client):
    alice, bob = user_new("alice"), user_new("bob")
    room, _ = document.room_create_private(owner=alice, name="team")
    RoomMember.objects.create(room=room, user=bob, role="viewer")
    AccessChange.objects.create(
        room=room, actor=alice, actor_name="alice", via="session", action="member_added",
        subject=bob, subject_name="bob", after="viewer",
    )  # fmt: skip
    listing = admin_client.get("/admin/rooms/room/").content.decode()
    assert "alice" in listing and "Link access" in listing
    page = admin_client.get(f"/admin/rooms/room/{room.id}/change/").content.decode()
    assert 'name="owner"' in page and 'name="link_access"' in page
    assert 'name="members-0-role"' in page
    assert "member added" in page and "Access changes" in page
    assert ">view<" in page  # what the viewer may do, from rooms/access.py
    record = admin_client.get("/admin/rooms/accesschange/").content.decode()
    assert room.id in record and "member added" in record


def test_members_added_and_changed_in_the_admin_are_recorded_as_the_admins(admin_client):
    alice, bob = user_new("alice"), user_new("bob")
    room, _ = document.room_create_private(owner=alice)
    path = f"/admin/rooms/room/{room.id}/change/"
    added = admin_client.post(
        path,
        change_form(
            room,
            **management("members", 1, 0),
            **{
                "members-0-user": str(bob.pk),
                "members-0-role": "viewer",
                "members-0-room": room.id,
            },
        ),
    )
    assert added.status_code == 302, added.content.decode()[-3000:]
    member = RoomMember.objects.get()
    changed = admin_client.post(
        path,
        change_form(
            room,
            link_access="none",
            **management("members", 1, 1),
            **management("access_changes", 1, 1),
            **{
                "members-0-id": str(member.pk),
                "members-0-user": str(bob.pk),
                "members-0-role": "editor",
                "members-0-room": room.id,
                "access_changes-0-id": str(AccessChange.objects.get().pk),
                "access_changes-0-room": room.id,
            },
        ),
    )
    assert changed.status_code == 302, changed.content.decode()[-3000:]
    records = [
        (c.actor_name, c.via, c.action, c.subject_name, c.before, c.after)
        for c in AccessChange.objects.order_by("id")
    ]
    assert records == [
        ("admin", "admin", "member_added", "bob", "", "viewer"),
        ("admin", "admin", "link_changed", "", "edit", "none"),
        ("admin", "admin", "role_changed", "bob", "viewer", "editor"),
    ]
    assert Room.objects.get(id=room.id).access_version == 3


def test_the_owner_can_be_handed_over_in_the_admin_and_not_listed_as_a_member(admin_client):
    alice, bob = user_new("alice"), user_new("bob")
    room, _ = document.room_create_private(owner=alice)
    path = f"/admin/rooms/room/{room.id}/change/"
    refused = admin_client.post(
        path,
        change_form(
            room,
            **management("members", 1, 0),
            **{
                "members-0-user": str(alice.pk),
                "members-0-role": "editor",
                "members-0-room": room.id,
            },
        ),
    )
    assert refused.status_code == 200 and "owns this room" in refused.content.decode()
    assert not RoomMember.objects.exists()
    handed = admin_client.post(path, change_form(room, owner=str(bob.pk)))
    assert handed.status_code == 302
    assert Room.objects.get(id=room.id).owner == bob
    change = AccessChange.objects.get()
    assert (change.action, change.before, change.after) == ("owner_changed", "alice", "bob")


def test_users_are_listed_with_their_api_tokens_never_the_tokens_themselves(admin_client):
    alice = user_new("alice")
    record, token = accounts.api_token_create(user=alice, name="deploy bot")
    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert "deploy bot" in page and record.hint in page and token not in page
