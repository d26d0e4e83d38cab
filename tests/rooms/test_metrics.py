"""GET /metrics and the hooks of rooms/metrics.py: this process's numbers, in Prometheus' format.

The registry lives as long as the process, so tests compare values before and after, never
absolute counts (other tests move them too).
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from rooms import document, metrics
from rooms.live import live_rooms

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED_TYPES = {
    "collab_connections": "gauge",
    "collab_rooms_live": "gauge",
    "collab_changes": "counter",
    "collab_ack_latency_seconds": "histogram",
    "collab_fanout_latency_seconds": "histogram",
    "collab_rate_limited": "counter",
}


def value(name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    assert sample is not None, f"no sample {name} {labels}"
    return sample


async def scrape(async_client) -> dict[str, float]:
    """GET /metrics, parsed: sample name (with `le` for buckets) -> value."""
    response = await async_client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = sample.name + (f"{{le={sample.labels['le']}}}" if "le" in sample.labels else "")
            samples[key] = sample.value
    return samples


async def test_metrics_is_the_prometheus_text_format_with_every_collab_metric(async_client):
    response = await async_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert response["Cache-Control"] == "no-store"
    families = {f.name: f.type for f in text_string_to_metric_families(response.content.decode())}
    assert {name: families.get(name) for name in EXPECTED_TYPES} == EXPECTED_TYPES


async def test_metrics_answers_with_and_without_a_trailing_slash(async_client):
    assert (await async_client.get("/metrics/")).status_code == 200


async def test_metrics_refuses_other_methods_with_a_json_405(async_client):
    response = await async_client.post("/metrics")
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert "error" in response.json()


async def test_counters_move_when_the_hooks_are_called(async_client):
    before = await scrape(async_client)
    metrics.change_committed()
    metrics.change_committed(3)
    metrics.rate_limited()
    after = await scrape(async_client)
    assert after["collab_changes_total"] - before["collab_changes_total"] == 4
    assert after["collab_rate_limited_total"] - before["collab_rate_limited_total"] == 1


def test_connections_gauge_follows_opened_and_closed():
    before = value("collab_connections")
    metrics.connection_opened()
    metrics.connection_opened()
    assert value("collab_connections") == before + 2
    metrics.connection_closed()
    metrics.connection_closed()
    assert value("collab_connections") == before


@pytest.mark.parametrize(
    ("hook", "name"),
    [
        (metrics.ack_sent, "collab_ack_latency_seconds"),
        (metrics.fanout_done, "collab_fanout_latency_seconds"),
    ],
)
def test_latency_hooks_observe_into_sub_millisecond_buckets(hook, name):
    within_500us = value(f"{name}_bucket", le="0.0005")
    within_250us = value(f"{name}_bucket", le="0.00025")
    count, total = value(f"{name}_count"), value(f"{name}_sum")
    hook(0.0003)
    assert value(f"{name}_bucket", le="0.0005") == within_500us + 1
    assert value(f"{name}_bucket", le="0.00025") == within_250us
    assert value(f"{name}_count") == count + 1
    assert value(f"{name}_sum") == pytest.approx(total + 0.0003)


async def test_rooms_live_is_the_number_of_live_rooms_at_scrape_time(async_client):
    rooms = [await database_sync_to_async(document.room_create)() for _ in range(2)]
    assert (await scrape(async_client))["collab_rooms_live"] == 0
    lives = [await live_rooms.acquire(room.id) for room in rooms]
    assert (await scrape(async_client))["collab_rooms_live"] == 2
    live_rooms.release(lives[0])
    assert (await scrape(async_client))["collab_rooms_live"] == 1
    live_rooms.release(lives[1])
    assert (await scrape(async_client))["collab_rooms_live"] == 0


async def test_metrics_carry_no_room_ids(async_client):
    room = await database_sync_to_async(document.room_create)(code="secret = 1\n")
    live = await live_rooms.acquire(room.id)
    try:
        body = (await async_client.get("/metrics")).content.decode()
    finally:
        live_rooms.release(live)
    assert room.id not in body and "secret" not in body


async def test_a_session_moves_connections_changes_latencies_and_rate_limited(settings):
    from tests.rooms.wsclient import Client

    settings.COLLAB_RATE_BURST = 2  # the third message of a burst is refused
    settings.COLLAB_RATE_PER_S = 0.001
    room = await database_sync_to_async(document.room_create)(code="")
    names = [
        "collab_connections",
        "collab_changes_total",
        "collab_ack_latency_seconds_count",
        "collab_fanout_latency_seconds_count",
        "collab_rate_limited_total",
    ]
    before = {name: value(name) for name in names}

    writer = Client(f"/ws/{room.id}?mode=ops")
    reader = Client(f"/ws/{room.id}?mode=ops")
    await writer.connect()
    await reader.connect()
    assert value("collab_connections") == before["collab_connections"] + 2

    await writer.send({"type": "op", "version": 0, "seq": 1, "op": ["a"]})
    assert (await writer.receive_type("ack"))["version"] == 1
    assert (await reader.receive_type("op"))["version"] == 1
    await writer.send({"type": "ping"})
    await writer.receive_type("pong")
    await writer.send({"type": "ping"})
    assert (await writer.receive_type("error"))["code"] == "rate_limited"

    assert value("collab_changes_total") == before["collab_changes_total"] + 1
    assert (
        value("collab_ack_latency_seconds_count") == before["collab_ack_latency_seconds_count"] + 1
    )
    assert value("collab_fanout_latency_seconds_count") >= (
        before["collab_fanout_latency_seconds_count"] + 1
    )
    assert value("collab_rate_limited_total") == before["collab_rate_limited_total"] + 1

    await writer.close()
    await reader.close()
    assert value("collab_connections") == before["collab_connections"]
