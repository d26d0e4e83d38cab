"""Client ids bound by a secret, and duplicates that must be the same op (docs/protocol.md,
"Client ids and their secrets" and "Sequence numbers and duplicates"), through the real ASGI app.

Each test names the promise it checks; the end-to-end attacks against a live server are in
tests/e2e/test_client_identity.py.
"""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from rooms import document, identity, presence, store
from rooms.models import ClientBinding, Op, Room
from rooms.presence import RedisPresence
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

VICTIM = "victim-editor-1"


@pytest.fixture
def room() -> Room:
    return document.room_create(code="hello")


async def connected(room_id: str, query: str = "?mode=ops") -> Client:
    client = Client(f"/ws/{room_id}{query}")
    await client.connect()
    return client


async def refused(room_id: str, query: str) -> tuple[list[dict], int]:
    """The messages a refused connection got before its close, and the close code."""
    client = Client(f"/ws/{room_id}{query}")
    connected_, _ = await client.communicator.connect(timeout=3)
    assert connected_  # accepted first, so that the close code reaches the client
    messages = []
    while True:
        output = await client.communicator.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            return messages, output["code"]
        messages.append(json.loads(output["text"]))


async def room_state(room_id: str) -> tuple[str, int]:
    stored = await Room.objects.aget(id=room_id)
    return await database_sync_to_async(store.room_code)(stored), stored.version


def assert_forbidden(messages: list[dict]) -> None:
    assert len(messages) == 1, messages
    (error,) = messages
    assert error["type"] == "error" and error["code"] == "forbidden", error
    assert "client_secret" in error["message"]


# -- the secret ------------------------------------------------------------------------------


async def test_init_carries_the_secret_of_the_chosen_client_id(room):
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}")
    assert alice.init["client_secret"] == identity.client_secret(room.id, VICTIM)
    await alice.close()


async def test_init_carries_the_secret_of_the_default_client_id(room):
    alice = await connected(room.id, "?mode=text")
    user_id = alice.init["user_id"]
    assert alice.init["client_secret"] == identity.client_secret(room.id, user_id)
    assert len(alice.init["client_secret"]) == 43
    await alice.close()


async def test_secrets_differ_per_room_and_per_client(room):
    other = await database_sync_to_async(document.room_create)()
    secrets_ = {
        identity.client_secret(room.id, VICTIM),
        identity.client_secret(other.id, VICTIM),
        identity.client_secret(room.id, VICTIM + "x"),
    }
    assert len(secrets_) == 3


# -- binding ---------------------------------------------------------------------------------


async def test_a_bound_client_id_without_its_secret_is_refused_with_4403(room):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    messages, code = await refused(room.id, f"?mode=ops&client={VICTIM}")
    assert code == 4403
    assert_forbidden(messages)
    await victim.next_is_pong()  # the victim's connection is untouched
    await victim.close()


async def test_a_bound_client_id_with_a_wrong_secret_is_refused_with_4403(room):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    wrong = identity.client_secret(room.id, "someone-else")
    for secret in (wrong, victim.init["client_secret"][:-1], "x"):
        messages, code = await refused(room.id, f"?mode=ops&client={VICTIM}&client_secret={secret}")
        assert code == 4403
        assert_forbidden(messages)
    await victim.close()


async def test_the_secret_of_another_room_does_not_open_this_one(room):
    other = await database_sync_to_async(document.room_create)()
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    elsewhere = await connected(other.id, f"?mode=ops&client={VICTIM}")
    secret = elsewhere.init["client_secret"]
    _, code = await refused(room.id, f"?mode=ops&client={VICTIM}&client_secret={secret}")
    assert code == 4403
    await victim.close()
    await elsewhere.close()


async def test_with_its_secret_a_client_id_connects_again_while_its_first_socket_is_open(room):
    first = await connected(room.id, f"?mode=ops&client={VICTIM}")
    secret = first.init["client_secret"]
    second = await connected(room.id, f"?mode=ops&client={VICTIM}&client_secret={secret}")
    assert second.init["client_secret"] == secret
    await first.close()
    await second.close()


async def test_the_default_client_id_is_bound_without_being_named(room):
    alice = await connected(room.id, "?mode=ops")
    user_id = alice.init["user_id"]
    messages, code = await refused(room.id, f"?mode=ops&client={user_id}")
    assert code == 4403
    assert_forbidden(messages)
    secret = alice.init["client_secret"]
    again = await connected(room.id, f"?mode=ops&client={user_id}&client_secret={secret}")
    assert again.init["user_id"] != user_id  # a new user, under the same client id
    await alice.close()
    await again.close()


