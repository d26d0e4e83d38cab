"""GET /healthz: 200 when the process can reach its database and channel layer, else 503 with
the check that failed (rooms/health.py). Failures are real: the database refuses statements or
stalls inside a query, the channel layer's Redis is not there.
"""

from __future__ import annotations

import secrets
import sqlite3
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from rooms import health
from tests.e2e.server import free_port
from tests.e2e.services import redis_service  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

ALL_OK = {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}


def redis_layer(url: str, **config: str) -> dict:
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [url], **config},
        }
    }


async def on_check_connection(function, *args) -> None:
    """Run `function` in the database check's thread, where its connection lives."""
    in_check_thread = database_sync_to_async(
        function, thread_sensitive=False, executor=health.database_thread
    )
    await in_check_thread(*args)


@pytest.fixture
async def database_refusing_statements():
    """The database connection the checks use refuses every statement (SQLite's authorizer)."""

    def deny(*args: object) -> int:
        return sqlite3.SQLITE_DENY

    def set_authorizer(authorizer) -> None:
        connection.ensure_connection()
        connection.connection.set_authorizer(authorizer)

    await on_check_connection(set_authorizer, deny)
    yield
    await on_check_connection(set_authorizer, None)


STALL_S = 1.5


@pytest.fixture
async def database_stalling():
    """Each statement on the checks' database connection takes STALL_S (SQLite's progress
    handler runs inside the query)."""

    def stall() -> int:
        time.sleep(STALL_S)
        connection.connection.set_progress_handler(None, 0)  # once: the next statements run
        return 0

    def set_handler(handler) -> None:
        connection.ensure_connection()
        connection.connection.set_progress_handler(handler, 1)

    await on_check_connection(set_handler, stall)
    yield
    # Queued behind the stalled query in the checks' thread: the test ends after it.
    await on_check_connection(set_handler, None)


@pytest.fixture
async def flush_layer():
    """Close the channel layer's Redis connections at the end, on the test's own loop."""
    yield
    await get_channel_layer().flush()


async def test_healthz_is_200_when_database_and_channel_layer_answer(async_client):
    response = await async_client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Cache-Control"] == "no-store"
    assert response.json().items() >= ALL_OK.items()


async def test_healthz_answers_with_and_without_a_trailing_slash_and_to_head(async_client):
    assert (await async_client.get("/healthz/")).json().items() >= ALL_OK.items()
    assert (await async_client.head("/healthz")).status_code == 200


async def test_healthz_checks_again_on_every_request(async_client):
    for _ in range(3):
        assert (await async_client.get("/healthz")).json().items() >= ALL_OK.items()


async def test_healthz_is_503_naming_the_database_when_it_refuses_queries(
    async_client, database_refusing_statements
):
    response = await async_client.get("/healthz")
    assert response.status_code == 503
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["channel_layer"] == "ok"
    assert body["checks"]["database"] == "error: DatabaseError"


async def test_healthz_recovers_once_the_database_answers_again(
    async_client, database_refusing_statements
):
    assert (await async_client.get("/healthz")).status_code == 503
    await on_check_connection(lambda: connection.connection.set_authorizer(None))
    assert (await async_client.get("/healthz")).json().items() >= ALL_OK.items()


async def test_a_database_that_does_not_answer_fails_within_the_bound(
    async_client, monkeypatch, database_stalling
):
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.2)
    started = time.monotonic()
    response = await async_client.get("/healthz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "timed out after 0.2 s", "channel_layer": "ok"}
    assert elapsed < STALL_S


async def test_healthz_is_503_naming_the_channel_layer_when_redis_is_down(
    async_client, settings, flush_layer
):
    settings.CHANNEL_LAYERS = redis_layer(f"redis://127.0.0.1:{free_port()}/0")
    response = await async_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["channel_layer"] == "error: ConnectionError"


async def test_healthz_refuses_other_methods_with_a_json_405(async_client):
    for method in ("post", "put", "delete"):
        response = await getattr(async_client, method)("/healthz")
        assert response.status_code == 405, method
        assert response["Allow"] == "GET"
        assert "error" in response.json()


@pytest.mark.services
async def test_healthz_round_trips_through_redis_pubsub(
    async_client,
    settings,
    flush_layer,
    redis_service,  # noqa: F811
):
    prefix = f"healthz-test-{secrets.token_hex(6)}."
    settings.CHANNEL_LAYERS = redis_layer(redis_service, prefix=prefix)
    for _ in range(3):
        response = await async_client.get("/healthz")
        assert response.status_code == 200, response.json()
        assert response.json().items() >= ALL_OK.items()
    # Every check reuses one probe channel: repeated checks leave one subscription, not three.
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_service)
    try:
        assert len(await client.pubsub_channels(f"{prefix}*")) == 1
    finally:
        await client.aclose()
