"""Accounts on REST (docs/protocol.md, "Accounts and sharing"): rooms owned by their creator,
`GET /rooms`, CSRF on session writes only, personal API tokens, members, link access and new
links, 401 and 403 as JSON, and the record of who changed access."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client

from rooms import accounts
from rooms.models import AccessChange, ApiToken, Room, RoomMember
from tests.rooms.support_accounts import Browser, user_new

pytestmark = pytest.mark.django_db


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


@pytest.fixture
def alice():
    return Browser(user_new("alice"))


@pytest.fixture
def bob():
    return Browser(user_new("bob"))


@pytest.fixture
def owned(alice) -> dict:
    response = alice.call("POST", "/rooms", {"private": True, "code": "secret", "name": "team"})
    assert response.status_code == 201, response.content
    return response.json()


def invite(owner: Browser, room: dict, who: str, role: str):
    return owner.call("POST", f"/rooms/{room['room_id']}/members", {"user": who, "role": role})


# -- rooms of an account ------------------------------------------------------------------------


def test_listing_your_rooms_needs_an_account(client):
    response = client.get("/rooms")
    assert_json_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_private_room_created_signed_in_is_owned_by_its_creator_and_listed(alice, owned):
    assert set(owned) == {"room_id", "ws_url", "token", "view_token"}
    assert Room.objects.get(id=owned["room_id"]).owner == alice.user
    rooms = alice.call("GET", "/rooms").json()["rooms"]
    assert [(r["room_id"], r["role"], r["private"]) for r in rooms] == [
        (owned["room_id"], "owner", True)
    ]


def test_your_rooms_are_the_ones_you_own_or_belong_to_newest_activity_first(alice, bob, owned):
    bobs = bob.call("POST", "/rooms", {"private": True}).json()
    assert invite(bob, bobs, "alice", "viewer").status_code == 201
    Room.objects.create(id="someone-elses", private=True)
    listed = [(r["room_id"], r["role"]) for r in alice.call("GET", "/rooms").json()["rooms"]]
    assert listed == [(bobs["room_id"], "viewer"), (owned["room_id"], "owner")]
    later = Room.objects.get(id=bobs["room_id"]).updated_at + timedelta(minutes=1)
    Room.objects.filter(id=owned["room_id"]).update(updated_at=later)  # an edit, in effect
    assert alice.call("GET", "/rooms").json()["rooms"][0]["room_id"] == owned["room_id"]


def test_a_public_room_created_signed_in_is_owned_too(alice):
    room = alice.call("POST", "/rooms", {"name": "open"}).json()
    assert Room.objects.get(id=room["room_id"]).owner == alice.user
    assert [r["role"] for r in alice.call("GET", "/rooms").json()["rooms"]] == ["owner"]


# -- CSRF: only where a session is read -------------------------------------------------------


def test_a_session_write_without_the_csrf_token_is_refused_and_creates_nothing(alice):
    before = Room.objects.count()
    response = alice.call("POST", "/rooms", {"private": True}, csrf=False)
    assert "CSRF" in assert_json_error(response, 403)
    assert Room.objects.count() == before


def test_anonymous_calls_need_no_csrf_token():
    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/rooms", data="{}", content_type="application/json")
    assert response.status_code == 201
    assert Room.objects.get(id=response.json()["room_id"]).owner is None


def test_a_link_token_read_needs_no_csrf_and_a_session_read_neither(alice, owned):
    anonymous = Client(enforce_csrf_checks=True)
    by_token = anonymous.get(
        f"/rooms/{owned['room_id']}", HTTP_AUTHORIZATION=f"Bearer {owned['view_token']}"
    )
    assert by_token.status_code == 200
    assert alice.call("GET", f"/rooms/{owned['room_id']}", csrf=False).status_code == 200


# -- personal API tokens ----------------------------------------------------------------------


def test_an_api_token_signs_a_script_in_without_cookie_or_csrf(alice, owned):
    _, token = accounts.api_token_create(user=alice.user, name="ci")
    script = Client(enforce_csrf_checks=True)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert [r["room_id"] for r in script.get("/rooms", **auth).json()["rooms"]] == [
        owned["room_id"]
    ]
    assert script.get(f"/rooms/{owned['room_id']}", **auth).json()["code"] == "secret"
    created = script.post(
        "/rooms", data='{"private": true}', content_type="application/json", **auth
    )
    assert created.status_code == 201
    assert Room.objects.get(id=created.json()["room_id"]).owner == alice.user


def test_a_revoked_or_unknown_api_token_is_refused_with_401(alice, owned):
    record, token = accounts.api_token_create(user=alice.user, name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert Client().get("/rooms", **auth).status_code == 200
    assert accounts.api_token_revoke(user=alice.user, token_id=record.id)
    for path in ("/rooms", f"/rooms/{owned['room_id']}"):
        assert "API token" in assert_json_error(Client().get(path, **auth), 401)
    unknown = {"HTTP_AUTHORIZATION": "Bearer pat_" + accounts.token_new()}
    assert_json_error(Client().post("/rooms", content_type="application/json", **unknown), 401)


def test_an_api_token_is_stored_only_as_a_hash(alice):
    _, token = accounts.api_token_create(user=alice.user, name="ci")
    stored = json.dumps(list(ApiToken.objects.values()), default=str)
    assert token not in stored and token[4:] not in stored
    assert token.startswith("pat_") and len(token) == 47


def test_one_account_cannot_revoke_another_accounts_token(alice, bob):
    record, _ = accounts.api_token_create(user=alice.user, name="ci")
    assert not accounts.api_token_revoke(user=bob.user, token_id=record.id)
    assert ApiToken.objects.filter(id=record.id).exists()


# -- reading a private room as a member -------------------------------------------------------


def test_members_read_a_private_room_by_their_session_and_strangers_get_403(alice, bob, owned):
    path = f"/rooms/{owned['room_id']}"
    assert "private" in assert_json_error(bob.call("GET", path), 403)
    assert invite(alice, owned, "bob", "viewer").status_code == 201
    assert bob.call("GET", path).json()["code"] == "secret"
    assert bob.call("GET", f"{path}/history").status_code == 200
    autocomplete = bob.call("GET", f"/autocomplete?room={owned['room_id']}&line=1&column=3")
    assert autocomplete.status_code == 200


# -- members ----------------------------------------------------------------------------------


def test_an_owner_invites_by_user_name_or_e_mail_address(alice, owned):
    user_new("bob")
    user_new("carol", email="Carol@Example.com")
    by_name = invite(alice, owned, "bob", "viewer")
    assert by_name.status_code == 201
    assert by_name.json().items() >= {"username": "bob", "role": "viewer", "creator": False}.items()
    by_mail = invite(alice, owned, "carol@example.COM", "editor")
    assert by_mail.status_code == 201 and by_mail.json()["username"] == "carol"
    members = alice.call("GET", f"/rooms/{owned['room_id']}/members").json()
    assert [(m["username"], m["role"], m["creator"]) for m in members["members"]] == [
        ("alice", "owner", True),
        ("bob", "viewer", False),
        ("carol", "editor", False),
    ]
    assert members["link_access"] == "edit"
    assert members["you"] == {"username": "alice", "role": "owner", "manage": True}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"user": "nobody", "role": "viewer"}, 404),
        ({"user": "alice", "role": "viewer"}, 409),  # the owner
        ({"user": "bob", "role": "admin"}, 400),
        ({"user": "", "role": "viewer"}, 400),
        ({"role": "viewer"}, 400),
        ([], 400),
    ],
)
def test_an_invitation_that_cannot_be_made_changes_nothing(alice, bob, owned, body, status):
    response = alice.call("POST", f"/rooms/{owned['room_id']}/members", body)
    assert_json_error(response, status)
    assert not RoomMember.objects.exists() and not AccessChange.objects.exists()


def test_inviting_a_member_twice_is_a_409(alice, bob, owned):
    assert invite(alice, owned, "bob", "viewer").status_code == 201
    assert "role" in assert_json_error(invite(alice, owned, "bob", "editor"), 409)
    assert RoomMember.objects.get().role == "viewer"


def test_only_owners_manage_sharing(alice, bob, owned):
    carol = Browser(user_new("carol"))
    assert invite(alice, owned, "bob", "editor").status_code == 201
    base = f"/rooms/{owned['room_id']}"
    calls = [
        ("POST", f"{base}/members", {"user": "carol", "role": "editor"}),
        ("PATCH", f"{base}/members/bob", {"role": "viewer"}),
        ("DELETE", f"{base}/members/bob", None),
        ("PUT", f"{base}/link", {"access": "none"}),
        ("GET", f"{base}/link", None),
        ("POST", f"{base}/link/rotate", None),
    ]
    for method, path, body in calls:
        assert_json_error(bob.call(method, path, body), 403)  # an editor
        assert_json_error(carol.call(method, path, body), 403)  # a stranger
        assert_json_error(Client().generic(method, path), 401)  # signed out
    assert_json_error(carol.call("GET", f"{base}/members"), 403)
    assert RoomMember.objects.get().role == "editor"
    assert Room.objects.get(id=owned["room_id"]).link_access == "edit"
    # A member made owner manages too.
    assert alice.call("PATCH", f"{base}/members/bob", {"role": "owner"}).status_code == 200
    assert invite(bob, owned, "carol", "viewer").status_code == 201


def test_members_see_each_other_but_only_owners_see_e_mail_addresses(alice, bob, owned):
    assert invite(alice, owned, "bob", "viewer").status_code == 201
    seen_by_bob = bob.call("GET", f"/rooms/{owned['room_id']}/members").json()
    assert all("email" not in member for member in seen_by_bob["members"])
    assert seen_by_bob["you"] == {"username": "bob", "role": "viewer", "manage": False}
    seen_by_alice = alice.call("GET", f"/rooms/{owned['room_id']}/members").json()
    assert [m["email"] for m in seen_by_alice["members"]] == [
        "alice@example.com",
        "bob@example.com",
    ]


def test_role_changes_and_removals_are_recorded_with_who_when_and_how(alice, bob, owned):
    base = f"/rooms/{owned['room_id']}/members"
    assert invite(alice, owned, "bob", "viewer").status_code == 201
    changed = alice.call("PATCH", f"{base}/bob", {"role": "editor"})
    assert changed.status_code == 200 and changed.json()["role"] == "editor"
    assert alice.call("DELETE", f"{base}/bob").status_code == 204
    assert_json_error(alice.call("DELETE", f"{base}/bob"), 404)
    records = [
        (c.actor_name, c.via, c.action, c.subject_name, c.before, c.after)
        for c in AccessChange.objects.order_by("id")
    ]
    assert records == [
        ("alice", "session", "member_added", "bob", "", "viewer"),
        ("alice", "session", "role_changed", "bob", "viewer", "editor"),
        ("alice", "session", "member_removed", "bob", "editor", ""),
    ]
    assert all(c.at is not None for c in AccessChange.objects.all())
    assert Room.objects.get(id=owned["room_id"]).access_version == 3


def test_the_creator_keeps_the_owner_role(alice, owned):
    base = f"/rooms/{owned['room_id']}/members/alice"
    assert_json_error(alice.call("PATCH", base, {"role": "viewer"}), 409)
    assert_json_error(alice.call("DELETE", base), 409)


def test_a_public_room_has_no_sharing_to_change(alice, bob):
    room = alice.call("POST", "/rooms", {}).json()
    assert_json_error(invite(alice, room, "bob", "viewer"), 409)
    assert_json_error(alice.call("PUT", f"/rooms/{room['room_id']}/link", {"access": "none"}), 409)
    assert_json_error(alice.call("POST", f"/rooms/{room['room_id']}/link/rotate"), 409)


# -- the link ---------------------------------------------------------------------------------


def test_link_access_decides_what_the_links_open(alice, owned):
    path = f"/rooms/{owned['room_id']}"
    by = lambda token: Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}")  # noqa: E731
    assert alice.call("GET", f"{path}/link").json() == {
        "room_id": owned["room_id"],
        "access": "edit",
    }
    response = alice.call("PUT", f"{path}/link", {"access": "none"})
    assert response.json()["access"] == "none"
    assert by(owned["token"]).status_code == by(owned["view_token"]).status_code == 403
    assert alice.call("GET", path).status_code == 200  # the owner, by account
    assert alice.call("PUT", f"{path}/link", {"access": "view"}).status_code == 200
    assert by(owned["token"]).status_code == by(owned["view_token"]).status_code == 200
    assert_json_error(alice.call("PUT", f"{path}/link", {"access": "all"}), 400)
    assert Room.objects.get(id=owned["room_id"]).link_access == "view"


def test_a_new_link_replaces_both_old_ones(alice, owned):
    path = f"/rooms/{owned['room_id']}"
    fresh = alice.call("POST", f"{path}/link/rotate")
    assert fresh.status_code == 200
    body = fresh.json()
    assert body["access"] == "edit" and {body["token"], body["view_token"]}.isdisjoint(
        {owned["token"], owned["view_token"]}
    )
    for old in (owned["token"], owned["view_token"]):
        assert_json_error(Client().get(path, HTTP_AUTHORIZATION=f"Bearer {old}"), 403)
    for new in (body["token"], body["view_token"]):
        assert Client().get(f"{path}?token={new}").status_code == 200
    assert AccessChange.objects.get().action == "link_rotated"
    stored = json.dumps(list(Room.objects.filter(id=owned["room_id"]).values()), default=str)
    assert body["token"] not in stored


def test_sharing_changes_by_api_token_are_recorded_as_such(alice, owned):
    _, token = accounts.api_token_create(user=alice.user, name="ci")
    script = Client(enforce_csrf_checks=True)
    response = script.put(
        f"/rooms/{owned['room_id']}/link",
        data='{"access": "view"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200
    change = AccessChange.objects.get()
    assert (change.actor, change.via, change.before, change.after) == (
        alice.user,
        "api_token",
        "edit",
        "view",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/rooms/ROOM/members"),
        ("GET", "/rooms/ROOM/members/bob"),
        ("POST", "/rooms/ROOM/link"),
        ("GET", "/rooms/ROOM/link/rotate"),
    ],
)
def test_sharing_endpoints_answer_other_methods_with_a_json_405(alice, owned, method, path):
    response = alice.call(method, path.replace("ROOM", owned["room_id"]))
    assert_json_error(response, 405)
    assert "Allow" in response


def test_sharing_endpoints_answer_unknown_and_malformed_rooms_first(alice):
    assert_json_error(alice.call("GET", "/rooms/nosuchroom/members"), 404)
    assert_json_error(Client().get("/rooms/nosuchroom/members"), 404)
    assert_json_error(alice.call("GET", "/rooms/bad!id/link"), 400)
