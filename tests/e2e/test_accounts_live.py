"""Accounts against the real server (docs/protocol.md, "Accounts and sharing"): sign-in at
LOGIN_URL, private rooms closed to WebSockets without a session or a token, CSRF on session
writes only, personal API tokens that stop working when revoked, password reset e-mails on the
console by default."""

from __future__ import annotations

import re

import httpx
import pytest
import websockets

from tests.e2e.accounts import PASSWORD, Person, close_code, next_of, post_form, receive
from tests.e2e.server import LiveServer

pytestmark = pytest.mark.e2e

OP = {"type": "op", "version": 0, "seq": 1, "op": ["x"]}


@pytest.fixture(scope="module")
def people(shared_server: LiveServer):
    made: dict[str, Person] = {}

    def person(username: str) -> Person:
        if username not in made:
            made[username] = Person(shared_server.http_url, username)
        return made[username]

    yield person
    for each in made.values():
        each.close()


def private_room(owner: Person) -> dict:
    response = owner.call("POST", "/rooms", {"private": True, "code": "secret"})
    assert response.status_code == 201, response.text
    return response.json()


def test_signing_in_is_djangos_login_view_with_username_and_password(shared_server, people):
    people("ursula")
    browser = httpx.Client(base_url=shared_server.http_url, timeout=10)
    response = post_form(browser, "/accounts/login/", {"username": "ursula", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["location"] == "/my-rooms/"
    assert browser.get("/rooms").json() == {"rooms": []}
    assert httpx.get(f"{shared_server.http_url}/rooms").status_code == 401


async def test_a_private_room_closes_sockets_without_a_session_or_a_token(shared_server, people):
    alice, stranger = people("alice"), people("stranger")
    room = private_room(alice)
    url = f"{shared_server.ws_base}/ws/{room['room_id']}"
    async with websockets.connect(url, open_timeout=10) as anonymous:
        assert await close_code(anonymous) == 4403
    async with stranger.ws(shared_server.ws_base, room["room_id"]) as signed_in_stranger:
        assert await close_code(signed_in_stranger) == 4403
    async with alice.ws(shared_server.ws_base, room["room_id"], "name=x") as owner:
        init = await receive(owner)
        assert (init["type"], init["access"], init["name"]) == ("init", "edit", "alice")
    async with websockets.connect(f"{url}?token={room['view_token']}", open_timeout=10) as viewer:
        assert (await receive(viewer))["access"] == "view"


async def test_a_members_open_socket_follows_their_role(shared_server, people):
    alice, bob = people("alice"), people("bob")
    room = private_room(alice)
    base = f"/rooms/{room['room_id']}/members"
    assert alice.call("POST", base, {"user": "bob", "role": "viewer"}).status_code == 201
    async with bob.ws(shared_server.ws_base, room["room_id"]) as ws:
        assert (await receive(ws))["access"] == "view"
        assert alice.call("PATCH", f"{base}/bob", {"role": "editor"}).status_code == 200
        assert await next_of(ws, "access") == {"type": "access", "access": "edit"}
        await ws.send('{"type": "op", "version": 0, "seq": 1, "op": ["x"]}')
        assert (await next_of(ws, "ack", "error"))["type"] == "ack"
        assert alice.call("DELETE", f"{base}/bob").status_code == 204
        assert (await next_of(ws, "error"))["code"] == "forbidden"
        assert await close_code(ws) == 4403


def test_csrf_is_enforced_on_session_writes_and_only_there(shared_server, people):
    alice = people("alice")
    refused = alice.call("POST", "/rooms", {"private": True}, csrf=False)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert alice.call("POST", "/rooms", {"private": True}).status_code == 201
    room = private_room(alice)
    member = alice.call(
        "POST", f"/rooms/{room['room_id']}/members", {"user": "bob", "role": "viewer"}, csrf=False
    )
    assert member.status_code == 403
    link = alice.call("PUT", f"/rooms/{room['room_id']}/link", {"access": "none"}, csrf=False)
    assert link.status_code == 403
    assert alice.call("GET", f"/rooms/{room['room_id']}/link").json()["access"] == "edit"
    # No session, no CSRF token needed: anonymous and link-token calls work as before.
    anonymous = httpx.post(f"{shared_server.http_url}/rooms", json={"private": True}, timeout=10)
    assert anonymous.status_code == 201


async def test_api_tokens_work_without_cookies_and_stop_working_when_revoked(shared_server, people):
    alice, _ = people("alice"), people("bob")
    made = post_form(alice.http, "/accounts/", {"action": "create", "name": "deploy"})
    token = re.search(r'<code id="new-token">(pat_[^<]+)</code>', made.text).group(1)
    bearer = {"Authorization": f"Bearer {token}"}
    script = httpx.Client(base_url=shared_server.http_url, headers=bearer, timeout=10)
    created = script.post("/rooms", json={"private": True, "name": "by script"})
    assert created.status_code == 201
    room_id = created.json()["room_id"]
    assert room_id in [room["room_id"] for room in script.get("/rooms").json()["rooms"]]
    shared = script.post(f"/rooms/{room_id}/members", json={"user": "bob", "role": "viewer"})
    assert shared.status_code == 201
    assert script.put(f"/rooms/{room_id}/link", json={"access": "none"}).status_code == 200
    url = f"{shared_server.ws_base}/ws/{room_id}"
    async with websockets.connect(url, additional_headers=bearer, open_timeout=10) as ws:
        init = await receive(ws)
        assert (init["access"], init["name"]) == ("edit", "alice")

    token_id = re.search(r'name="token_id" value="(\d+)"', alice.http.get("/accounts/").text)[1]
    revoked = post_form(alice.http, "/accounts/", {"action": "revoke", "token_id": token_id})
    assert revoked.status_code == 302
    for response in (script.get("/rooms"), script.get(f"/rooms/{room_id}")):
        assert response.status_code == 401 and set(response.json()) == {"error"}
    async with websockets.connect(url, additional_headers=bearer, open_timeout=10) as ws:
        assert await close_code(ws) == 4403
    script.close()


def test_a_password_reset_link_is_printed_on_the_console_by_default(shared_server, people):
    people("carol")
    browser = httpx.Client(base_url=shared_server.http_url, timeout=10)
    sent = post_form(browser, "/accounts/password_reset/", {"email": "carol@example.com"})
    assert sent.status_code == 302
    link = shared_server.wait_for_line(r"http://127\.0\.0\.1:\d+(/accounts/reset/\S+)")
    assert "new_password1" in browser.get(link[1], follow_redirects=True).text
