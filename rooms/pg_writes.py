"""Committing changes to PostgreSQL on the event loop, fairly and without deadlocks.

With PostgreSQL a commit is a network round trip. Waiting for it on the database thread cost a
thread hop per batch on top (two thread wake-ups, the GIL changing hands twice), and queued the
commits behind every other database call of the process. So `rooms.store` hands each batch of
changes to `write_batch`, which writes it through an asyncio psycopg connection of the event
loop's own: the loop does other work while PostgreSQL writes.

Between processes the database stays the arbiter, and three rules keep it fair and free of
deadlocks:

1. Rows are taken in one fixed order, (room, version): each change is one statement that
   locks and advances its room (a guarded UPDATE) and writes its op, snapshot and author rows
   only if that matched, and a batch's statements go in that order. A batch never waits for a
   room row another transaction holds (SKIP LOCKED): that change is told it lost the race,
   like a change whose room is no longer at the version it was built on, alone, and the rest
   of its batch still commits. Batches therefore never wait for each other, let alone in a
   circle, and one contended room never holds up a batch of others.
2. What PostgreSQL asks to retry (deadlock_detected 40P01, serialization_failure 40001: a
   deadlock with some other writer, e.g. an admin's save) is retried RETRY_ATTEMPTS times with
   bounded, jittered backoff: nothing of the transaction landed, so the retry is safe, and its
   clients see a slower ack instead of a closed connection.
3. A change that lost the version race takes the room's turn (`room_turn`): a transaction that
   locks the room row, reads what was committed meanwhile and commits the change under that
   lock. Every other writer of the room then waits for it, so a process that loses once wins the
   next time: no process starves behind a busier one (rooms/document.py keeps taking turns for
   a room while others keep committing to it). Every lock wait is bounded (LOCK_TIMEOUT_MS).

`rooms.store` owns the SQL (one place knows it); this module knows the driver and the order.
The connections are this loop's: tests run each case on a fresh loop, and a connection
belonging to a loop that is gone is dropped, not reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import connection

from rooms import metrics

logger = logging.getLogger(__name__)

# Transient failures PostgreSQL asks the client to retry (its docs, "Serialization Failure
# Handling"): the transaction was rolled back whole.
RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# A deadlock costs deadlock_timeout (1 s by default) before PostgreSQL breaks it; a handful of
# retries covers a burst of them, and then the error goes to the clients (who resume).
RETRY_ATTEMPTS = 5
# First backoff, doubled at each attempt and jittered (so two retrying processes spread out).
RETRY_BASE_S = 0.005
RETRY_CAP_S = 0.2
# No lock wait of ours lasts longer: a turn is a few milliseconds; past this, something holds
# the room row for far longer than any commit should, and the clients are better told.
LOCK_TIMEOUT_MS = 10_000
# A spare connection unused for this long is checked before its next turn.
IDLE_CHECK_S = 1.0
# Spare connections kept for turns (beside the batches' own). Turns are rare (a lost race) and
# short; more at once connect and then close.
SPARE_CONNECTIONS_KEPT = 2

# What a change's commit came to, for `rooms.store` to raise as its own exceptions.
LANDED = None
CONFLICT = "conflict"  # the room is not at the version the change was built on
DUPLICATE = "duplicate"  # its (client, seq) was committed before

# Constraint names of rooms.models.Op: which race a unique violation lost.
_CONSTRAINT_OUTCOMES = {"op_unique_client_seq": DUPLICATE, "op_unique_room_version": CONFLICT}


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL (from rooms.store) with psycopg's placeholders."""

    # One change in one statement: the guarded UPDATE that advances (and locks) its room, and
    # the op, snapshot and author rows written only when it did; returns a row when it landed.
    commit_change: str
    lock_room: str  # the room's version, its row locked until the transaction ends
    ops_after: str  # a room's op rows after a version, in order


@dataclass(slots=True)
class ChangeRows:
    """One change: its room and version (the order of the writes) and commit_change's
    parameters."""

    room_id: str
    version: int
    params: dict[str, Any]


@functools.cache
def enabled() -> bool:
    """Whether batches are written here (the database is PostgreSQL)."""
    return connection.vendor == "postgresql"


