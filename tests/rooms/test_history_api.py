"""The history API (docs/protocol.md, "History"): the room at a version or time, blame,
authorship, diffs, the time axis and restore, over REST and the WebSocket."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from rooms import document
from rooms.models import Author, Op
from tests.rooms.support_accounts import user_new
from tests.rooms.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "def greet(name):\n    return name\n"


@pytest.fixture
def room():
    return document.room_create(code=FIRST)


async def edit_as(room_id: str, name: str, client: str, ops: list[tuple[int, list]]) -> Client:
    """Connect as `name` (client id `client`) and commit each (base version, op)."""
    editor = Client(f"/ws/{room_id}?mode=ops&client={client}&name={name}")
    await editor.connect()
    for seq, (base, op) in enumerate(ops, start=1):
        ack = await editor.submit({"type": "op", "version": base, "seq": seq, "op": op})
        assert ack["type"] == "ack", ack
    return editor


async def three_versions(room_id: str) -> None:
    """v1 alice adds a line, v2 bob edits line 2, v3 alice appends a comment to line 1."""
    alice = await edit_as(
        room_id, "alice", "alice-tab-1", [(0, [len(FIRST), "print(greet('x'))\n"])]
    )
    bob = await edit_as(room_id, "bob", "bob-tab-01", [(1, [28, {"d": 4}, "name.title()"])])
    await alice.submit({"type": "op", "version": 2, "seq": 2, "op": [16, "  # hi"]})
    await alice.close()
    await bob.close()


async def texts_by_version(async_client, room_id: str) -> list[str]:
    body = (await async_client.get(f"/rooms/{room_id}/history")).json()
    from rooms import ot

    texts = [FIRST]
    for entry in body["ops"]:
        texts.append(ot.apply(texts[-1], entry["op"]))
    return texts


# -- the room at a version or a time -----------------------------------------------------------


async def test_the_room_at_a_version_is_its_usual_body_with_the_text_then(room, async_client):
    await three_versions(room.id)
    texts = await texts_by_version(async_client, room.id)
    for version in range(4):
        body = (await async_client.get(f"/rooms/{room.id}?version={version}")).json()
        assert body["code"] == texts[version] and body["version"] == version
        assert {"room_id", "name", "users", "ws_url", "ts", "time"} <= set(body)
    now = (await async_client.get(f"/rooms/{room.id}")).json()
    assert (now["code"], now["version"]) == (texts[3], 3)
    joined = (await async_client.get(f"/rooms/join?id={room.id}&version=1")).json()
    assert joined["code"] == texts[1]


@pytest.mark.parametrize("version", ["-1", "4", "1.0", "x", "", "1e1"])
async def test_a_version_outside_the_history_is_400(room, async_client, version):
    await three_versions(room.id)
    response = await async_client.get(f"/rooms/{room.id}?version={version}")
    assert response.status_code == 400
    assert response.json() == {"error": "'version' must be an integer from 0 to 3"}


async def test_the_room_at_a_time_is_the_last_version_made_by_then(room, async_client):
    await three_versions(room.id)
    times = dict(
        [entry async for entry in Op.objects.filter(room_id=room.id).values_list("version", "ts")]
    )
    texts = await texts_by_version(async_client, room.id)

    def iso(ms: int, offset_hours: int = 0) -> str:
        zone = dt.timezone(dt.timedelta(hours=offset_hours))
        return dt.datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="milliseconds")

    for version in (1, 2, 3):
        at = iso(times[version], offset_hours=2).replace("+", "%2B")
        body = (await async_client.get(f"/rooms/{room.id}?at={at}")).json()
        last = max(v for v, ts in times.items() if ts <= times[version])
        assert (body["version"], body["code"]) == (last, texts[last])
        assert body["ts"] == times[last]
    future = (await async_client.get(f"/rooms/{room.id}?at=2999-01-01T00:00:00Z")).json()
    assert future["version"] == 3
    before = await async_client.get(f"/rooms/{room.id}?at=2001-01-01T00:00:00Z")
    assert before.status_code == 400 and "did not exist" in before.json()["error"]
    for bad in ("yesterday", "", "2026-13-01"):
        assert (await async_client.get(f"/rooms/{room.id}?at={bad}")).status_code == 400
    both = await async_client.get(f"/rooms/{room.id}?at=2999-01-01T00:00:00Z&version=1")
    assert both.status_code == 400


# -- blame and authorship ---------------------------------------------------------------------


async def test_blame_names_who_wrote_each_line_and_the_last_change_of_it(room, async_client):
    await three_versions(room.id)
    body = (await async_client.get(f"/rooms/{room.id}/blame")).json()
    assert body["version"] == 3
    lines = {line["line"]: line for line in body["lines"]}
    assert len(lines) == 4  # three lines and the empty one after the last line break

    def who(number: int) -> list[tuple[str, str]]:
        return [(user["id"], user["name"]) for user in lines[number]["users"]]

    assert who(1) == [("alice-tab-1", "alice")]  # "  # hi" by alice on the room's first line
    assert (lines[1]["version"], lines[1]["author"]) == (3, "alice-tab-1")
    assert who(2) == [("bob-tab-01", "bob")]
    assert (lines[2]["version"], lines[2]["author"]) == (2, "bob-tab-01")
    assert who(3) == [("alice-tab-1", "alice")] and lines[3]["version"] == 1
    assert lines[4]["users"] == [] and lines[4]["version"] == 0 and lines[4]["author"] is None
    times = dict(
        [entry async for entry in Op.objects.filter(room_id=room.id).values_list("version", "ts")]
    )
    for line in lines.values():
        assert set(line) == {"line", "users", "version", "time", "author"}
        assert line["time"].endswith("Z")
        if line["version"]:
            ts = dt.datetime.fromisoformat(line["time"]).timestamp() * 1000
            assert ts == times[line["version"]]
        for user in line["users"]:
            assert set(user) == {"id", "name"}
    # Names and colours once, for every author mentioned.
    assert set(body["authors"]) == {"alice-tab-1", "bob-tab-01"}
    assert body["authors"]["bob-tab-01"]["name"] == "bob"
    assert re.fullmatch(r"#[0-9a-f]{6}", body["authors"]["bob-tab-01"]["color"])


async def test_blame_at_an_older_version(room, async_client):
    await three_versions(room.id)
    body = (await async_client.get(f"/rooms/{room.id}/blame?version=1")).json()
    assert body["version"] == 1
    assert [line["version"] for line in body["lines"]] == [0, 0, 1, 0]
    assert (await async_client.get(f"/rooms/{room.id}/blame?version=9")).status_code == 400


async def test_the_name_is_the_last_one_the_author_edited_under(room, async_client):
    alice = await edit_as(room.id, "alice", "alice-tab-1", [(0, ["# a\n"])])
    assert await Author.objects.filter(room_id=room.id).acount() == 1
    # A rename is recorded with the connection's next change.
    await alice.send({"type": "join", "name": "Alice Liddell"})
    await alice.next_is_pong()

    def names():
        return Author.objects.filter(room_id=room.id).values_list("name", flat=True)

    assert [name async for name in names()] == ["alice"]
    ack = await alice.submit({"type": "op", "version": 1, "seq": 2, "op": [3, "b"]})
    assert ack["version"] == 2
    await alice.close()
    assert [name async for name in names()] == ["Alice Liddell"]
    body = (await async_client.get(f"/rooms/{room.id}/blame")).json()
    assert body["lines"][0]["users"][0]["name"] == "Alice Liddell"


async def test_authorship_is_runs_of_authors_and_line_records(room, async_client):
    await three_versions(room.id)
    body = (await async_client.get(f"/rooms/{room.id}/authorship")).json()
    assert body["version"] == 3
    ids = [author["id"] for author in body["authors"]]
    assert ids[0] == "" and set(ids[1:]) == {"alice-tab-1", "bob-tab-01"}
    per_character = [
        ids[body["runs"][i + 1]]
        for i in range(0, len(body["runs"]), 2)
        for _ in range(body["runs"][i])
    ]
    text = (await async_client.get(f"/rooms/{room.id}")).json()["code"]
    assert len(per_character) == len(text)
    assert {per_character[text.index("# hi")], per_character[text.index("title")]} == {
        "alice-tab-1",
        "bob-tab-01",
    }
    assert sum(body["lines"][i] for i in range(0, len(body["lines"]), 4)) == text.count("\n") + 1


# -- diffs and the time axis --------------------------------------------------------------------


async def test_the_diff_between_two_versions_lists_changed_lines(room, async_client):
    await three_versions(room.id)
    body = (await async_client.get(f"/rooms/{room.id}/diff?from=0&to=2")).json()
    assert (body["from"], body["to"]) == (0, 2)
    (hunk,) = body["hunks"]
    assert hunk["lines"] == [
        " def greet(name):",
        "-    return name",
        "+    return name.title()",
        "+print(greet('x'))",
    ]
    assert (hunk["old_start"], hunk["new_start"]) == (1, 1)
    against_now = (await async_client.get(f"/rooms/{room.id}/diff?from=3")).json()
    assert against_now["to"] == 3 and against_now["hunks"] == []
    assert (await async_client.get(f"/rooms/{room.id}/diff")).status_code == 400
    assert (await async_client.get(f"/rooms/{room.id}/diff?from=1&to=7")).status_code == 400


async def test_the_time_axis_spans_the_history(room, async_client):
    await three_versions(room.id)
    body = (await async_client.get(f"/rooms/{room.id}/times")).json()
    assert body["version"] == 3
    assert [version for version, _ in body["times"]] == [0, 3]


async def test_history_pages(room, async_client):
    await three_versions(room.id)
    page = (await async_client.get(f"/rooms/{room.id}/history?since=0&limit=2")).json()
    assert [entry["version"] for entry in page["ops"]] == [1, 2] and page["version"] == 3
    rest = (await async_client.get(f"/rooms/{room.id}/history?since=2&limit=2")).json()
    assert [entry["version"] for entry in rest["ops"]] == [3]
    for limit in ("0", "1001", "x"):
        response = await async_client.get(f"/rooms/{room.id}/history?limit={limit}")
        assert response.status_code == 400


# -- restore (REST) ------------------------------------------------------------------------------


async def test_restore_commits_the_old_text_as_a_new_change_everyone_gets(room, async_client):
    await three_versions(room.id)
    texts = await texts_by_version(async_client, room.id)
    watcher = Client(f"/ws/{room.id}?mode=ops")
    reader = Client(f"/ws/{room.id}")
    await watcher.connect()
    await reader.connect()
    response = await async_client.post(
        f"/rooms/{room.id}/restore",
        {"version": 1, "name": "restorer"},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json() == {"version": 4}
    broadcast = await watcher.receive_type("op")
    assert broadcast["version"] == 4 and broadcast["seq"] is None
    assert (await reader.receive_type("sync_code"))["code"] == texts[1]
    now = (await async_client.get(f"/rooms/{room.id}")).json()
    assert (now["code"], now["version"]) == (texts[1], 4)
    # History is kept: the versions before are still there, unchanged.
    assert await texts_by_version(async_client, room.id) == [*texts, texts[1]]
    blamed = (await async_client.get(f"/rooms/{room.id}/blame")).json()["lines"]
    # The restore wrote the first two lines back; the third is as it was at version 1 and now.
    assert [line["version"] for line in blamed] == [4, 4, 1, 0]
    body = (await async_client.get(f"/rooms/{room.id}/blame")).json()
    assert body["authors"][blamed[1]["author"]]["name"] == "restorer"
    await watcher.close()
    await reader.close()


async def test_restore_to_the_current_text_is_an_empty_change(room, async_client):
    await three_versions(room.id)
    response = await async_client.post(
        f"/rooms/{room.id}/restore", {"version": 3}, content_type="application/json"
    )
    assert response.json() == {"version": 4}
    assert (await Op.objects.aget(room_id=room.id, version=4)).op == []


@pytest.mark.parametrize(
    "body",
    [{}, {"version": -1}, {"version": 4}, {"version": "1"}, {"version": 1, "base": 9}, [1], None],
)
async def test_a_bad_restore_is_400_and_changes_nothing(room, async_client, body):
    await three_versions(room.id)
    response = await async_client.post(
        f"/rooms/{room.id}/restore", body, content_type="application/json"
    )
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert (await document.Room.objects.aget(id=room.id)).version == 3


async def test_restore_needs_the_edit_token_of_a_private_room(async_client):
    private, tokens = await database_sync_to_async(document.room_create_private)(code="x\n")
    url = f"/rooms/{private.id}/restore"
    body = {"version": 0}
    assert (await async_client.post(url, body, content_type="application/json")).status_code == 403
    viewer = {"Authorization": f"Bearer {tokens['view_token']}"}
    refused = await async_client.post(url, body, content_type="application/json", headers=viewer)
    assert refused.status_code == 403
    editor = {"Authorization": f"Bearer {tokens['token']}"}
    allowed = await async_client.post(url, body, content_type="application/json", headers=editor)
    assert allowed.status_code == 200
    assert (await async_client.get(f"/rooms/{private.id}/restore")).status_code == 405


async def signed_in(username: str, *, enforce_csrf_checks: bool = False) -> AsyncClient:
    user = await database_sync_to_async(user_new)(username)
    client = AsyncClient(enforce_csrf_checks=enforce_csrf_checks)
    await client.aforce_login(user)
    return client


def author_of_line(blame: dict, index: int) -> str:
    return blame["authors"][blame["lines"][index]["author"]]["name"]


async def test_a_signed_in_restore_is_credited_to_the_account_not_the_name_it_asks_for(room):
    await three_versions(room.id)
    alice = await signed_in("alice-restorer")
    response = await alice.post(
        f"/rooms/{room.id}/restore", {"version": 1, "name": "mallory"}, "application/json"
    )
    assert response.status_code == 200, response.content
    blame = (await alice.get(f"/rooms/{room.id}/blame")).json()
    assert blame["lines"][1]["version"] == 4
    assert author_of_line(blame, 1) == "alice-restorer"


async def test_a_restore_forged_without_csrf_is_not_credited_to_the_signed_in_account(room):
    await three_versions(room.id)
    victim = await signed_in("victim", enforce_csrf_checks=True)
    forged = await victim.post(
        f"/rooms/{room.id}/restore", {"version": 1, "name": "forger"}, "application/json"
    )
    assert forged.status_code == 200, forged.content  # a public room: anyone may restore
    assert author_of_line((await victim.get(f"/rooms/{room.id}/blame")).json(), 1) == "forger"


# -- the WebSocket -------------------------------------------------------------------------------


async def test_history_requests_over_the_websocket_answer_like_rest(room, async_client):
    await three_versions(room.id)
    page = Client(f"/ws/{room.id}?mode=ops")
    await page.connect()
    texts = await texts_by_version(async_client, room.id)
    try:
        answer = await page.request(
            {"type": "history", "id": 1, "get": "text", "version": 1}, "history"
        )
        assert (answer["id"], answer["get"], answer["code"], answer["version"]) == (
            1,
            "text",
            texts[1],
            1,
        )
        for query, path in [
            ({"get": "blame"}, "blame"),
            ({"get": "blame", "version": 2}, "blame?version=2"),
            ({"get": "authorship"}, "authorship"),
            ({"get": "authorship", "version": 1}, "authorship?version=1"),
            ({"get": "diff", "from": 0, "to": 2}, "diff?from=0&to=2"),
            ({"get": "times"}, "times"),
        ]:
            answer = await page.request({"type": "history", "id": 7, **query}, "history")
            rest = (await async_client.get(f"/rooms/{room.id}/{path}")).json()
            assert {k: v for k, v in answer.items() if k not in {"type", "id", "get"}} == rest
        changes = await page.request(
            {"type": "history", "id": 2, "get": "changes", "since": 1, "limit": 1}, "history"
        )
        assert [entry["version"] for entry in changes["ops"]] == [2] and changes["version"] == 3
        now = await page.request(
            {"type": "history", "id": 3, "get": "text", "at": "2999-01-01"}, "history"
        )
        assert now["version"] == 3 and now["code"] == texts[3]
    finally:
        await page.close()


@pytest.mark.parametrize(
    "request_",
    [
        {"get": "nope"},
        {"get": "text"},
        {"get": "text", "version": 4},
        {"get": "text", "at": "soon"},
        {"get": "text", "at": 5},
        {"get": "changes", "limit": 0},
        {"get": "changes", "since": -1},
        {"get": "blame", "version": True},
        {"get": "diff"},
    ],
)
async def test_a_bad_history_request_is_a_bad_message_with_its_id(room, request_):
    await three_versions(room.id)
    page = Client(f"/ws/{room.id}?mode=ops")
    await page.connect()
    error = await page.request({"type": "history", "id": 41, **request_}, "error")
    assert (error["code"], error["id"]) == ("bad_message", 41)
    await page.next_is_pong()
    await page.close()


async def test_restore_over_the_websocket_is_the_connections_own_change(room, async_client):
    await three_versions(room.id)
    texts = await texts_by_version(async_client, room.id)
    restorer = Client(f"/ws/{room.id}?mode=ops&client=carol-tab-1&name=carol")
    other = Client(f"/ws/{room.id}?mode=ops")
    await restorer.connect()
    await other.connect()
    await restorer.send({"type": "restore", "id": 5, "version": 0, "base": 3})
    # The restorer gets the change like everyone (it is not an op it sent), then the answer.
    change = await restorer.receive_type("op")
    assert (change["version"], change["client"], change["seq"]) == (4, "carol-tab-1", None)
    assert await restorer.receive_type("restored") == {
        "type": "restored",
        "id": 5,
        "version": 4,
        "restored": 0,
    }
    assert (await other.receive_type("op"))["version"] == 4
    assert (await async_client.get(f"/rooms/{room.id}")).json()["code"] == texts[0]
    body = (await async_client.get(f"/rooms/{room.id}/blame")).json()
    assert [line["version"] for line in body["lines"]] == [4, 4, 0]
    assert body["lines"][1]["author"] == "carol-tab-1"
    assert body["authors"]["carol-tab-1"]["name"] == "carol"
    error = await restorer.request({"type": "restore", "id": 6, "version": 9}, "error")
    assert (error["code"], error["id"]) == ("bad_message", 6)
    await restorer.close()
    await other.close()


async def test_a_view_token_reads_history_but_may_not_restore():
    private, tokens = await database_sync_to_async(document.room_create_private)(code="x\n")
    viewer = Client(f"/ws/{private.id}?token={tokens['view_token']}")
    await viewer.connect()
    answer = await viewer.request(
        {"type": "history", "id": 1, "get": "text", "version": 0}, "history"
    )
    assert answer["code"] == "x\n"
    error = await viewer.request({"type": "restore", "id": 2, "version": 0}, "error")
    assert error["code"] == "forbidden"
    await viewer.close()


async def test_a_connection_has_at_most_four_history_requests_answered_at_a_time(room):
    await three_versions(room.id)
    page = Client(f"/ws/{room.id}?mode=ops")
    await page.connect()
    # Sent back to back: the first four are in flight when the fifth arrives.
    for request_id in range(1, 6):
        await page.send({"type": "history", "id": request_id, "get": "blame"})
    replies = [await page.receive_type("history", "error") for _ in range(5)]
    refused = [reply for reply in replies if reply["type"] == "error"]
    assert [(reply["code"], reply["id"]) for reply in refused] == [("rate_limited", 5)]
    assert sorted(reply["id"] for reply in replies if reply["type"] == "history") == [1, 2, 3, 4]
    # Once answered, asking again is fine.
    answer = await page.request({"type": "history", "id": 6, "get": "times"}, "history")
    assert answer["id"] == 6
    await page.close()
