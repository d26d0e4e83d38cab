"""GET /healthz and GET /metrics of a real server process (docs/deploying.md, "Health and
metrics"): the embedded server, and one on Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.services import (  # noqa: F401  (fixtures imported for use in this module)
    PostgresDatabase,
    ServiceServer,
    postgres_database,
    postgres_service,
    redis_service,
    service_env,
)

pytestmark = pytest.mark.e2e

TIMEOUT_S = 10
ALL_OK = {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}


def gauges(http_url: str) -> dict[str, float]:
    """The unlabelled samples of GET /metrics, by name."""
    response = httpx.get(f"{http_url}/metrics", timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


async def live_rooms_reach(http_url: str, expected: float) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while (await asyncio.to_thread(gauges, http_url))["collab_rooms_live"] != expected:
            await asyncio.sleep(0.05)


def test_healthz_of_the_embedded_server_is_ok(shared_server):
    response = httpx.get(f"{shared_server.http_url}/healthz", timeout=TIMEOUT_S)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json().items() >= ALL_OK.items()


async def test_metrics_of_the_embedded_server_count_its_live_rooms(shared_server):
    http_url = shared_server.http_url
    room = httpx.get(f"{http_url}/rooms/create", timeout=TIMEOUT_S).json()
    before = gauges(http_url)
    assert before["collab_changes_total"] >= 0 and before["collab_connections"] >= 0
    async with websockets.connect(f"{shared_server.ws_base}{room['ws_url']}") as socket:
        async with asyncio.timeout(TIMEOUT_S):
            assert json.loads(await socket.recv())["type"] == "init"
        await live_rooms_reach(http_url, before["collab_rooms_live"] + 1)
    await live_rooms_reach(http_url, before["collab_rooms_live"])


@pytest.mark.services
def test_healthz_on_redis_and_postgres_is_ok_and_holds_no_extra_connections(
    tmp_path,
    redis_service,  # noqa: F811
    postgres_database: PostgresDatabase,  # noqa: F811
):
    server = ServiceServer(
        tmp_path / "server", postgres_database, service_env(redis_service, postgres_database)
    )
    server.start()
    try:

        def healthz() -> None:
            response = httpx.get(f"{server.http_url}/healthz", timeout=TIMEOUT_S)
            assert response.status_code == 200, response.text
            assert response.json().items() >= ALL_OK.items()

        def connections() -> int:
            return postgres_database.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                (postgres_database.name,),
            )[0][0]

        healthz()
        settled = connections()
        for _ in range(10):
            healthz()
        assert connections() == settled  # every check reuses one connection
    finally:
        server.stop()
