"""rooms/websocket_auth.py: a WebSocket's account from its session cookie or API token, no work
for connections without one (connection set-up is on the hot path)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from rooms import accounts
from rooms.websocket_auth import AccountMiddleware
from tests.rooms.support_accounts import Browser, user_new


async def user_seen(headers: list[tuple[bytes, bytes]]):
    seen = {}

    async def application(scope, receive, send):
        seen["user"] = scope["user"]

    await AccountMiddleware(application)({"type": "websocket", "headers": headers}, None, None)
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


@pytest.mark.django_db(transaction=True)
async def test_a_personal_api_token_header_brings_its_account_until_revoked():
    alice = await sync_to_async(user_new)("alice")
    record, token = await sync_to_async(accounts.api_token_create)(user=alice, name="bot")
    header = [(b"authorization", f"Bearer {token}".encode())]
    assert (await user_seen(header)).get_username() == "alice"
    await sync_to_async(accounts.api_token_revoke)(user=alice, token_id=record.id)
    assert not (await user_seen(header)).is_authenticated


async def test_a_link_token_as_bearer_is_no_account_and_costs_no_query():
    user = await user_seen([(b"authorization", b"Bearer " + accounts.token_new().encode())])
    assert not user.is_authenticated
