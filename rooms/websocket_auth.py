"""The account behind a WebSocket: `scope["user"]`, from Django's session cookie.

Channels' AuthMiddlewareStack does the same for every connection: it parses the cookies, builds
a session and, through its lazy user, still reads the session store when no cookie came. Editors,
scripts and anonymous pages connect without a session cookie, and connection set-up is on the
hot path, so here a connection without one costs a look at its headers and nothing else; with
one, Channels' own `get_user` reads the session and the account (two queries on the database
thread), checking the session's hash as Django does.

Safe against other sites riding on the cookie because the browser origin check in front of it
(rooms/origin.py) refuses pages from origins that are not ours. What an account may do in a
room is decided in rooms/access.py.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

ANONYMOUS = AnonymousUser()


def session_key(scope: dict[str, Any]) -> str | None:
    """The session cookie's value, if the handshake carries one."""
    name = settings.SESSION_COOKIE_NAME
    for header, value in scope.get("headers", ()):
        if header == b"cookie" and name.encode() in value:
            key = parse_cookie(value.decode("latin-1")).get(name)
            if key:
                return key
    return None


class SessionAccountMiddleware:
    """Sets `scope["user"]`: the session's account, or AnonymousUser without a session."""

    def __init__(self, application: Any) -> None:
        self.application = application
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = session_key(scope)
        if key is None:
            user = ANONYMOUS
        else:
            user = await get_user({"session": self.session_store(key)})
        return await self.application({**scope, "user": user}, receive, send)
