"""Committing a batch of changes on the event loop itself, for the SQLite default.

With SQLite, a batch of keystrokes commits in a few tens of microseconds of local file writes
(WAL, synchronous=NORMAL: durable once `COMMIT` returns, even if the process is killed). Handing
it to the database thread cost more than the write: two thread wake-ups, the GIL changing hands
twice, and the thread's scheduling delay between an edit and its broadcast
(docs/benchmarks.md, "Profile"). So `rooms.store` first offers each batch to `write_batch`,
which writes it here, on the loop's thread, through a connection of its own.

That connection never waits for a lock (timeout 0). If another connection holds the write lock
(another process, a migration, a long admin save), or the batch breaks a constraint, the
transaction is rolled back and `write_batch` returns False: the caller then hands the batch to
the database thread, which waits for the lock and sorts out each change's outcome. The loop
itself never blocks on another writer. PostgreSQL has its own loop path, on an asyncio
connection (rooms/pg_writes.py).

Checkpoints (copying the WAL back into the database file, with an fsync) are the one slow part
of a SQLite commit: SQLite's automatic one runs inside the commit that crosses 1,000 pages, so
on the loop, and took 15-120 ms here with a 70 MB database. Our connection turns them off and
has the database thread checkpoint once about `CHECKPOINT_WAL_BYTES` were written, in two
passes:
1. the bulk, beside new commits (a checkpoint does not block writers);
2. what was committed during the first pass (a few milliseconds' worth), while batches wait:
   SQLite restarts the WAL from its beginning only after a checkpoint that nothing was written
   beside, and without that the WAL would grow for as long as edits keep coming.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Sequence

from asgiref.sync import SyncToAsync
from django.db import DEFAULT_DB_ALIAS, connection, connections

# SQLite's own automatic checkpoint threshold (1,000 pages of 4 KiB): the WAL stays about as
# small as it would without us.
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
# A checkpoint waits at most this long for a lock (it runs on the database thread, not the loop).
CHECKPOINT_TIMEOUT_S = 5.0
# What a written row costs in the WAL beyond its text. Measured: about 3 pages of 4 KiB per
# change (the op table, its three indexes and AUTOINCREMENT's counter, the room row), some of
# them shared within a batch.
ROW_WAL_BYTES = 3 * 4096

# One connection per thread that writes (in practice: the event loop's thread). sqlite3
# connections must not be shared across threads without a lock, and this keeps it that way.
_local = threading.local()


@functools.cache
def enabled() -> bool:
    """Whether batches may be written on the loop (the database is SQLite)."""
    return connection.vendor == "sqlite"


def write_batch(
    *,
    inserts: Sequence[tuple[str, Sequence[tuple]]],
    guarded_updates: Sequence[tuple[str, Sequence[tuple]]],
) -> bool:
    """Run `inserts` (statements and their rows) and `guarded_updates` (statements whose every
    row must update exactly one row) in one transaction. Returns True once committed; False
    if nothing was written (locked, a conflict or any database error), and then the caller must
    write the batch another way."""
    database = _connection()
    if checkpoint_in_progress():
        return False  # no writes beside the checkpoint (see the module docstring)
    try:
        database.execute("BEGIN IMMEDIATE")
    except sqlite3.Error:
        return False  # another connection is writing: the database thread will wait for it
    try:
        for statement, rows in inserts:
            if rows:
                database.executemany(statement, rows)
        for statement, rows in guarded_updates:
            if rows and database.executemany(statement, rows).rowcount != len(rows):
                raise _Conflict
        database.execute("COMMIT")
    except (sqlite3.Error, _Conflict):
        if database.in_transaction:
            database.execute("ROLLBACK")
        return False
    _local.wal_bytes += sum(
        ROW_WAL_BYTES + sum(len(value) for value in row if isinstance(value, str))
        for _, rows in (*inserts, *guarded_updates)
        for row in rows
    )
    _checkpoint_if_due()
    return True


class _Conflict(Exception):
    """A room row was not at the expected version: another process committed first."""


def _connection() -> sqlite3.Connection:
    database = getattr(_local, "connection", None)
    name = connections.settings[DEFAULT_DB_ALIAS]["NAME"]  # no wrapper: see store._value_adapter
    if database is not None and _local.name == name:
        return database
    if database is not None:
        database.close()  # the database was switched (tests): follow it
    # Django's own parameters (same file, URI names for in-memory test databases, the same
    # pragmas), but no waiting for locks: a busy database is the database thread's job.
    params = connection.get_connection_params()
    params.pop("detect_types", None)
    pragmas = ["PRAGMA foreign_keys = ON", *filter(str.strip, connection.init_commands)]
    database = _open(params, pragmas, timeout=0)
    database.execute("PRAGMA wal_autocheckpoint = 0")
    _local.connection, _local.name, _local.opening = database, name, (params, pragmas)
    (journal_mode,) = database.execute("PRAGMA journal_mode").fetchone()
    _local.wal = journal_mode == "wal"  # in-memory test databases have no WAL
    _local.wal_bytes = 0
    _local.checkpointing = None  # the task running both passes
    _local.checkpoint = None  # the second pass: batches wait while it runs
    return database


def _open(params: dict, pragmas: list[str], *, timeout: float) -> sqlite3.Connection:
    # isolation_level None: no implicit transactions, BEGIN and COMMIT are ours.
    database = sqlite3.connect(**{**params, "timeout": timeout, "isolation_level": None})
    for pragma in pragmas:
        database.execute(pragma)
    return database


def checkpoint_in_progress() -> asyncio.Future | None:
    """The running checkpoint of this thread's connection, if any (while it runs,
    `write_batch` declines)."""
    checkpoint = getattr(_local, "checkpoint", None)
    if checkpoint is None or checkpoint.done():
        return None
    if checkpoint.get_loop() is not asyncio.get_running_loop():
        return None  # started by a loop that is gone (tests): it can never be marked done
    return checkpoint


def _checkpoint_if_due() -> None:
    if not _local.wal or _local.wal_bytes < CHECKPOINT_WAL_BYTES:
        return
    running = _local.checkpointing
    if running is not None and not running.done():
        return
    _local.wal_bytes = 0
    _local.checkpointing = asyncio.get_running_loop().create_task(
        _checkpoint(*_local.opening), name="sqlite-checkpoint"
    )


async def _checkpoint(params: dict, pragmas: list[str]) -> None:
    loop = asyncio.get_running_loop()
    thread = SyncToAsync.single_thread_executor
    await loop.run_in_executor(thread, _checkpoint_in_thread, params, pragmas)
    _local.checkpoint = loop.run_in_executor(thread, _checkpoint_in_thread, params, pragmas)
    await _local.checkpoint


def _checkpoint_in_thread(params: dict, pragmas: list[str]) -> None:
    # PASSIVE: never wait for a reader or a writer; copies every page no reader still needs.
    database = _open(params, pragmas, timeout=CHECKPOINT_TIMEOUT_S)
    try:
        database.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        database.close()
