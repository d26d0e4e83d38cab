"""The database side of a room: committing changes, and reading the op log and room rows.

A commit writes the change's `Op` row and advances the room's version in one transaction; when
the caller asks for a copy of the text, the same transaction also writes it into Room.code and
keeps it, with its authorship, as a `Snapshot` row, and when it names the change's author, it
records that name (`Author`). The changes that arrive
together, from every room, are committed in one transaction (`GroupCommitter`), as plain SQL
for the database in use, written on the event loop itself: through SQLite's own module
(rooms/sqlite_writes.py; when it declines, on the database thread) or an asyncio psycopg
connection (rooms/pg_writes.py, which also keeps PostgreSQL's commits in (room, version) order
and retries what the database asks to retry). The room's version is the arbiter between
processes: a commit built on a stale head fails with `VersionConflict`, a (client, seq)
committed before with `DuplicateSeq`; the loser then takes the room's turn (`room_turn`).

Client bindings (rooms/identity.py) are claimed with one INSERT that does nothing when the
row exists, so that of two first connections with one client id exactly one gets it.

Every read here is one short query on the database thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    close_old_connections,
    connection,
    connections,
    transaction,
)
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from rooms import ot, pg_writes, sqlite_writes
from rooms.changes import Change, copy_bytes, stored_bytes
from rooms.history import past
from rooms.history.authorship import Authorship
from rooms.history.past import past_at
from rooms.models import Author, ClientBinding, Op, Room, Snapshot


class VersionConflict(Exception):
    """Another process committed this version first."""


class DuplicateSeq(Exception):
    """This (client, seq) was committed before, possibly by another process."""


# -- commits ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TextCopy:
    """The whole text right after a change, and its authorship (Authorship.to_json())."""

    text: str
    authorship: str


@dataclass(slots=True)
class PendingCommit:
    room_id: str
    expected_version: int  # the room's version this change was built on
    copy: TextCopy | None  # when the text is copied with this change
    author_name: str | None  # when the change's client is (again) named with it
    change: Change
    done: asyncio.Future


class GroupCommitter:
    """Commits the changes that arrive together, from every room, in one transaction.

    While one transaction is being written, new changes queue; the next transaction takes them
    all. Under load that turns N transactions and N trips to the database thread into one; a
    lone change is written at once, so nothing waits when idle. Each change still succeeds or
    fails on its own, and its future resolves only once its transaction is committed: an ack
    still means durable.
    """

    def __init__(self) -> None:
        self.queue: list[PendingCommit] = []
        self.writer: asyncio.Task | None = None

    async def commit(
        self,
        room_id: str,
        expected_version: int,
        copy: TextCopy | None,
        author_name: str | None,
        change: Change,
    ) -> None:
        loop = asyncio.get_running_loop()
        pending = PendingCommit(
            room_id, expected_version, copy, author_name, change, loop.create_future()
        )
        self.queue.append(pending)
        if self.writer is None or self.writer.done() or self.writer.get_loop() is not loop:
            self.writer = loop.create_task(self._write(), name="group-commit")
        await pending.done

    async def _write(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            try:
                outcomes = await _commit_batch(batch)
            except Exception as error:  # the transaction itself failed: nothing of it landed
                outcomes = [error] * len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.done.done():
                    continue  # its submitter went away; the outcome stands regardless
                if outcome is None:
                    pending.done.set_result(None)
                else:
                    pending.done.set_exception(outcome)


committer = GroupCommitter()


async def change_commit(
    change: Change,
    *,
    room_id: str,
    expected_version: int,
    copy: TextCopy | None,
    author_name: str | None = None,
) -> None:
    """Commit `change`, built on `expected_version` of the room, with a copy of the text (in
    Room.code and as a Snapshot) when `copy` is given, and `author_name` as the name of the
    change's client in this room when given. Returns once it is durable; raises
    VersionConflict or DuplicateSeq when another commit got there first."""
    await committer.commit(room_id, expected_version, copy, author_name, change)


async def _commit_batch(batch: list[PendingCommit]) -> list[Exception | None]:
    if pg_writes.enabled():
        outcomes = await pg_writes.write_batch(
            _pg_statements(),
            [
                _pg_change_rows(p.room_id, p.expected_version, p.copy, p.author_name, p.change)
                for p in batch
            ],
        )
        return [_outcome_error(outcome) for outcome in outcomes]
    if sqlite_writes.enabled():
        insert_op, insert_snapshot, upsert_author, *advance_room = _write_statements("?")
        op_rows, snapshot_rows, author_rows, *room_rows = _batch_rows(batch)
        if sqlite_writes.write_batch(
            inserts=[
                (insert_op, op_rows),
                (insert_snapshot, snapshot_rows),
                (upsert_author, author_rows),
            ],
            guarded_updates=list(zip(advance_room, room_rows, strict=True)),
        ):
            return [None] * len(batch)
    # The same database thread as every database_sync_to_async call of a consumer (asgiref's
    # single-thread executor), without asgiref's per-call machinery (context copies, thread
    # handover bookkeeping): measured at 2-6 times the cost of the hop itself, per commit.
    return await asyncio.get_running_loop().run_in_executor(
        SyncToAsync.single_thread_executor, _commit_batch_in_thread, batch
    )


def _commit_batch_in_thread(batch: list[PendingCommit]) -> list[Exception | None]:
    close_old_connections()  # as database_sync_to_async does: drop a connection that broke
    if len(batch) > 1:
        try:
            with transaction.atomic():
                _write(batch)
            return [None] * len(batch)
        except (IntegrityError, VersionConflict):
            pass  # one of them lost a race: commit them one by one so the others still land
    return [_commit_one(pending) for pending in batch]


def _commit_one(pending: PendingCommit) -> Exception | None:
    change = pending.change
    try:
        with transaction.atomic():
            _write([pending])
        return None
    except VersionConflict as conflict:
        return conflict
    except IntegrityError as error:
        ops = Op.objects.filter(room_id=pending.room_id)
        if change.seq is not None and ops.filter(client=change.client, seq=change.seq).exists():
            return DuplicateSeq()
        if ops.filter(version=change.version).exists():
            return VersionConflict()
        return error


def _write(batch: list[PendingCommit]) -> None:
    """Insert the op and snapshot rows and advance each room, inside the caller's transaction.

    Plain SQL rather than the ORM: this runs for every keystroke, and the ORM's per-statement
    overhead was a third of the server's time under load (docs/benchmarks.md). Values still go
    through the model fields, so each database gets its own encoding (JSON, timestamps).
    """
    insert_op, insert_snapshot, upsert_author, *advance_room = _write_statements("%s")
    op_rows, snapshot_rows, author_rows, *room_rows = _batch_rows(batch)
    with connection.cursor() as cursor:
        cursor.executemany(insert_op, op_rows)
        if snapshot_rows:
            cursor.executemany(insert_snapshot, snapshot_rows)
        if author_rows:
            cursor.executemany(upsert_author, author_rows)
        for statement, rows in zip(advance_room, room_rows, strict=True):
            for row in rows:
                cursor.execute(statement, row)
                if cursor.rowcount != 1:
                    raise VersionConflict


def _batch_rows(
    batch: list[PendingCommit],
) -> tuple[list[tuple], list[tuple], list[tuple], list[tuple], list[tuple]]:
    """The parameters of `_write_statements` for a batch: op rows, snapshot rows, author rows,
    then the updates of rooms without and with a new copy of their text."""
    op_field = Op._meta.get_field("op")
    database = _value_adapter()
    now = Room._meta.get_field("updated_at").get_db_prep_save(timezone.now(), database)
    op_rows = [
        (
            p.room_id,
            p.change.version,
            op_field.get_db_prep_save(p.change.op, database),
            p.change.user,
            p.change.client,
            p.change.seq,
            p.change.ts,
        )
        for p in batch
    ]
    snapshot_rows = [
        (p.room_id, p.change.version, p.change.ts, p.copy.text, p.copy.authorship)
        for p in batch
        if p.copy is not None
    ]
    author_rows = [
        (p.room_id, p.change.client, p.author_name, now) for p in batch if p.author_name is not None
    ]
    room_rows = [
        (p.change.version, now, stored_bytes(p.change.op), p.room_id, p.expected_version)
        for p in batch
        if p.copy is None
    ]
    copy_rows = [
        (
            p.copy.text,
            p.change.version,
            p.change.version,
            now,
            stored_bytes(p.change.op) + copy_bytes(p.copy.text),
            p.room_id,
            p.expected_version,
        )
        for p in batch
        if p.copy is not None
    ]
    return op_rows, snapshot_rows, author_rows, room_rows, copy_rows


@functools.cache
def _value_adapter() -> Any:
    """A database wrapper used only to turn values into the driver's form (no queries).

    Kept rather than looked up: `django.db.connection` is context-local, so on the event loop
    every new task made Django build a new wrapper, which showed as 10% of the loop's samples
    under load."""
    return connections[DEFAULT_DB_ALIAS]


@functools.cache
def _write_statements(placeholder: str) -> tuple[str, str, str, str, str]:
    """INSERTs of an op row and a snapshot row, the upsert of an author's name, and the guarded
    UPDATEs of a room (without and with a new copy of the text), with the driver's placeholder
    ("%s" through Django's cursor, "?" for the sqlite3 module itself). Each UPDATE also adds
    what the change stores to the room's history size."""
    name = connection.ops.quote_name

    def insert(table: str, columns: tuple[str, ...]) -> str:
        return "INSERT INTO {} ({}) VALUES ({})".format(
            name(table),
            ", ".join(name(column) for column in columns),
            ", ".join([placeholder] * len(columns)),
        )

    insert_op = insert(
        Op._meta.db_table, ("room_id", "version", "op", "user", "client", "seq", "ts")
    )
    insert_snapshot = insert(
        Snapshot._meta.db_table, ("room_id", "version", "ts", "code", "authorship")
    )
    # SQLite and PostgreSQL spell an upsert the same way.
    upsert_author = insert(Author._meta.db_table, ("room_id", "client", "name", "updated_at"))
    upsert_author += (
        " ON CONFLICT ({}, {}) DO UPDATE SET {} = excluded.{}, {} = excluded.{}".format(
            name("room_id"),
            name("client"),
            name("name"),
            name("name"),
            name("updated_at"),
            name("updated_at"),
        )
    )

    def guarded_update(columns: tuple[str, ...]) -> str:
        history = name("history_bytes")
        return "UPDATE {} SET {}, {} WHERE {} = {} AND {} = {}".format(
            name(Room._meta.db_table),
            ", ".join(f"{name(column)} = {placeholder}" for column in columns),
            f"{history} = {history} + {placeholder}",
            name("id"),
            placeholder,
            name("version"),
            placeholder,
        )

    advance_room = guarded_update(("version", "updated_at"))
    advance_room_with_copy = guarded_update(("code", "code_version", "version", "updated_at"))
    return insert_op, insert_snapshot, upsert_author, advance_room, advance_room_with_copy


# -- PostgreSQL: on the event loop, in (room, version) order (rooms/pg_writes.py) ------------


class RoomTurn:
    """A room's turn to commit (`room_turn`): catch up, then commit a change that cannot lose
    when the turn is `exclusive` (PostgreSQL: the room's row is locked)."""

    exclusive = False

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id

    async def changes_after(self, version: int) -> list[Change]:
        """The room's committed changes after `version`, as of the turn."""
        return await changes_after(self.room_id, version)

    async def commit(
        self,
        change: Change,
        *,
        expected_version: int,
        copy: TextCopy | None,
        author_name: str | None = None,
    ) -> None:
        """As `change_commit`; durable once the turn has ended."""
        await change_commit(
            change,
            room_id=self.room_id,
            expected_version=expected_version,
            copy=copy,
            author_name=author_name,
        )


class _LockedTurn(RoomTurn):
    """With PostgreSQL: the turn holds the room's row, so nobody else commits meanwhile."""

    exclusive = True

    def __init__(self, room_id: str, turn: pg_writes.Turn) -> None:
        super().__init__(room_id)
        self.turn = turn

    async def changes_after(self, version: int) -> list[Change]:
        # Read under the turn's lock and on its connection: the database thread may be waiting
        # for this very row (a sharing change), and every change up to the lock is visible.
        op_field = Op._meta.get_field("op")
        return [
            Change(version, op_field.from_db_value(op, None, connection), user, client, seq, ts)
            for version, op, user, client, seq, ts in await self.turn.rows_after(version)
        ]

    async def commit(
        self,
        change: Change,
        *,
        expected_version: int,
        copy: TextCopy | None,
        author_name: str | None = None,
    ) -> None:
        rows = _pg_change_rows(self.room_id, expected_version, copy, author_name, change)
        error = _outcome_error(await self.turn.write(rows))
        if error is not None:
            raise error


@contextlib.asynccontextmanager
async def room_turn(room_id: str) -> AsyncIterator[RoomTurn]:
    """The room's turn, after a commit lost the version race: with PostgreSQL, the room's row
    is locked until the block ends (then what was committed in it is durable), so a process
    that lost once cannot lose again however busy the others are. With SQLite, whose writers
    already take turns (its write lock), commits in the block are the ordinary ones."""
    if not pg_writes.enabled():
        yield RoomTurn(room_id)
        return
    async with pg_writes.room_turn(_pg_statements(), room_id) as turn:
        yield _LockedTurn(room_id, turn)


def _outcome_error(outcome: str | None) -> Exception | None:
    if outcome == pg_writes.CONFLICT:
        return VersionConflict()
    if outcome == pg_writes.DUPLICATE:
        return DuplicateSeq()
    return None


def _pg_change_rows(
    room_id: str,
    expected_version: int,
    copy: TextCopy | None,
    author_name: str | None,
    change: Change,
) -> pg_writes.ChangeRows:
    database = _value_adapter()
    size = stored_bytes(change.op) + (copy_bytes(copy.text) if copy is not None else 0)
    return pg_writes.ChangeRows(
        room_id=room_id,
        version=change.version,
        params={
            "room": room_id,
            "expected": expected_version,
            "version": change.version,
            "now": Room._meta.get_field("updated_at").get_db_prep_save(timezone.now(), database),
            "size": size,
            "op": Op._meta.get_field("op").get_db_prep_save(change.op, database),
            "user": change.user,
            "client": change.client,
            "seq": change.seq,
            "ts": change.ts,
            "code": None if copy is None else copy.text,
            "authorship": None if copy is None else copy.authorship,
            "author": author_name,
        },
    )


@functools.cache
def _pg_statements() -> pg_writes.Statements:
    name = connection.ops.quote_name
    room, op = name(Room._meta.db_table), name(Op._meta.db_table)
    snapshot, author = name(Snapshot._meta.db_table), name(Author._meta.db_table)
    version, code, code_version, history = (
        name("version"),
        name("code"),
        name("code_version"),
        name("history_bytes"),
    )
    # The room's row is locked first, unless another transaction holds it (SKIP LOCKED: a
    # batch never waits behind another process's write of one of its rooms; that change is
    # told it lost the race and waits in the room's turn, alone). The guarded UPDATE advances
    # the room, adds what the change stores to its history size and, with a copy of the text
    # (%(code)s not NULL), keeps it in Room.code; each INSERT selects from its RETURNING, so
    # it writes only when the room was at the expected version. Every parameter is cast: a
    # NULL alone (no copy, no author) has no type to infer.
    commit_change = f"""
        WITH free AS (
            SELECT {name("id")} FROM {room}
            WHERE {name("id")} = %(room)s::text AND {version} = %(expected)s::bigint
            FOR NO KEY UPDATE SKIP LOCKED
        ), advanced AS (
            UPDATE {room} SET
                {code} = COALESCE(%(code)s::text, {code}),
                {code_version} = CASE WHEN %(code)s::text IS NULL THEN {code_version}
                    ELSE %(version)s::bigint END,
                {version} = %(version)s::bigint,
                {name("updated_at")} = %(now)s::timestamptz,
                {history} = {history} + %(size)s::bigint
            WHERE {name("id")} IN (SELECT {name("id")} FROM free)
                AND {version} = %(expected)s::bigint
            RETURNING {name("id")}
        ), op_row AS (
            INSERT INTO {op} ({name("room_id")}, {version}, {name("op")}, {name("user")},
                {name("client")}, {name("seq")}, {name("ts")})
            SELECT {name("id")}, %(version)s::bigint, %(op)s::jsonb, %(user)s::text,
                %(client)s::text, %(seq)s::bigint, %(ts)s::bigint
            FROM advanced
        ), snapshot_row AS (
            INSERT INTO {snapshot} ({name("room_id")}, {version}, {name("ts")}, {code},
                {name("authorship")})
            SELECT {name("id")}, %(version)s::bigint, %(ts)s::bigint, %(code)s::text,
                %(authorship)s::text
            FROM advanced WHERE %(code)s::text IS NOT NULL
        ), author_row AS (
            INSERT INTO {author} ({name("room_id")}, {name("client")}, {name("name")},
                {name("updated_at")})
            SELECT {name("id")}, %(client)s::text, %(author)s::text, %(now)s::timestamptz
            FROM advanced WHERE %(author)s::text IS NOT NULL
            ON CONFLICT ({name("room_id")}, {name("client")}) DO UPDATE
            SET {name("name")} = excluded.{name("name")},
                {name("updated_at")} = excluded.{name("updated_at")}
        )
        SELECT {name("id")} FROM advanced"""
    columns = ", ".join(name(c) for c in ("version", "op", "user", "client", "seq", "ts"))
    return pg_writes.Statements(
        commit_change=commit_change,
        lock_room=f"SELECT {version} FROM {room} WHERE {name('id')} = %s FOR NO KEY UPDATE",
        ops_after=f"SELECT {columns} FROM {op} WHERE {name('room_id')} = %s"
        f" AND {version} > %s ORDER BY {version}",
    )


# -- reads (each one short query on the database thread) -------------------------------------


@database_sync_to_async
def room_versions(room_ids: list[str]) -> dict[str, tuple[int, int]]:
    """The committed version and access version of each of these rooms."""
    rows = Room.objects.filter(id__in=room_ids).values_list("id", "version", "access_version")
    return {room_id: (version, access_version) for room_id, version, access_version in rows}


RoomRow = tuple[str, str, int, bool, str, str, int, str, int, Authorship, int, int]


@database_sync_to_async
def room_row(room_id: str) -> RoomRow | None:
    """A LiveRoom's arguments: name, text at the head, version, privacy, token hashes, the
    version of the copy in Room.code, link access, access version, the authorship at the head,
    the head's time and the size of the history.

    A room's first connection loads it, so this is on the path of connection set-up: plain SQL,
    one statement for the room and its latest copy of the text (and one more for the ops after
    the copy, if any), where three ORM queries cost ~1.5 ms of CPU (docs/benchmarks.md).
    """
    with connection.cursor() as cursor:
        cursor.execute(_room_row_statement(), [room_id])
        row = cursor.fetchone()
        if row is None:
            return None
        (name, version, code_version, private, edit_hash, view_hash, link_access) = row[:7]
        (access_version, history_bytes, initial_code, created_at) = row[7:11]
        copy_version, copy_ts, copy_code, copy_authorship = row[11:]
        if copy_version is None:  # no copy yet: the text at version 0, nobody's
            copy_version, copy_ts = 0, past.epoch_ms(_as_datetime(created_at))
            text, authorship = initial_code, Authorship.initial(initial_code, copy_ts)
        else:
            text, authorship = copy_code, Authorship.from_json(copy_authorship)
        ts = copy_ts
        if copy_version < version:
            cursor.execute(_ops_after_statement(), [room_id, copy_version, version])
            for number, op, client, op_ts in cursor.fetchall():
                op = json.loads(op) if isinstance(op, (str, bytes)) else op
                authorship.apply(text, op, author=client, version=number, ts=op_ts)
                text = ot.apply(text, op)
                ts = op_ts
    return (
        name,
        text,
        version,
        bool(private),
        edit_hash,
        view_hash,
        code_version,
        link_access,
        access_version,
        authorship,
        ts,
        history_bytes,
    )


def _as_datetime(value: Any) -> dt.datetime:
    """A DateTimeField as read by a plain cursor: SQLite gives its text (UTC when USE_TZ)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return timezone.make_aware(value, dt.UTC) if timezone.is_naive(value) else value


@functools.cache
def _room_row_statement() -> str:
    """The room's row and its latest copy of the text at or before its version (none: NULLs)."""
    name = connection.ops.quote_name
    room_columns = (
        "name",
        "version",
        "code_version",
        "private",
        "edit_token_hash",
        "view_token_hash",
        "link_access",
        "access_version",
        "history_bytes",
        "initial_code",
        "created_at",
    )
    room, copy = name(Room._meta.db_table), name(Snapshot._meta.db_table)
    return (
        "SELECT {}, {} FROM {} r LEFT JOIN {} s ON s.{} = r.{} AND s.{} = "
        "(SELECT MAX({}) FROM {} WHERE {} = r.{} AND {} <= r.{}) WHERE r.{} = %s"
    ).format(
        ", ".join(f"r.{name(column)}" for column in room_columns),
        ", ".join(f"s.{name(column)}" for column in ("version", "ts", "code", "authorship")),
        room,
        copy,
        name("room_id"),
        name("id"),
        name("version"),
        name("version"),
        copy,
        name("room_id"),
        name("id"),
        name("version"),
        name("version"),
        name("id"),
    )


@functools.cache
def _ops_after_statement() -> str:
    """The ops with versions in (%s, %s] of a room, in order."""
    name = connection.ops.quote_name
    statement = "SELECT {}, {}, {}, {} FROM {} WHERE {} = %s AND {} > %s AND {} <= %s ORDER BY {}"
    return statement.format(
        name("version"),
        name("op"),
        name("client"),
        name("ts"),
        name(Op._meta.db_table),
        name("room_id"),
        name("version"),
        name("version"),
        name("version"),
    )


def room_code(room: Room) -> str:
    """The room's text at `room.version`: its copy in `code` with the ops after it applied."""
    text = room.code
    if room.code_version < room.version:
        for op in (
            Op.objects.filter(
                room_id=room.id, version__gt=room.code_version, version__lte=room.version
            )
            .order_by("version")
            .values_list("op", flat=True)
        ):
            text = ot.apply(text, op)
    return text


@database_sync_to_async
def changes_after(room_id: str, after: int, through: int | None = None) -> list[Change]:
    """The op log's changes with versions in (after, through] (through None: to the end)."""
    ops = Op.objects.filter(room_id=room_id, version__gt=after).order_by("version")
    if through is not None:
        ops = ops.filter(version__lte=through)
    return [
        Change(row.version, row.op, row.user, row.client, row.seq, row.ts)
        for row in ops.only("version", "op", "user", "client", "seq", "ts")
    ]


@database_sync_to_async
def text_at(room_id: str, version: int) -> str:
    """The text at `version`: its latest copy at or before it, with the ops after it applied."""
    return past_at(room_id=room_id, version=version).text


@database_sync_to_async
def last_seq(room_id: str, client: str) -> int:
    """The highest seq committed for this client (0: none)."""
    last = (
        Op.objects.filter(room_id=room_id, client=client, seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return last or 0


@database_sync_to_async
def seq_version(room_id: str, client: str, seq: int) -> int | None:
    """The version this client's `seq` was committed as, if it was."""
    return (
        Op.objects.filter(room_id=room_id, client=client, seq=seq)
        .values_list("version", flat=True)
        .first()
    )


# -- client bindings (rooms/identity.py) -----------------------------------------------------


@database_sync_to_async
def client_claim(room_id: str, client: str) -> bool:
    """Bind `client` in the room unless it is bound already; True when this call bound it."""
    name = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO {} ({}, {}) VALUES (%s, %s) ON CONFLICT DO NOTHING".format(
                name(ClientBinding._meta.db_table), name("room_id"), name("client")
            ),
            [room_id, client],
        )
        return cursor.rowcount == 1


@database_sync_to_async
def client_bound(room_id: str, client: str) -> bool:
    """Whether `client` is bound in the room."""
    return ClientBinding.objects.filter(room_id=room_id, client=client).exists()


@database_sync_to_async
def client_release(room_id: str, client: str) -> None:
    """Unbind `client` in the room."""
    ClientBinding.objects.filter(room_id=room_id, client=client).delete()
