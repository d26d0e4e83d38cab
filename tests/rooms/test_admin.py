"""Rooms are inspectable in the Django admin: listed with their state, code readable, read-only."""

from __future__ import annotations

import pytest

from rooms import document


@pytest.fixture
def staff(admin_client):
    return admin_client


@pytest.mark.django_db
def test_admin_lists_rooms_with_id_name_version_users_and_update_time(staff):
    room = document.room_create(code="print('admin')", name="listed")
    page = staff.get("/admin/rooms/room/").content.decode()
    assert room.id in page and "listed" in page
    for column in ("Version", "Users online", "Updated at", "Private"):
        assert column in page


@pytest.mark.django_db
def test_admin_searches_rooms_and_shows_code_read_only(staff):
    room = document.room_create(code="def needle(): pass", name="haystack")
    found = staff.get("/admin/rooms/room/?q=needle").content.decode()
    assert room.id in found
    detail = staff.get(f"/admin/rooms/room/{room.id}/change/").content.decode()
    assert "def needle(): pass" in detail
    assert 'name="code"' not in detail  # shown, not editable


@pytest.mark.django_db
def test_admin_never_shows_private_room_tokens(staff):
    room, tokens = document.room_create_private(code="x")
    detail = staff.get(f"/admin/rooms/room/{room.id}/change/").content.decode()
    assert tokens["token"] not in detail and tokens["view_token"] not in detail
    assert room.edit_token_hash not in detail
