"""Accounts for the in-process tests: users, signed-in test clients that send the CSRF token
as the page does, and JSON calls."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.test import Client

PASSWORD = "a long test passphrase"


def user_new(username: str, *, email: str | None = None):
    return get_user_model().objects.create_user(
        username, email=email or f"{username}@example.com", password=PASSWORD
    )


class Browser:
    """A signed-in browser: session cookie, and the CSRF token the editor page hands out."""

    def __init__(self, user=None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.user = user
        if user is not None:
            self.client.force_login(user)
            self.client.get("/")  # the page sets the CSRF cookie for a signed-in user
        self.csrf = self.client.cookies["csrftoken"].value if user is not None else None

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True, **headers: str):
        if csrf and self.csrf:
            headers["HTTP_X_CSRFTOKEN"] = self.csrf
        data = json.dumps(body) if body is not None else ""
        return self.client.generic(
            method, path, data=data, content_type="application/json", **headers
        )

    @property
    def session_cookie(self) -> str:
        return self.client.cookies["sessionid"].value
