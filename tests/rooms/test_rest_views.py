"""The REST API (docs/protocol.md sections 2 and 3) through Django's test client.

History and private rooms are covered elsewhere.
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from rooms import document
from rooms.models import Op, Room

pytestmark = pytest.mark.django_db

ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CODE_POINTS = 1_048_576
ROOM_BODY_KEYS = {"room_id", "name", "code", "version", "users", "ws_url"}


@pytest.fixture
def room() -> Room:
    return document.room_create(code="print('hi')\n", name="demo")


def post_json(client: Client, path: str, body: object | None = None, **extra):
    data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    return client.post(path, data=data, content_type="application/json", **extra)


def post_raw(client: Client, path: str, raw: bytes):
    return client.post(path, data=raw, content_type="application/json")


def assert_json_error(response, status: int) -> str:
    """Every REST error: the given 4xx status and a JSON body with an "error" text."""
    assert response.status_code == status, (response.status_code, response.content[:200])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


def assert_not_a_redirect(response) -> None:
    assert not 300 <= response.status_code < 400, response.status_code
    assert "Location" not in response


# -- GET /rooms/create --------------------------------------------------------------------------


def test_get_rooms_create_returns_a_random_url_safe_id_and_its_ws_url(client):
    response = client.get("/rooms/create")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert ROOM_ID.fullmatch(body["room_id"])
    # 96 random bits in base64url are at least 16 characters; token_urlsafe(16) gives 22.
    assert len(body["room_id"]) >= 22
    assert body["ws_url"] == f"/ws/{body['room_id']}"


def test_get_rooms_create_makes_a_new_empty_room_at_version_0_each_call(client):
    ids = {client.get("/rooms/create").json()["room_id"] for _ in range(5)}
    assert len(ids) == 5
    for room_id in ids:
        stored = Room.objects.get(id=room_id)
        assert (stored.code, stored.name, stored.version) == ("", "", 0)


# -- POST /rooms ----------------------------------------------------------------------------------


def test_post_rooms_without_a_body_creates_an_empty_room(client):
    response = client.generic("POST", "/rooms")
    assert response.status_code == 201
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert ROOM_ID.fullmatch(body["room_id"]) and len(body["room_id"]) >= 22
    assert body["ws_url"] == f"/ws/{body['room_id']}"
    stored = Room.objects.get(id=body["room_id"])
    assert (stored.code, stored.name, stored.version) == ("", "", 0)


def test_post_rooms_with_an_empty_object_creates_an_empty_room(client):
    response = post_json(client, "/rooms", {})
    assert response.status_code == 201
    stored = Room.objects.get(id=response.json()["room_id"])
    assert (stored.code, stored.version) == ("", 0)


def test_post_rooms_with_code_and_name_creates_a_room_holding_them_at_version_0(client):
    code = "def f():\n    return 'a😀b'\n"
    response = post_json(client, "/rooms", {"code": code, "name": "démo"})
    assert response.status_code == 201
    room_id = response.json()["room_id"]
    joined = client.get("/rooms/join", {"id": room_id}).json()
    assert (joined["code"], joined["name"], joined["version"]) == (code, "démo", 0)
    stored = Room.objects.get(id=room_id)
    assert (stored.code, stored.name, stored.version) == (code, "démo", 0)
    assert not Op.objects.filter(room_id=room_id).exists()


def test_post_rooms_accepts_a_name_of_exactly_64_characters(client):
    response = post_json(client, "/rooms", {"name": "n" * 64})
    assert response.status_code == 201
    assert Room.objects.get(id=response.json()["room_id"]).name == "n" * 64


def test_post_rooms_accepts_private_false(client):
    response = post_json(client, "/rooms", {"code": "x", "private": False})
    assert response.status_code == 201
    assert ROOM_ID.fullmatch(response.json()["room_id"])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'"code"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="bool"),
        pytest.param(b'{"code": "x"', id="invalid-json"),
        pytest.param(b"{'code': 'x'}", id="single-quotes"),
        pytest.param(b'{"code": NaN}', id="nan"),
        pytest.param(b'{"code": "x", "version": Infinity}', id="infinity"),
        pytest.param(b'{"code": 1}', id="code-number"),
        pytest.param(b'{"code": null}', id="code-null"),
        pytest.param(b'{"code": ["x"]}', id="code-array"),
        pytest.param(b'{"code": "a\\u0000b"}', id="code-nul-escape"),
        pytest.param(b'{"code": "a\\ud800b"}', id="code-lone-surrogate"),
        pytest.param(b'{"private": 1}', id="private-int"),
        pytest.param(b'{"private": "true"}', id="private-string"),
        pytest.param(b'{"private": null}', id="private-null"),
        pytest.param(b'{"name": 7}', id="name-number"),
        pytest.param(('{"name": "' + "n" * 65 + '"}').encode(), id="name-65-chars"),
        pytest.param(b'{"code": "\xff\xfe"}', id="not-utf8"),
    ],
)
def test_post_rooms_with_a_bad_body_is_400_json_and_creates_nothing(client, raw):
    before = Room.objects.count()
    assert_json_error(post_raw(client, "/rooms", raw), 400)
    assert Room.objects.count() == before


@pytest.mark.parametrize("char", ["x", "é", "😀"], ids=["ascii", "2-byte", "4-byte"])
def test_post_rooms_with_code_of_exactly_max_code_points_is_accepted(client, char):
    code = char * MAX_CODE_POINTS
    response = post_json(client, "/rooms", {"code": code})
    assert response.status_code == 201, response.content[:200]
    stored = Room.objects.get(id=response.json()["room_id"])
    assert stored.code == code and stored.version == 0


@pytest.mark.parametrize("char", ["x", "😀"], ids=["ascii", "4-byte"])
def test_post_rooms_with_code_over_max_code_points_is_413_and_creates_nothing(client, char):
    before = Room.objects.count()
    response = post_json(client, "/rooms", {"code": char * (MAX_CODE_POINTS + 1)})
    assert_json_error(response, 413)
    assert Room.objects.count() == before


def test_post_rooms_needs_no_csrf_token_even_with_a_csrf_cookie():
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.cookies["csrftoken"] = "a" * 32
    response = post_json(csrf_client, "/rooms", {"code": "x"})
    assert response.status_code == 201
    assert Room.objects.get(id=response.json()["room_id"]).code == "x"


# -- join / detail --------------------------------------------------------------------------------


def expected_body(room: Room, **changes) -> dict:
    body = {
        "room_id": room.id,
        "name": room.name,
        "code": room.code,
        "version": room.version,
        "users": [],
        "ws_url": f"/ws/{room.id}",
    }
    body.update(changes)
    return body


def test_join_returns_the_room_body(client, room):
    response = client.get("/rooms/join", {"id": room.id})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= ROOM_BODY_KEYS
    assert body.items() >= expected_body(room).items()


def test_detail_returns_the_same_body_as_join(client, room):
    response = client.get(f"/rooms/{room.id}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) >= ROOM_BODY_KEYS
    assert response.json() == client.get("/rooms/join", {"id": room.id}).json()


def test_join_shows_the_latest_committed_text_and_version(client, room):
    Room.objects.filter(id=room.id).update(code="changed", version=3)
    body = client.get("/rooms/join", {"id": room.id}).json()
    assert (body["code"], body["version"]) == ("changed", 3)


@pytest.mark.parametrize("query", ["", "?id=", "?other=x"])
def test_join_without_an_id_is_400(client, query):
    assert_json_error(client.get(f"/rooms/join{query}"), 400)


MALFORMED_IDS = ["a" * 65, "white space", "semi;colon", "dot.dot", "ünïcode", "percent%"]


@pytest.mark.parametrize("room_id", MALFORMED_IDS)
def test_join_with_a_malformed_id_is_400_without_any_database_query(
    client, room_id, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get("/rooms/join", {"id": room_id})
    assert_json_error(response, 400)


@pytest.mark.parametrize("room_id", MALFORMED_IDS)
def test_detail_with_a_malformed_id_is_400_without_any_database_query(
    client, room_id, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get(f"/rooms/{room_id}")
    assert_json_error(response, 400)


def test_id_of_exactly_64_characters_is_well_formed_so_unknown_is_404(client):
    assert_json_error(client.get("/rooms/join", {"id": "a" * 64}), 404)
    assert_json_error(client.get(f"/rooms/{'a' * 64}"), 404)


def test_join_of_an_unknown_room_is_404(client):
    assert_json_error(client.get("/rooms/join", {"id": "no-such-room"}), 404)


def test_detail_of_an_unknown_room_is_404(client):
    assert_json_error(client.get("/rooms/no-such-room"), 404)


# -- slashes, unknown URLs, methods ---------------------------------------------------------------


def route_pairs(room_id: str) -> list[tuple[str, str, dict, int]]:
    """(method, path without slash, query, expected status) for every route."""
    return [
        ("get", "/rooms/create", {}, 200),
        ("post", "/rooms", {}, 201),
        ("get", "/rooms/join", {"id": room_id}, 200),
        ("get", "/rooms/join", {"id": "unknown-room"}, 404),
        ("get", "/rooms/join", {}, 400),
        ("get", f"/rooms/{room_id}", {}, 200),
        ("get", "/rooms/unknown-room", {}, 404),
        ("get", f"/rooms/{'a' * 65}", {}, 400),
        ("get", "/rooms", {}, 401),  # your rooms: sign in first (docs/protocol.md)
        ("put", "/rooms/join", {}, 405),
    ]


def test_slash_and_no_slash_forms_of_every_route_answer_the_same_without_redirect(client, room):
    for method, path, query, status in route_pairs(room.id):
        for form in (path, path + "/"):
            if method == "get":
                response = client.get(form, query)
            else:
                response = client.generic(method.upper(), form)
            assert response.status_code == status, (method, form, response.status_code)
            assert_not_a_redirect(response)
            assert response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    "path",
    ["/nope", "/nope/", "/rooms/x/y/z", "/ws/abc", "/rooms/create/extra", "/index.html"],
)
def test_unknown_url_is_a_json_404(client, path):
    assert_json_error(client.get(path), 404)


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_unknown_url_is_a_json_404_for_every_method(client, method):
    assert_json_error(getattr(client, method)("/no/such/endpoint"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/rooms/create"),
        ("put", "/rooms/create"),
        ("put", "/rooms"),
        ("delete", "/rooms"),
        ("patch", "/rooms"),
        ("post", "/rooms/join"),
        ("delete", "/rooms/join"),
        ("post", "/rooms/ROOM"),
        ("delete", "/rooms/ROOM"),
        ("put", "/rooms/ROOM/"),
    ],
)
def test_wrong_method_is_a_json_405(client, room, method, path):
    before = (Room.objects.count(), Room.objects.get(id=room.id).code)
    response = getattr(client, method)(path.replace("ROOM", room.id))
    assert_json_error(response, 405)
    assert "Allow" in response
    assert (Room.objects.count(), Room.objects.get(id=room.id).code) == before


def test_wrong_method_is_405_even_when_csrf_checks_are_enforced(room):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.cookies["csrftoken"] = "a" * 32
    for path in ("/rooms/create", "/rooms/join", f"/rooms/{room.id}"):
        assert_json_error(csrf_client.post(path), 405)


# -- GET changes nothing --------------------------------------------------------------------------


def snapshot() -> tuple:
    return (
        sorted(Room.objects.values_list("id", "name", "code", "version", "updated_at")),
        Op.objects.count(),
    )


def test_get_calls_other_than_create_change_nothing(client, room):
    before = snapshot()
    paths = [
        f"/rooms/join?id={room.id}",
        f"/rooms/join/?id={room.id}",
        "/rooms/join?id=unknown-room",
        "/rooms/join",
        f"/rooms/{room.id}",
        f"/rooms/{room.id}/",
        "/rooms/unknown-room",
        f"/rooms/{'a' * 65}",
        "/rooms",
        "/rooms/",
        "/nope",
    ]
    for path in paths:
        assert client.get(path).status_code < 500
        assert client.head(path).status_code < 500
    assert snapshot() == before


@pytest.mark.django_db
def test_body_over_the_upload_cap_is_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"code": "x" * 2000})
    response = client.post("/rooms", data=body, content_type="application/json")
    assert response.status_code == 413 and "error" in response.json()
