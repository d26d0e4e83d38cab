"""GET /autocomplete?room=&line=&column=: completion at a position of the room's current code
(docs/protocol.md section 10). Rooms are made, and edited, through the product's own API."""

import keyword
import threading

import pytest
from django.test import Client

from autocomplete import completion
from rooms.live import live_rooms
from rooms.models import Op
from tests.rooms.wsclient import Client as WebSocketClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def generous_budget(settings):
    # These tests are about what Jedi suggests, not how fast: on a loaded machine Jedi can take
    # longer than the 200 ms default. Tests of the budget set their own.
    settings.AUTOCOMPLETE_BUDGET_S = 10


@pytest.fixture(autouse=True)
def empty_cache():
    # Answers are cached per room, version and position; each test starts without any.
    completion.clear_cache()
    yield
    completion.clear_cache()


@pytest.fixture
def client() -> Client:
    return Client()


def new_room(client: Client, code: str) -> str:
    response = client.post("/rooms", {"code": code}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["room_id"]


def complete(client: Client, room: str, line, column, **extra) -> tuple[int, dict]:
    params = {"room": room, "line": line, "column": column, **extra}
    response = client.get("/autocomplete", {k: v for k, v in params.items() if v is not None})
    assert response["Content-Type"].startswith("application/json")
    return response.status_code, response.json()


def labels(body: dict) -> list[str]:
    return [item["label"] for item in body["items"]]


def test_module_members_are_suggested_after_a_dot(client):
    room = new_room(client, "import os\nos.pa")

    status, body = complete(client, room, 2, 5)

    assert status == 200
    assert {"path", "pardir"} <= set(labels(body))
    assert body["incomplete"] is False
    assert body["query"] == "pa"
    assert body["suggestions"] == ["pass"]  # the keyword rule, even where no keyword fits


def test_a_name_defined_earlier_in_the_file_is_suggested(client):
    room = new_room(client, "def my_helper(): ...\nmy_h")

    status, body = complete(client, room, 2, 4)

    assert status == 200
    assert labels(body)[0] == "my_helper"
    assert body["items"][0]["kind"] == "function"


def test_without_query_the_query_is_the_name_before_the_cursor(client):
    room = new_room(client, "x = 1\nim")

    _, body = complete(client, room, 2, 2)

    assert body["query"] == "im"
    assert body["suggestions"] == ["import"]
    assert "import" in labels(body)


def test_suggestions_keep_the_exact_keyword_rule_for_the_given_query(client):
    room = new_room(client, "x = 1\n")

    _, body = complete(client, room, 2, 0, query="i")

    assert body["query"] == "i"
    assert body["suggestions"] == sorted(k for k in keyword.kwlist if k.startswith("i"))


def test_a_given_query_filters_and_ranks_the_items(client):
    # The client may be ahead of the stored text: it has typed "pa", the server holds "p".
    room = new_room(client, "import os\nos.p")

    _, body = complete(client, room, 2, 4, query="pa")

    assert body["query"] == "pa"
    assert {"path", "pardir"} <= set(labels(body))
    assert all(label.lower().startswith("pa") for label in labels(body))


def test_builtins_come_with_their_signature_in_detail(client):
    room = new_room(client, "pri")

    _, body = complete(client, room, 1, 3)

    first = body["items"][0]
    assert (first["label"], first["kind"]) == ("print", "function")
    assert first["detail"].startswith("print(")


def test_exact_prefix_matches_rank_before_other_case_matches(client):
    room = new_room(client, "import os\nos.pa")

    _, body = complete(client, room, 2, 5)

    exact = [label.startswith("pa") for label in labels(body)]
    assert exact == sorted(exact, reverse=True)
    assert "PathLike" in labels(body)  # a case-insensitive match, after the exact ones


def test_names_from_the_file_rank_before_builtins_and_dunders_last(client):
    room = new_room(client, "def sorter(): ...\nclass __Meta: ...\n_so = 1\n")

    _, body = complete(client, room, 4, 0)

    names = labels(body)
    assert names.index("sorter") < names.index("sorted")
    assert names.index("sorted") < names.index("_so") < names.index("__Meta")


@pytest.mark.parametrize(
    ("code", "column"),
    [
        ("from collabsite.settings import SE", 34),  # our source (and its secrets)
        ("import rooms.mod", 16),
        ("open('/etc/pa", 13),  # file names on the server's disk
        ("open('./man", 11),
    ],
)
def test_the_servers_own_modules_and_files_are_never_offered(client, settings, code, column):
    settings.AUTOCOMPLETE_BUDGET_S = 10  # Jedi's own answer, not the fallback
    room = new_room(client, code)

    status, body = complete(client, room, 1, column)

    assert status == 200
    assert body["incomplete"] is False
    assert body["items"] == []


def test_completing_changes_nothing(client):
    room = new_room(client, "import os\nos.pa")
    before = client.get(f"/rooms/{room}").json()

    complete(client, room, 2, 5)

    assert client.get(f"/rooms/{room}").json() == before
    assert not Op.objects.filter(room_id=room).exists()


async def complete_async(async_client, room: str, line: int, column: int) -> dict:
    response = await async_client.get(
        "/autocomplete", {"room": room, "line": line, "column": column}
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db(transaction=True)
async def test_a_change_made_over_the_websocket_is_completed_from_the_new_text(async_client):
    response = await async_client.post(
        "/rooms", {"code": "alpha = 1\nal"}, content_type="application/json"
    )
    room = response.json()["room_id"]
    assert "alpha" in labels(await complete_async(async_client, room, 2, 2))
    editor = WebSocketClient(f"/ws/{room}")
    await editor.connect()
    ack = await editor.request({"type": "sync_code", "code": "alpine = 1\nal"}, "ack")
    assert ack["version"] == 1

    live = await complete_async(async_client, room, 2, 2)  # this process holds the room's head
    await editor.close()
    assert live_rooms.get(room) is None  # now the stored copy and the ops after it answer
    completion.clear_cache()  # the same version and position: it must be completed again
    stored = await complete_async(async_client, room, 2, 2)

    for body in (live, stored):
        assert "alpine" in labels(body)
        assert "alpha" not in labels(body)


def test_columns_count_code_points(client):
    # "🙂" is one code point (two UTF-16 units, four UTF-8 bytes); the line is 10 code points.
    room = new_room(client, 'value_1 = 2\n"🙂" + valu')

    status, body = complete(client, room, 2, 10)
    assert status == 200
    assert body["query"] == "valu"
    assert "value_1" in labels(body)

    status, _ = complete(client, room, 2, 11)
    assert status == 400


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_break_at_each_python_newline(client, newline):
    room = new_room(client, f"a_value = 1{newline}a_v")

    status, body = complete(client, room, 2, 3)

    assert status == 200
    assert labels(body)[0] == "a_value"
    assert complete(client, room, 2, 4)[0] == 400  # line 2 is "a_v", with no \r in it


def test_the_empty_line_after_a_final_newline_is_a_position(client):
    room = new_room(client, "x = 1\n")

    status, _ = complete(client, room, 2, 0)

    assert status == 200


def test_an_invalid_room_id_is_a_400_before_any_database_query(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        status, body = complete(client, "no/such id", 1, 0)

    assert status == 400
    assert "error" in body


def test_an_unknown_room_is_a_404(client):
    status, body = complete(client, "nobody-here", 1, 0)

    assert status == 404
    assert "error" in body


@pytest.mark.parametrize(
    ("line", "column"),
    [
        (None, "0"),  # line missing
        ("1", None),  # column missing
        ("x", "0"),
        ("1", "y"),
        ("1.0", "0"),
        ("", "0"),
        ("-1", "0"),
        ("1", "-1"),
        ("0", "0"),  # lines count from 1
        ("3", "0"),  # past the last line
        ("99999999999999999999999", "0"),
        ("1", "10"),  # past the end of line 1 ("import os" is 9 code points)
    ],
)
def test_a_bad_position_is_a_json_400(client, line, column):
    room = new_room(client, "import os\nos.pa")

    status, body = complete(client, room, line, column)

    assert status == 400
    assert isinstance(body["error"], str)


class GatedJedi:
    """Stands in for Jedi and answers only when the test says so (bounded)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, code, line, column, position):
        if not self.release.wait(timeout=10):
            raise RuntimeError("the test never released Jedi")
        return (completion.RawItem("from_jedi", "function", "", completion.SOURCE_FILE),)


def test_past_the_budget_the_answer_is_keywords_and_file_names_marked_incomplete(
    client, settings, monkeypatch
):
    gate = GatedJedi()
    # Let the real warm-up finish first, so that neither it nor its wait meets the stand-in.
    completion.start_warm_up().result(timeout=60)
    monkeypatch.setattr(completion, "_jedi_completions", gate)
    settings.AUTOCOMPLETE_BUDGET_S = 0.01
    room = new_room(client, "items = []\ni")
    try:
        status, body = complete(client, room, 2, 1)
    finally:
        gate.release.set()
        completion._executor.submit(lambda: None).result(timeout=30)  # let the worker drain

    assert status == 200
    assert body["incomplete"] is True
    assert {"if", "import", "in", "is", "int", "items"} <= set(labels(body))
    assert "from_jedi" not in labels(body)