async def test_a_connection_without_client_writes_no_binding(room):
    alice = await connected(room.id, "?mode=text")
    assert await ClientBinding.objects.filter(room_id=room.id).acount() == 0
    await alice.close()


async def test_server_user_ids_are_recognized_and_chosen_ids_are_not():
    assert all(identity.user_id_issued(identity.user_id_new()) for _ in range(100))
    assert not identity.user_id_issued("abcdefghijkl")
    assert not identity.user_id_issued(VICTIM)


async def test_a_binding_outlives_the_process_that_made_it(room):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    await victim.close()
    document.live_rooms_reset()  # a fresh process: nothing in memory
    _, code = await refused(room.id, f"?mode=ops&client={VICTIM}")
    assert code == 4403


async def test_a_secret_under_a_retired_key_still_opens_the_room(room, settings):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    await victim.close()
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-key-" + "x" * 50
    secret = victim.init["client_secret"]
    again = await connected(room.id, f"?mode=ops&client={VICTIM}&client_secret={secret}")
    assert again.init["client_secret"] != secret  # reissued under the new key
    await again.close()


async def test_client_secret_without_client_is_ignored(room):
    alice = await connected(room.id, "?mode=ops&client_secret=anything")
    assert alice.init["client_secret"] == identity.client_secret(room.id, alice.init["user_id"])
    await alice.close()


async def test_an_unbound_client_id_with_any_secret_is_bound_to_this_connection(room):
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}&client_secret=stale")
    assert alice.init["client_secret"] == identity.client_secret(room.id, VICTIM)
    await alice.close()
    _, code = await refused(room.id, f"?mode=ops&client={VICTIM}")
    assert code == 4403


# -- the order of the checks -----------------------------------------------------------------


async def test_the_token_is_checked_before_the_client_secret():
    room, tokens = await database_sync_to_async(document.room_create_private)()
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}&token={tokens['token']}")
    messages, code = await refused(room.id, f"?mode=ops&client={VICTIM}&token=wrong")
    assert code == 4403
    assert messages == []  # the token's refusal: no client-secret error
    await victim.close()


async def test_a_private_room_checks_the_client_secret_after_a_valid_token():
    room, tokens = await database_sync_to_async(document.room_create_private)()
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}&token={tokens['view_token']}")
    messages, code = await refused(room.id, f"?mode=ops&client={VICTIM}&token={tokens['token']}")
    assert code == 4403
    assert_forbidden(messages)
    await victim.close()


async def test_the_client_secret_is_checked_before_the_other_query_parameters(room):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    messages, code = await refused(room.id, f"?mode=bogus&client={VICTIM}&version=x")
    assert code == 4403
    assert_forbidden(messages)
    await victim.close()


async def test_a_refused_query_does_not_bind_a_new_client_id(room):
    messages, code = await refused(room.id, f"?mode=bogus&client={VICTIM}")
    assert code == 4400
    assert messages[0]["code"] == "bad_message"
    assert await ClientBinding.objects.filter(room_id=room.id).acount() == 0
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}")  # still free
    await alice.close()


async def test_a_version_ahead_of_the_room_is_refused_after_the_client_secret(room):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    messages, code = await refused(room.id, f"?mode=ops&client={VICTIM}&version=99")
    assert code == 4403
    assert_forbidden(messages)
    messages, code = await refused(room.id, "?mode=ops&client=a-new-client&version=99")
    assert code == 4400
    assert (
        await ClientBinding.objects.filter(room_id=room.id, client="a-new-client").aexists()
        is False
    )
    await victim.close()


async def test_a_connection_that_fails_before_its_init_leaves_its_new_client_id_free(
    room, monkeypatch
):
    # Presence on a Redis that is not there: a real failure after the client id was claimed.
    monkeypatch.setattr(presence, "presence", RedisPresence("redis://127.0.0.1:9/0"))
    failing = Client(f"/ws/{room.id}?mode=ops&client={VICTIM}")
    accepted, _ = await failing.communicator.connect(timeout=3)
    assert accepted
    assert await failing.closed_with() == 4503  # Redis is unavailable (rooms/outage.py)
    monkeypatch.undo()
    assert await ClientBinding.objects.filter(room_id=room.id).acount() == 0
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}")  # its retry gets in
    assert alice.init["client_secret"] == identity.client_secret(room.id, VICTIM)
    await alice.close()


async def test_a_malformed_client_id_is_a_bad_request_whatever_its_secret(room):
    messages, code = await refused(room.id, "?mode=ops&client=short&client_secret=x")
    assert code == 4400
    assert messages[0]["code"] == "bad_message"


