"""The on-loop SQLite commit (rooms/sqlite_writes.py): it never waits for a lock, writes a batch
whole or not at all, and keeps the WAL bounded, on a real database file."""

import asyncio
import sqlite3

import pytest
from django.db import connection

from rooms import sqlite_writes

INSERT_OP = "INSERT INTO op (room, version) VALUES (?, ?)"
ADVANCE_ROOM = "UPDATE room SET code = ?, version = ? WHERE id = ? AND version = ?"


@pytest.fixture
def database_file(tmp_path, monkeypatch):
    """Point the default database at a fresh WAL-mode file holding a toy room and op table."""
    path = tmp_path / "db.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE room (id TEXT PRIMARY KEY, code TEXT, version INTEGER)")
    setup.execute("CREATE TABLE op (room TEXT, version INTEGER, UNIQUE (room, version))")
    setup.execute("INSERT INTO room VALUES ('r', '', 0)")
    setup.close()
    monkeypatch.setitem(connection.settings_dict, "NAME", str(path))
    return path


def write_change(version: int, code: str = "x") -> bool:
    return sqlite_writes.write_batch(
        inserts=[(INSERT_OP, [("r", version)])],
        guarded_updates=[(ADVANCE_ROOM, [(code, version, "r", version - 1)])],
    )


def committed(path) -> tuple[int, int]:
    reader = sqlite3.connect(path)
    try:
        (ops,) = reader.execute("SELECT count(*) FROM op").fetchone()
        (version,) = reader.execute("SELECT version FROM room").fetchone()
        return ops, version
    finally:
        reader.close()


async def test_a_locked_database_declines_at_once_and_writes_nothing(database_file):
    other_process = sqlite3.connect(database_file, isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        assert write_change(1) is False
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
    assert committed(database_file) == (0, 0)
    assert write_change(1) is True
    assert committed(database_file) == (1, 1)


async def test_a_stale_room_version_rolls_back_the_whole_batch(database_file):
    assert write_change(1) is True
    declined = sqlite_writes.write_batch(
        inserts=[(INSERT_OP, [("r", 2), ("r", 3)])],
        # built on version 0, but the room is at 1 already
        guarded_updates=[(ADVANCE_ROOM, [("y", 3, "r", 0)])],
    )
    assert declined is False
    assert committed(database_file) == (1, 1)


async def test_a_constraint_violation_rolls_back_and_the_next_batch_still_lands(database_file):
    assert write_change(1) is True
    assert write_change(1) is False  # version 1 again: unique (room, version)
    assert write_change(2) is True
    assert committed(database_file) == (2, 2)


async def test_the_wal_stays_bounded_under_sustained_writes(database_file):
    code = "x" * 20_000
    written = 0
    version = 0
    while written < 10 * sqlite_writes.CHECKPOINT_WAL_BYTES:
        await asyncio.sleep(0)  # the loop runs between batches, as in a server
        if not write_change(version + 1, code + str(version)):
            checkpoint = sqlite_writes.checkpoint_in_progress()
            assert checkpoint is not None, "declined without a lock, a conflict or a checkpoint"
            await checkpoint
            continue
        version += 1
        written += len(code) + sqlite_writes.ROW_WAL_BYTES
    checkpoint = sqlite_writes.checkpoint_in_progress()
    if checkpoint is not None:
        await checkpoint
    assert committed(database_file) == (version, version)
    wal_bytes = (database_file.parent / "db.sqlite3-wal").stat().st_size
    # Without checkpoints the WAL holds everything written (10x the threshold and more).
    assert wal_bytes < 3 * sqlite_writes.CHECKPOINT_WAL_BYTES