async def write_batch(statements: Statements, batch: Sequence[ChangeRows]) -> list[str | None]:
    """Commit the changes of `batch` in one transaction (in (room, version) order), retrying
    what PostgreSQL asks to retry. Returns each change's outcome (LANDED, CONFLICT or
    DUPLICATE), in `batch`'s order, once the transaction is durable; raises when the database
    failed (then none of them landed)."""
    order = sorted(range(len(batch)), key=lambda i: (batch[i].room_id, batch[i].version))
    ordered = [batch[i] for i in order]
    database = await _batch_connection()
    try:
        outcomes = await _retrying(lambda: _write_ordered(database, statements, ordered))
    except _NotBegun:
        # The connection was lost (PostgreSQL restarted) before anything was sent: nothing
        # can have landed, so the batch goes again on a new connection, once.
        _here().batches = None
        database = await _batch_connection()
        try:
            outcomes = await _retrying(lambda: _write_ordered(database, statements, ordered))
        except _NotBegun as again:
            raise again.__cause__ from None
    by_position: list[str | None] = [LANDED] * len(batch)
    for index, outcome in zip(order, outcomes, strict=True):
        by_position[index] = outcome
    return by_position


async def _write_ordered(
    database: psycopg.AsyncConnection, statements: Statements, rows: list[ChangeRows]
) -> list[str | None]:
    try:
        return await _write_transaction(database, statements, rows)
    except psycopg.errors.UniqueViolation as error:
        if len(rows) == 1:
            return [_outcome_of(error)]
    # One change lost a race the version guard cannot see (a (client, seq) committed by another
    # process): nothing of the batch landed; commit them one by one so the others still do.
    outcomes = []
    for row in rows:
        try:
            outcomes += await _write_transaction(database, statements, [row])
        except psycopg.errors.UniqueViolation as error:
            outcomes.append(_outcome_of(error))
    return outcomes


class _NotBegun(Exception):
    """The connection failed before the transaction began: nothing of it was sent."""


async def _write_transaction(
    database: psycopg.AsyncConnection, statements: Statements, rows: list[ChangeRows]
) -> list[str | None]:
    try:
        await database.execute("BEGIN")
    except psycopg.OperationalError as error:
        raise _NotBegun from error
    try:
        if len(rows) == 1:
            # Most batches when the load is spread over rooms: psycopg's pipeline mode cost
            # more CPU (here and in PostgreSQL) than the round trip it saves for one statement.
            cursor = await database.execute(statements.commit_change, rows[0].params)
            outcomes = [LANDED if await cursor.fetchone() is not None else CONFLICT]
        else:
            async with database.pipeline():  # the changes in one round trip
                outcomes = await _write(database, statements, rows)
        await database.execute("COMMIT")
    except BaseException:
        if not database.broken:
            with contextlib.suppress(psycopg.Error):
                await database.execute("ROLLBACK")
        raise
    return outcomes


def _outcome_of(error: psycopg.errors.UniqueViolation) -> str:
    outcome = _CONSTRAINT_OUTCOMES.get(error.diag.constraint_name or "")
    if outcome is None:
        raise error
    return outcome


async def _write(
    database: psycopg.AsyncConnection, statements: Statements, rows: list[ChangeRows]
) -> list[str | None]:
    """Commit each change (advancing, so locking, its room in the order given), inside the
    caller's transaction; each one's outcome."""
    async with database.cursor() as cursor:
        await cursor.executemany(statements.commit_change, [r.params for r in rows], returning=True)
        landed = []
        while True:
            landed.append(await cursor.fetchone() is not None)
            if not cursor.nextset():
                break
    return [LANDED if ok else CONFLICT for ok in landed]


async def _retrying(attempt: Any) -> Any:
    """`await attempt()`, again after a jittered, growing pause when PostgreSQL rolled it back
    as a deadlock or serialization failure (at most RETRY_ATTEMPTS times in all)."""
    for number in range(RETRY_ATTEMPTS):
        try:
            return await attempt()
        except RETRYABLE as error:
            if number == RETRY_ATTEMPTS - 1:
                raise
            metrics.commit_retried()
            pause = min(RETRY_CAP_S, RETRY_BASE_S * 2**number) * (0.5 + random.random())
            logger.warning(
                "commit rolled back by PostgreSQL (%s); retrying in %.0f ms",
                error.sqlstate,
                pause * 1000,
            )
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


# -- a room's turn -----------------------------------------------------------------------------


