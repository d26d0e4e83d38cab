"""Completions over the WebSocket: `complete` -> `completions` for the room's current code."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from rooms import document
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


BUDGET_S = 10  # what is suggested, not how fast (machines vary; Jedi's first start is slow)
ANSWER_WAIT_S = BUDGET_S + 5  # the server answers within its budget; waiting less would flake


@pytest.fixture(autouse=True)
def generous_budget(settings):
    settings.AUTOCOMPLETE_BUDGET_S = BUDGET_S


@pytest.fixture
def room():
    return document.room_create(code="import os\nos.pa")


async def test_complete_answers_with_items_for_that_position(room):
    alice = Client(f"/ws/{room.id}")
    await alice.connect()
    reply = await alice.request(
        {"type": "complete", "id": 7, "line": 2, "column": 5},
        "completions",
        "error",
        timeout=ANSWER_WAIT_S,
    )
    assert reply["type"] == "completions" and reply["id"] == 7
    labels = [item["label"] for item in reply["items"]]
    assert "path" in labels and "pardir" in labels
    await alice.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "complete", "id": 1, "line": 0, "column": 0},
        {"type": "complete", "id": 1, "line": 3, "column": 0},
        {"type": "complete", "id": 1, "line": 1, "column": 99},
        {"type": "complete", "id": 1, "line": 1, "column": -1},
        {"type": "complete", "line": 1, "column": 0},
        {"type": "complete", "id": 1, "line": True, "column": 0},
    ],
)
async def test_bad_completion_request_is_bad_message(room, message):
    alice = Client(f"/ws/{room.id}")
    await alice.connect()
    assert (await alice.request(message, "error"))["code"] == "bad_message"
    await alice.close()


async def test_a_view_token_may_ask_for_completions():
    room, tokens = await database_sync_to_async(document.room_create_private)(code="import os\n")
    viewer = Client(f"/ws/{room.id}?token={tokens['view_token']}")
    await viewer.connect()
    reply = await viewer.request(
        {"type": "complete", "id": 1, "line": 1, "column": 3},
        "completions",
        "error",
        timeout=ANSWER_WAIT_S,
    )
    assert reply["type"] == "completions"
    await viewer.close()
