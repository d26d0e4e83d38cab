"""rooms/websocket_auth.py: a WebSocket's account from its session cookie, and no work at all
for connections without one (connection set-up is on the hot path)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from rooms.websocket_auth import SessionAccountMiddleware
from tests.rooms.support_accounts import Browser, user_new


async def user_seen(headers: list[tuple[bytes, bytes]]):
    seen = {}

    async def application(scope, receive, send):
        seen["user"] = scope["user"]

    await SessionAccountMiddleware(application)(
        {"type": "websocket", "headers": headers}, None, None
    )
    return seen["user"]


# No database mark: any query here would fail the test (pytest-django blocks database access).
@pytest.mark.parametrize(
    "headers",
    [[], [(b"origin", b"http://localhost")], [(b"cookie", b"csrftoken=abc; theme=dark")]],
)
async def test_a_connection_without_a_session_cookie_is_anonymous_without_a_query(headers):
    user = await user_seen(headers)
    assert not user.is_authenticated


@pytest.mark.django_db(transaction=True)
async def test_a_session_cookie_brings_its_account():
    alice = await sync_to_async(lambda: Browser(user_new("alice")))()
    cookie = f"csrftoken=x; sessionid={alice.session_cookie}; other=1".encode()
    user = await user_seen([(b"origin", b"http://localhost"), (b"cookie", cookie)])
    assert user.is_authenticated and user.get_username() == "alice"


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_session_is_anonymous():
    user = await user_seen([(b"cookie", b"sessionid=nosuchsession")])
    assert not user.is_authenticated
