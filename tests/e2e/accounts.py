"""People with accounts on a live server, as a browser or a script is: sign up through the
sign-up page, keep the session cookie, send the CSRF token on writes, open WebSockets with the
session cookie (docs/protocol.md, "Accounts and sharing")."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import websockets

WAIT_S = 10
PASSWORD = "correct horse battery staple"
_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def form_token(http: httpx.Client, path: str) -> str:
    page = http.get(path)
    assert page.status_code == 200, (path, page.status_code, page.text[:500])
    return _CSRF_FIELD.search(page.text).group(1)


def post_form(http: httpx.Client, path: str, fields: dict[str, str]) -> httpx.Response:
    return http.post(path, data={**fields, "csrfmiddlewaretoken": form_token(http, path)})


class Person:
    """A signed-up person on one server (`base_url`); `at(other_base)` is the same person's
    browser talking to another process of the same site."""

    def __init__(self, base_url: str, username: str, *, sign_up: bool = True) -> None:
        self.username = username
        self.http = httpx.Client(base_url=base_url, timeout=WAIT_S)
        if sign_up:
            response = post_form(
                self.http,
                "/accounts/signup/",
                {
                    "username": username,
                    "email": f"{username}@example.com",
                    "password1": PASSWORD,
                    "password2": PASSWORD,
                },
            )
            assert response.status_code == 302, response.text[:2000]

    def at(self, base_url: str) -> Person:
        other = Person(base_url, self.username, sign_up=False)
        other.http.cookies.update(self.http.cookies)
        return other

    @property
    def session(self) -> str:
        return self.http.cookies["sessionid"]

    @property
    def csrf(self) -> str:
        if "csrftoken" not in self.http.cookies:
            self.http.get("/")  # the editor page hands a signed-in user the CSRF cookie
        return self.http.cookies["csrftoken"]

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True):
        headers = {"X-CSRFToken": self.csrf} if csrf else {}
        return self.http.request(method, path, json=body, headers=headers)

    def ws(self, ws_base: str, room_id: str, query: str = "mode=ops"):
        return websockets.connect(
            f"{ws_base}/ws/{room_id}?{query}",
            additional_headers={"Cookie": f"sessionid={self.session}"},
            open_timeout=WAIT_S,
            close_timeout=WAIT_S,
        )

    def close(self) -> None:
        self.http.close()


async def receive(ws) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        return json.loads(await ws.recv())


async def next_of(ws, *kinds: str) -> dict[str, Any]:
    """The next message of one of `kinds`, passing over presence."""
    while True:
        message = await receive(ws)
        if message["type"] in kinds:
            return message
        assert message["type"] in {"join", "leave", "cursor", "typing"}, message


async def close_code(ws) -> int:
    """Read until the server closes; its close code."""
    async with asyncio.timeout(WAIT_S):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 1006
