"""Shared fixtures: a clean process state per test, and WebSocket clients on the ASGI app."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers

from rooms.document import live_rooms_reset
from rooms.presence import presence_reset


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Accounts made in-process hash their passwords with a cheap hasher: the production one
    costs about a second per password by design. Servers the tests start keep theirs."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test runs on its own event loop and database: forget loop-bound state."""
    live_rooms_reset()
    presence_reset()
    channel_layers.backends.clear()
    yield
    live_rooms_reset()
    presence_reset()
    channel_layers.backends.clear()
