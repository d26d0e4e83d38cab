"""GET /autocomplete without a room (docs/protocol.md section 10): the keyword rule, builtin
items, and the HTTP rules."""

import builtins
import keyword

import pytest
from django.test import Client

from autocomplete import completion

QUERIES = ["", "i", "im", "import", "importx", "I", "Tr", "tr", "T", "_", "a", "x", "é", " i", "i "]


def expected_keywords(query: str) -> list[str]:
    return sorted(k for k in keyword.kwlist if k.startswith(query))


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.mark.parametrize("query", QUERIES)
def test_suggestions_are_exactly_the_keywords_starting_with_the_query(client, query):
    response = client.get("/autocomplete", {"query": query})

    assert response.status_code == 200
    body = response.json()
    assert body["query"] == query
    assert body["suggestions"] == expected_keywords(query)


def test_empty_query_gives_every_keyword_sorted(client):
    assert client.get("/autocomplete?query=").json()["suggestions"] == sorted(keyword.kwlist)


def test_matching_is_case_sensitive(client):
    assert client.get("/autocomplete", {"query": "true"}).json()["suggestions"] == []
    assert client.get("/autocomplete", {"query": "Tru"}).json()["suggestions"] == ["True"]


def test_trailing_slash_answers_directly_without_redirect(client):
    response = client.get("/autocomplete/", {"query": "de"})

    assert response.status_code == 200
    assert response.json()["suggestions"] == ["def", "del"]


def test_missing_query_is_a_json_400(client):
    response = client.get("/autocomplete")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert isinstance(response.json()["error"], str)


def test_line_and_column_without_a_room_are_a_json_400(client):
    response = client.get("/autocomplete", {"query": "i", "line": "1", "column": "0"})

    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_other_methods_get_a_json_405_even_without_a_csrf_token(method):
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)("/autocomplete?query=i")

    assert response.status_code == 405
    assert "error" in response.json()
    assert "GET" in response["Allow"]


@pytest.mark.parametrize("query", ["i", "I", "Tr", "_"])
def test_items_are_the_keywords_and_builtins_starting_with_the_query(client, query):
    items = client.get("/autocomplete", {"query": query}).json()["items"]

    names = {k for k in keyword.kwlist if k.startswith(query)}
    names |= {b for b in dir(builtins) if b.startswith(query)}
    assert sorted(item["label"] for item in items) == sorted(names)


def test_items_have_the_editor_completion_shape(client):
    items = client.get("/autocomplete", {"query": "pr"}).json()["items"]

    assert items
    for item in items:
        assert set(item) >= {"label", "kind", "detail", "insert_text", "sort_text"}
        assert item["kind"].isalpha() and item["kind"].islower()
        assert item["insert_text"] == item["label"]
    assert [item["sort_text"] for item in items] == sorted(item["sort_text"] for item in items)
    by_label = {item["label"]: item for item in items}
    assert by_label["print"]["kind"] == "function"
    assert by_label["print"]["detail"].startswith("print(")
    assert by_label["property"]["kind"] == "class"


def test_keywords_are_items_of_kind_keyword(client):
    items = client.get("/autocomplete", {"query": "imp"}).json()["items"]

    assert {"label": "import", "kind": "keyword"}.items() <= items[0].items()


def test_items_put_public_names_first_and_dunders_last(client):
    labels = [item["label"] for item in client.get("/autocomplete?query=").json()["items"]]

    privacy = [2 if n.startswith("__") else 1 if n.startswith("_") else 0 for n in labels]
    assert privacy == sorted(privacy)
    assert labels[-1].startswith("__")


def test_a_query_no_name_starts_with_gives_empty_lists(client):
    body = client.get("/autocomplete", {"query": "zzz"}).json()

    assert body["suggestions"] == []
    assert body["items"] == []


def test_answers_are_fresh_copies_a_caller_cannot_corrupt():
    completion.keyword_suggestions("i").append("oops")
    completion.items_without_context("i")[0]["label"] = "oops"

    assert completion.keyword_suggestions("i") == expected_keywords("i")
    assert "oops" not in {item["label"] for item in completion.items_without_context("i")}
