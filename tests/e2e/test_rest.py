"""The REST API (docs/protocol.md section 3) against the real server over HTTP."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
import websockets

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(10)
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CODE_POINTS = 1_048_576


@pytest.fixture
def http(shared_server):
    with httpx.Client(
        base_url=shared_server.http_url, follow_redirects=False, timeout=TIMEOUT
    ) as c:
        yield c


def new_room(http: httpx.Client, **body) -> str:
    response = http.post("/rooms", json=body)
    assert response.status_code == 201, response.text
    return response.json()["room_id"]


def assert_json_error(response: httpx.Response, status: int) -> None:
    """A 4xx JSON body with an "error" text, never an HTML page."""
    assert response.status_code == status, (response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body


def test_get_rooms_create_returns_a_random_id_and_its_ws_url(http):
    body = http.get("/rooms/create").json()
    assert ROOM_ID.fullmatch(body["room_id"]) and len(body["room_id"]) >= 22
    assert body["ws_url"] == f"/ws/{body['room_id']}"
    joined = http.get("/rooms/join", params={"id": body["room_id"]})
    assert joined.status_code == 200 and joined.json()["version"] == 0


def test_post_rooms_without_a_body_creates_an_empty_room(http):
    response = http.post("/rooms")
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert ROOM_ID.fullmatch(body["room_id"]) and len(body["room_id"]) >= 22
    assert body["ws_url"] == f"/ws/{body['room_id']}"
    joined = http.get(f"/rooms/{body['room_id']}").json()
    assert (joined["code"], joined["name"], joined["version"]) == ("", "", 0)


def test_post_rooms_with_code_and_name_holds_them_at_version_0(http):
    code = "for i in range(3):\n    print('a😀b', i)\n"
    room_id = new_room(http, code=code, name="démo")
    joined = http.get("/rooms/join", params={"id": room_id})
    assert joined.status_code == 200
    assert (
        joined.json().items()
        >= {
            "room_id": room_id,
            "name": "démo",
            "code": code,
            "version": 0,
            "users": [],
            "ws_url": f"/ws/{room_id}",
        }.items()
    )
    assert http.get(f"/rooms/{room_id}").json() == joined.json()


def test_post_rooms_with_a_csrf_looking_cookie_still_works(http):
    response = http.post(
        "/rooms",
        json={"code": "x"},
        headers={"Cookie": "csrftoken=abcdefghijklmnopqrstuvwxyz012345; sessionid=whatever"},
    )
    assert response.status_code == 201, response.text
    assert http.get(f"/rooms/{response.json()['room_id']}").json()["code"] == "x"


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"x"',
        b"{",
        b'{"code": NaN}',
        b'{"code": 5}',
        b'{"code": "a\\u0000b"}',
        b'{"private": "yes"}',
        b'{"name": "' + b"n" * 65 + b'"}',
    ],
    ids=[
        "array",
        "string",
        "invalid-json",
        "nan",
        "code-number",
        "code-nul",
        "private-string",
        "name-65",
    ],
)
def test_post_rooms_with_a_bad_body_is_400_json(http, raw):
    response = http.post("/rooms", content=raw, headers={"Content-Type": "application/json"})
    assert_json_error(response, 400)


def test_post_rooms_with_code_over_the_limit_is_413_json(http):
    response = http.post("/rooms", json={"code": "x" * (MAX_CODE_POINTS + 1)})
    assert_json_error(response, 413)


def test_post_rooms_with_code_at_the_limit_is_accepted(http):
    room_id = new_room(http, code="x" * MAX_CODE_POINTS)
    assert len(http.get(f"/rooms/{room_id}").json()["code"]) == MAX_CODE_POINTS


def test_join_and_detail_errors_are_400_for_missing_or_malformed_ids_and_404_for_unknown(http):
    assert_json_error(http.get("/rooms/join"), 400)
    assert_json_error(http.get("/rooms/join", params={"id": ""}), 400)
    assert_json_error(http.get("/rooms/join", params={"id": "a" * 65}), 400)
    assert_json_error(http.get("/rooms/join", params={"id": "bad id"}), 400)
    assert_json_error(http.get("/rooms/" + "a" * 65), 400)
    assert_json_error(http.get("/rooms/bad%20id"), 400)
    assert_json_error(http.get("/rooms/join", params={"id": "unknown-room"}), 404)
    assert_json_error(http.get("/rooms/unknown-room"), 404)


def test_slash_and_no_slash_forms_answer_the_same_without_redirect(http):
    room_id = new_room(http)
    cases = [
        ("GET", "/rooms/create", {}, 200),
        ("POST", "/rooms", {}, 201),
        ("GET", "/rooms/join", {"id": room_id}, 200),
        ("GET", "/rooms/join", {}, 400),
        ("GET", f"/rooms/{room_id}", {}, 200),
        ("GET", "/rooms/unknown-room", {}, 404),
        ("GET", "/rooms", {}, 401),  # your rooms: sign in first (docs/protocol.md)
    ]
    for method, path, params, status in cases:
        for form in (path, path + "/"):
            response = http.request(method, form, params=params)
            assert response.status_code == status, (method, form, response.status_code)
            assert "location" not in response.headers
            assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/nope/",
        "/nope/deeper/path/",
        "/rooms/create/extra",
        "/rooms/a/b/c",
        "/ws/some-room",
        "/index.html",
        "/favicon.ico",
        "/static/missing.css",
    ],
)
def test_unknown_url_is_a_json_404_not_html(http, path):
    assert_json_error(http.get(path), 404)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_unknown_url_is_a_json_404_for_unsafe_methods_too(http, method):
    assert_json_error(http.request(method, "/no/such/endpoint"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/rooms"),
        ("DELETE", "/rooms/"),
        ("POST", "/rooms/create"),
        ("POST", "/rooms/join"),
        ("DELETE", "/rooms/ROOM"),
    ],
)
def test_wrong_method_is_a_json_405(http, method, path):
    room_id = new_room(http, code="keep")
    response = http.request(method, path.replace("ROOM", room_id))
    assert_json_error(response, 405)
    assert http.get(f"/rooms/{room_id}").json()["code"] == "keep"


def test_no_error_response_is_html(http):
    room_id = new_room(http)
    responses = [
        http.get("/missing"),
        http.post("/missing", content=b"<html>", headers={"Content-Type": "text/html"}),
        http.get("/rooms/join"),
        http.get("/rooms/" + "z" * 65),
        http.post("/rooms", content=b"{", headers={"Content-Type": "application/json"}),
        http.patch("/rooms"),
        http.post(f"/rooms/{room_id}", headers={"Cookie": "csrftoken=" + "a" * 32}),
        http.get("/rooms/join", params={"id": room_id}, headers={"Accept": "text/html"}),
        http.get("/nothing", headers={"Accept": "text/html,application/xhtml+xml"}),
    ]
    for response in responses:
        assert response.headers["content-type"].startswith("application/json"), (
            response.request.method,
            response.request.url,
            response.status_code,
        )
        assert not response.text.lstrip().startswith("<")
        if response.status_code >= 400:
            assert "error" in response.json()


def test_get_calls_other_than_create_change_nothing(http):
    room_id = new_room(http, code="stable", name="still")
    before = http.get(f"/rooms/{room_id}").json()
    for path, params in [
        ("/rooms/join", {"id": room_id}),
        (f"/rooms/{room_id}", {}),
        (f"/rooms/{room_id}/", {}),
        ("/rooms", {}),
        ("/rooms/join", {}),
        ("/rooms/join", {"id": "unknown-room"}),
    ]:
        http.get(path, params=params)
        http.head(path, params=params)
    assert http.get(f"/rooms/{room_id}").json() == before


async def complete_at(http: httpx.AsyncClient, room_id: str, line: int, column: int) -> dict:
    params = {"room": room_id, "line": line, "column": column}
    response = await http.get("/autocomplete", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_autocomplete_completes_the_text_edited_over_the_websocket(shared_server):
    # 60 changes: the stored copy of the text (Room.code), refreshed every 100, lags behind.
    lines = [f"value_{n} = {n}\n" for n in range(60)]
    async with httpx.AsyncClient(base_url=shared_server.http_url, timeout=TIMEOUT) as http:
        room_id = (await http.post("/rooms", json={})).json()["room_id"]
        url = f"{shared_server.ws_base}/ws/{room_id}?mode=ops"
        async with websockets.connect(url, open_timeout=10) as ws:
            text = json.loads(await ws.recv())["code"]
            for seq, line in enumerate(lines, start=1):
                op = [len(text), line] if text else [line]
                await ws.send(json.dumps({"type": "op", "version": seq - 1, "seq": seq, "op": op}))
                async with asyncio.timeout(10):
                    while (reply := json.loads(await ws.recv()))["type"] != "ack":
                        assert reply["type"] in {"join", "leave"}, reply
                assert reply["version"] == seq, reply
                text += line

            # Line 51 is "value_50 = 50".
            live = await complete_at(http, room_id, 51, 5)
        # The room has no connection left; another position, so that no cached answer serves.
        after = await complete_at(http, room_id, 51, 4)

    assert (live["query"], after["query"]) == ("value", "valu")
    for body in (live, after):
        assert {"value_0", "value_49"} <= {item["label"] for item in body["items"]}