class Turn:
    """A transaction holding one room's row: nobody else commits to the room until it ends."""

    def __init__(
        self, database: psycopg.AsyncConnection, statements: Statements, room_id: str
    ) -> None:
        self.database = database
        self.statements = statements
        self.room_id = room_id
        self.locked = False

    async def _lock(self) -> None:
        # Queued, not awaited: it goes out with the turn's next statement, in one round trip.
        if not self.locked:
            await self.database.execute(self.statements.lock_room, (self.room_id,))
            self.locked = True

    async def rows_after(self, version: int) -> list[tuple]:
        """The room's op rows after `version` (Statements.ops_after's columns): read after the
        lock is granted, so they include every change committed before the turn."""
        await self._lock()
        cursor = await self.database.execute(self.statements.ops_after, (self.room_id, version))
        return await cursor.fetchall()

    async def write(self, rows: ChangeRows) -> str | None:
        """Write one change of this room (committed when the turn ends); its outcome."""
        await self._lock()
        try:
            async with self.database.transaction():  # a savepoint: a refusal keeps the turn
                (outcome,) = await _write(self.database, self.statements, [rows])
        except psycopg.errors.UniqueViolation as error:
            return _outcome_of(error)
        return outcome


@contextlib.asynccontextmanager
async def room_turn(statements: Statements, room_id: str) -> AsyncIterator[Turn]:
    """Lock the room's row (waiting, bounded, for whoever holds it) for the duration of the
    block, and commit what was written in it when the block ends."""
    database = await _spare_connection()
    try:
        # Pipelined: BEGIN, the lock and the first read go in one round trip; the write in a
        # second, COMMIT in a third.
        async with database.pipeline(), database.transaction():
            yield Turn(database, statements, room_id)
    finally:
        await _spare_return(database)


# -- connections -------------------------------------------------------------------------------


class _LoopConnections:
    """This event loop's connections: one for batches (one batch is written at a time), and
    spares for turns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.batches: psycopg.AsyncConnection | None = None
        self.spares: list[tuple[psycopg.AsyncConnection, float]] = []  # with when last used


_connections: _LoopConnections | None = None


def _here() -> _LoopConnections:
    global _connections
    loop = asyncio.get_running_loop()
    if _connections is None or _connections.loop is not loop:
        _connections = _LoopConnections(loop)  # the old loop's are gone with it (tests)
    return _connections


async def _batch_connection() -> psycopg.AsyncConnection:
    # Not checked when idle, unlike spares: a batch that finds it lost goes again (_NotBegun).
    here = _here()
    if here.batches is None or here.batches.closed or here.batches.broken:
        here.batches = await _connect()
    return here.batches


async def _spare_connection() -> psycopg.AsyncConnection:
    here = _here()
    while here.spares:
        database, used_at = here.spares.pop()
        if await _usable(database, used_at):
            return database
    return await _connect()


async def _usable(database: psycopg.AsyncConnection, used_at: float) -> bool:
    """Whether `database` can take a turn. One that sat idle is asked first (a round trip):
    PostgreSQL may have restarted meanwhile, and a turn must not be what finds out (as
    Django's CONN_HEALTH_CHECKS does for its own connections)."""
    if database.closed or database.broken:
        return False
    if time.monotonic() - used_at < IDLE_CHECK_S:
        return True
    try:
        await database.execute("SELECT 1")
        return True
    except psycopg.Error:
        with contextlib.suppress(Exception):
            await database.close()
        return False


async def _spare_return(database: psycopg.AsyncConnection) -> None:
    here = _here()
    # A turn cancelled mid-way may leave its connection in a transaction: never reuse that.
    idle = database.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if idle and not database.broken and len(here.spares) < SPARE_CONNECTIONS_KEPT:
        here.spares.append((database, time.monotonic()))
        return
    with contextlib.suppress(Exception):
        await database.close()


async def _connect() -> psycopg.AsyncConnection:
    """A connection to Django's database, as Django would open it (same parameters and
    adapters), in autocommit: every transaction here is an explicit one."""
    params = _connection_params()
    database = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    await database.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    return database


@functools.cache
def _connection_params() -> dict[str, Any]:
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)  # Django's is a synchronous cursor
    # Django turns psycopg's prepared statements off unless OPTIONS say otherwise (for
    # PgBouncer's transaction pooling). These connections run the same three statements all
    # day, and preparing them took a third off PostgreSQL's CPU per commit here
    # (docs/benchmarks.md, "Lean PostgreSQL path"): psycopg's default applies, unless
    # OPTIONS set prepare_threshold (None: never prepare).
    if "prepare_threshold" not in connection.settings_dict.get("OPTIONS", {}):
        params.pop("prepare_threshold", None)
    return params
