"""Whether this process can do its work: the checks behind `GET /healthz` (docs/deploying.md).

Each check exercises the real dependency: a query on the database, and a message sent through
the channel layer and received back. Each answers None when healthy, else a short reason, within
CHECK_TIMEOUT_S. The reason names only the kind of failure (the endpoint is public); the details
go to the log.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

logger = logging.getLogger(__name__)

# A check slower than this fails. Probes need a timeout above it (Kubernetes' default is 1 s).
CHECK_TIMEOUT_S = 2.0


async def health_check() -> dict[str, str | None]:
    """Every check, run together: name -> None (healthy) or the reason it failed."""
    names = ("database", "channel_layer")
    results = await asyncio.gather(database_check(), channel_layer_check())
    return dict(zip(names, results, strict=True))


async def database_check() -> str | None:
    return await _bounded("database", _select_one_async())


async def channel_layer_check() -> str | None:
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer configured"
    return await _bounded("channel_layer", _round_trip(layer))


async def _bounded(name: str, check: Coroutine[Any, Any, None]) -> str | None:
    task = asyncio.ensure_future(check)
    try:
        await asyncio.wait({task}, timeout=CHECK_TIMEOUT_S)
    finally:
        timed_out = not task.done()
        if timed_out:
            # Cancelled but not awaited (so not asyncio.wait_for): a cancelled database call
            # still waits for its thread (asgiref), and the answer must not wait with it.
            task.cancel()
            _abandoned.add(task)
            task.add_done_callback(_forget)
    if timed_out:
        logger.warning("health check %s: no answer within %g s", name, CHECK_TIMEOUT_S)
        return f"timed out after {CHECK_TIMEOUT_S:g} s"
    if (error := task.exception()) is not None:
        logger.warning("health check %s failed", name, exc_info=error)
        return f"error: {type(error).__name__}"
    return None


# Checks that ran out of time, kept until they end (the loop holds tasks only weakly).
_abandoned: set[asyncio.Task] = set()


def _forget(task: asyncio.Task) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a late failure was already reported as a timeout


# The database check's own thread (and so its own connection). Not the request's thread: its
# middleware runs there after the view and would wait out a hung query; not the thread the
# commits use either, so that a hung check never holds them up.
database_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-database")


def _select_one() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


# Like every database call of the app, it drops a connection that failed before reusing it.
_select_one_async = database_sync_to_async(
    _select_one, thread_sensitive=False, executor=database_thread
)


@dataclass(slots=True)
class _Probe:
    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    channel: str | None = None


# One probe channel per channel layer, reused by every check: channel layers have no call that
# deletes a channel, and Redis pub/sub would keep each new one subscribed for good.
_probes: weakref.WeakKeyDictionary[Any, _Probe] = weakref.WeakKeyDictionary()


async def _round_trip(layer: Any) -> None:
    """Send a message to the probe channel and receive it back."""
    loop = asyncio.get_running_loop()
    probe = _probes.get(layer)
    if probe is None or probe.loop is not loop:
        probe = _probes[layer] = _Probe(loop)
    async with probe.lock:  # one receiver per channel: checks take turns
        try:
            if probe.channel is None:
                probe.channel = await layer.new_channel()
            token = secrets.token_hex(8)
            await layer.send(probe.channel, {"type": "health.probe", "token": token})
            if (await layer.receive(probe.channel)).get("token") != token:
                raise RuntimeError("the channel layer delivered another message")
        except BaseException:
            # A cancelled receive unsubscribes the channel (channels_redis): start afresh.
            probe.channel = None
            raise
