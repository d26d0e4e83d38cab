"""This process's metrics, served in Prometheus' text format by `GET /metrics`.

The metrics live in a registry of their own, not prometheus_client's global one: /metrics then
shows exactly what is defined here, and nothing else that registers metrics in the process (a
library, a test) can collide with them. Every process counts for itself; under
`manage.py serve --workers N` each worker has its own numbers (docs/deploying.md).

The hot paths (rooms/consumers.py, rooms/document.py, rooms/live.py) report through the small
functions at the bottom. They run for every keystroke, so each is one call on a metric object
bound at import: no labels, no lookups. This module imports nothing of the rooms app: the live
room count is handed to it by its owner.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

registry = CollectorRegistry()
# Memory, CPU and open file descriptors: every WebSocket is one descriptor.
ProcessCollector(registry=registry)

# An ack or a fan-out takes well under a millisecond on an idle server and tens of milliseconds
# under load (docs/benchmarks.md); past a second something is wrong, and +Inf catches the rest.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


CONNECTIONS = Gauge(
    "collab_connections",
    "Open WebSocket connections of this process that joined a room.",
    registry=registry,
)
ROOMS_LIVE = Gauge(
    "collab_rooms_live",
    "Rooms live in this process's memory (rooms with a connection here).",
    registry=registry,
)
CHANGES = Counter(
    "collab_changes",
    "Changes committed by this process (rate() gives changes per second).",
    registry=registry,
)
ACK_LATENCY = Histogram(
    "collab_ack_latency_seconds",
    "From a change's frame arriving to its ack being sent.",
    buckets=LATENCY_BUCKETS_S,
    registry=registry,
)
FANOUT_LATENCY = Histogram(
    "collab_fanout_latency_seconds",
    "From a change's commit to its delivery to the room's connections in this process.",
    buckets=LATENCY_BUCKETS_S,
    registry=registry,
)
RECENT_CHANGES_BYTES = Gauge(
    "collab_recent_changes_bytes",
    "Memory the live rooms' recent changes take, about (COLLAB_RECENT_CHANGES_BYTES per room).",
    registry=registry,
)
CONNECTIONS_BEHIND = Counter(
    "collab_connections_behind",
    "Connections closed with 4413: they fell further behind than the budgets allow.",
    registry=registry,
)
QUOTA_REFUSED = Counter(
    "collab_quota_refused",
    "Edits refused with too_large because a room reached its history or text quota.",
    registry=registry,
)
VERSION_CONFLICTS = Counter(
    "collab_version_conflicts",
    "Commits that lost the version race to another process (then retried in the room's turn).",
    registry=registry,
)
COMMIT_RETRIES = Counter(
    "collab_commit_retries",
    "Transactions PostgreSQL rolled back as a deadlock or serialization failure, retried.",
    registry=registry,
)
RATE_LIMITED = Counter(
    "collab_rate_limited",
    "WebSocket messages refused with rate_limited.",
    registry=registry,
)


def render() -> tuple[bytes, str]:
    """The exposition body of every metric above, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- hooks for the hot paths ----------------------------------------------------------------


def connection_opened() -> None:
    CONNECTIONS.inc()


def connection_closed() -> None:
    CONNECTIONS.dec()


def change_committed(count: int = 1) -> None:
    CHANGES.inc(count)


def ack_sent(seconds: float) -> None:
    ACK_LATENCY.observe(seconds)


def fanout_done(seconds: float) -> None:
    FANOUT_LATENCY.observe(seconds)


def version_conflicted() -> None:
    VERSION_CONFLICTS.inc()


def commit_retried() -> None:
    COMMIT_RETRIES.inc()


def rate_limited() -> None:
    RATE_LIMITED.inc()


def connection_behind() -> None:
    CONNECTIONS_BEHIND.inc()


def quota_refused() -> None:
    QUOTA_REFUSED.inc()


def recent_changes_measured_by(measure: Callable[[], int]) -> None:
    """Have `collab_recent_changes_bytes` read its owner's measure (rooms/live.py) per scrape."""
    RECENT_CHANGES_BYTES.set_function(measure)


def rooms_live_counted_by(count: Callable[[], int]) -> None:
    """Have `collab_rooms_live` read the count from its owner (rooms/live.py) at each scrape:
    the owner reports to this module, so this module must not import it."""
    ROOMS_LIVE.set_function(count)