async def test_an_unknown_room_is_refused_before_the_client_secret():
    _, code = await refused("no-such-room", f"?mode=ops&client={VICTIM}")
    assert code == 4404


# -- the attack: another op under the victim's client id ----------------------------------------


async def test_a_second_connection_cannot_take_the_victims_next_seq(room):
    victim = await connected(room.id, f"?mode=ops&client={VICTIM}")
    await victim.request({"type": "op", "version": 0, "seq": 1, "op": ["a"]}, "ack")
    _, code = await refused(room.id, f"?mode=ops&client={VICTIM}&version=1")
    assert code == 4403
    ack = await victim.request({"type": "op", "version": 1, "seq": 2, "op": [1, "b"]}, "ack")
    assert ack == {"type": "ack", "version": 2, "seq": 2}
    assert await room_state(room.id) == ("abhello", 2)
    await victim.close()


# -- duplicates ------------------------------------------------------------------------------


async def test_a_resubmitted_identical_op_is_a_duplicate(room):
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}")
    await alice.request({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]}, "ack")
    again = await alice.request({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]}, "ack")
    assert again == {"type": "ack", "version": 1, "seq": 1, "duplicate": True}
    assert await room_state(room.id) == ("hello!", 1)
    await alice.close()


async def test_a_resubmission_on_an_older_base_is_compared_after_transforming_it(room):
    """The op committed as version 2 was transformed past version 1; resubmitted on base 0 it
    is the same op, and on base 1 (as a resuming client sends it) too."""
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}")
    bob = await connected(room.id)
    await bob.request({"type": "op", "version": 0, "seq": 1, "op": ["> "]}, "ack")
    ack = await alice.submit({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})
    assert ack == {"type": "ack", "version": 2, "seq": 1}
    stored = await Op.objects.aget(room_id=room.id, version=2)
    assert stored.op == [7, "!"]
    for message in (
        {"type": "op", "version": 0, "seq": 1, "op": [5, "!"]},
        {"type": "op", "version": 1, "seq": 1, "op": [7, "!"]},
    ):
        again = await alice.submit(message)
        assert again == {"type": "ack", "version": 2, "seq": 1, "duplicate": True}
    assert await room_state(room.id) == ("> hello!", 2)
    await alice.close()
    await bob.close()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "op", "version": 0, "seq": 1, "op": [5, "?"]},  # other text
        {"type": "op", "version": 0, "seq": 1, "op": ["!"]},  # other place
        {"type": "op", "version": 0, "seq": 1, "op": []},
        {"type": "op", "version": 1, "seq": 1, "op": [5, "!"]},  # not moved past version 1
        {"type": "op", "version": 2, "seq": 1, "op": [8, "!"]},  # a base that holds seq 1
    ],
)
async def test_another_op_under_a_used_seq_is_bad_op_and_changes_nothing(room, message):
    alice = await connected(room.id, f"?mode=ops&client={VICTIM}")
    bob = await connected(room.id)
    await bob.request({"type": "op", "version": 0, "seq": 1, "op": ["> "]}, "ack")
    await alice.submit({"type": "op", "version": 0, "seq": 1, "op": [5, "!"]})
    assert (await bob.receive_type("op"))["version"] == 2
    error = await alice.submit(message)
    assert error["type"] == "error" and error["code"] == "bad_op", error
    assert "seq 1" in error["message"] and "version 2" in error["message"]
    assert await room_state(room.id) == ("> hello!", 2)
    await alice.next_is_pong()  # no broadcast either
    await bob.next_is_pong()
    ack = await alice.submit({"type": "op", "version": 2, "seq": 2, "op": ["#"]})
    assert ack == {"type": "ack", "version": 3, "seq": 2}  # the client carries on
    await alice.close()
    await bob.close()


async def test_another_op_under_a_used_seq_is_refused_after_a_restart(room):
    first = await connected(room.id, f"?mode=ops&client={VICTIM}")
    await first.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "ack")
    await first.close()
    document.live_rooms_reset()  # a fresh process: the duplicate is found in the op log
    secret = first.init["client_secret"]
    second = await connected(room.id, f"?mode=ops&client={VICTIM}&client_secret={secret}")
    error = await second.request({"type": "op", "version": 0, "seq": 1, "op": ["y"]}, "error")
    assert error["code"] == "bad_op"
    again = await second.request({"type": "op", "version": 0, "seq": 1, "op": ["x"]}, "ack")
    assert again == {"type": "ack", "version": 1, "seq": 1, "duplicate": True}
    assert await room_state(room.id) == ("xhello", 1)
    await second.close()
