"""The account behind a WebSocket: `scope["user"]`, from Django's session cookie, or from a
personal API token in an `Authorization: Bearer pat_...` header (scripts; browsers cannot set
headers on a WebSocket).

Channels' AuthMiddlewareStack does the same for every connection: it parses the cookies, builds
a session and, through its lazy user, still reads the session store when no cookie came. Editors,
scripts and anonymous pages connect without a session cookie, and connection set-up is on the
hot path, so here a connection without one costs a look at its headers and nothing else; with
one, Channels' own `get_user` reads the session and the account (two queries on the database
thread), checking the session's hash as Django does. A wrong or revoked API token leaves the
connection anonymous (a private room then closes it with 4403).

Safe against other sites riding on the cookie because the browser origin check in front of it
(rooms/origin.py) refuses pages from origins that are not ours. What an account may do in a
room is decided in rooms/access.py.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from rooms import accounts

ANONYMOUS = AnonymousUser()


def credentials(scope: dict[str, Any], cookie_name: bytes) -> tuple[str | None, str | None]:
    """(the session cookie's value, a personal API token), as far as the handshake has them."""
    session = api_token = None
    for header, value in scope.get("headers", ()):
        if header == b"cookie" and cookie_name in value:
            session = parse_cookie(value.decode("latin-1")).get(cookie_name.decode()) or session
        elif header == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and accounts.is_api_token(token.strip()):
                api_token = token.strip()
    return session, api_token


class AccountMiddleware:
    """Sets `scope["user"]`: the API token's account, else the session's, else AnonymousUser."""

    def __init__(self, application: Any) -> None:
        self.application = application
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore
        self.cookie_name = settings.SESSION_COOKIE_NAME.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        session, api_token = credentials(scope, self.cookie_name)
        if api_token is not None:
            user = await database_sync_to_async(accounts.api_token_user)(api_token) or ANONYMOUS
        elif session is not None:
            user = await get_user({"session": self.session_store(session)})
        else:
            user = ANONYMOUS
        return await self.application({**scope, "user": user}, receive, send)
