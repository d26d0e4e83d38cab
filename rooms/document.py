"""The room document: the one place that changes a room.

This module decides what a change becomes: it validates the change against the document,
transforms it against concurrent changes, gives it its version, has it committed
(rooms/store.py), applies it to the room's head in this process, which delivers it to the
room's connections (rooms/live.py), and announces it to other processes (rooms/following.py).
It also creates and reads rooms for the REST API, and restores a room's old text as a new
change (room_restore). Consumers and views only translate between the wire and the functions
here. What the versions and ops mean on the wire is described in
docs/protocol.md.

The database stays the arbiter between processes: a commit built on a stale head is rejected,
and the loser catches up from the op log and transforms again (ShareDB's design), in the room's
turn (rooms/store.py's room_turn), so that it cannot lose twice in a row.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from rooms import accounts, following, metrics, ot, store
from rooms.changes import SNAPSHOT_EVERY, Change, committed_bytes
from rooms.history import diff, past
from rooms.live import LiveRoom, live_rooms
from rooms.models import Room
from rooms.protocol import (
    BAD_MESSAGE,
    BAD_OP,
    TOO_LARGE,
    ProtocolError,
    new_room_id,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class CommitResult:
    version: int
    text: str  # the room's text right after this change
    duplicate: bool = False


def live_rooms_reset() -> None:
    """Forget every live room, the watcher and queued commits (tests run each case on a fresh
    database and event loop)."""
    live_rooms.__init__()
    following.room_watcher.__init__()
    following.followers.__init__()
    store.committer.__init__()


# -- changes ---------------------------------------------------------------------------------


async def change_submit(
    live: LiveRoom,
    *,
    base_version: int | None,
    op: object | None = None,
    text: str | None = None,
    user: str,
    client: str,
    seq: int | None = None,
    author_name: str | None = None,
) -> CommitResult:
    """Commit one change, given as an op or as a whole new text, and announce it.

    `base_version` is the version the change was made against (None: the head); `author_name`,
    when given, is recorded with the change as its client's name in this room (blame shows
    it). Returns once the change is durable. Raises ProtocolError for a change that cannot be
    applied; then nothing changed.
    """
    if op is not None:
        try:
            op = ot.normalize(op)
        except ot.InvalidOp as error:
            raise ProtocolError(BAD_OP, str(error)) from None
    async with live.lock:
        head = live.version
        base = head if base_version is None else base_version
        if not 0 <= base <= head:
            raise ProtocolError(BAD_OP, f"version {base} is not between 0 and {head}")
        if text is not None:
            op = ot.diff(await live.text_at(base), text)
        else:
            base_length = len(live.text) if base == head else len(await live.text_at(base))
            if ot.base_length(op) > base_length:
                raise ProtocolError(BAD_OP, f"the op reaches past the document at {base}")
        if seq is not None:
            first_version = await _duplicate_version(live, client, seq)
            if first_version is not None:
                await _require_same_op(
                    live, op, base=base, client=client, seq=seq, at=first_version
                )
                return CommitResult(first_version, live.text, duplicate=True)
        for concurrent in await live.changes_between(base, head):
            op = ot.transform(op, concurrent.op, "left")
        async with contextlib.AsyncExitStack() as turn_scope:
            turn: store.RoomTurn | None = None
            if live.contended:
                # Its last commit here lost the race: this one takes the room's turn at once
                # rather than lose again first.
                turn = await turn_scope.enter_async_context(store.room_turn(live.room_id))
                op, built_on, mine = await _catch_up_in_turn(live, turn, op, client, seq)
                if mine is not None:
                    await turn_scope.aclose()
                    return await _duplicate_result(live, op, built_on, client, seq, mine)
            while True:
                new_text = ot.apply(live.text, op)
                _quotas_check(live, op=op, new_text=new_text)
                # Times never go back within a room, even between processes whose clocks
                # differ: finding the version at a time relies on it (rooms/history/past.py).
                ts = max(now_ms(), live.head_ts)
                change = Change(live.version + 1, op, user, client, seq, ts)
                copy = authorship = None
                if change.version % SNAPSHOT_EVERY == 0:
                    authorship = live.authorship.copy()
                    authorship.apply(live.text, op, author=client, version=change.version, ts=ts)
                    copy = store.TextCopy(new_text, authorship.to_json())
                try:
                    if turn is None:
                        await store.change_commit(
                            change,
                            room_id=live.room_id,
                            expected_version=live.version,
                            copy=copy,
                            author_name=author_name,
                        )
                    else:
                        await turn.commit(
                            change,
                            expected_version=live.version,
                            copy=copy,
                            author_name=author_name,
                        )
                    break
                except store.VersionConflict:
                    # Another process got there first. Take the room's turn (nobody else
                    # commits to it until ours is written: losing once is the most a busier
                    # process can make us lose), take its changes, move our op past them.
                    # (Its room's row may only have been busy: then there is nothing to take,
                    # and the commit goes again, in the turn.)
                    metrics.version_conflicted()
                    if turn is None:
                        turn = await turn_scope.enter_async_context(store.room_turn(live.room_id))
                    elif turn.exclusive:
                        # Lost even in the turn: the room is not where this process thinks.
                        raise RuntimeError(f"{live.room_id}: conflict in its turn") from None
                    seen = live.version
                    op, built_on, mine = await _catch_up_in_turn(live, turn, op, client, seq)
                    if mine is not None:
                        await turn_scope.aclose()
                        return await _duplicate_result(live, op, built_on, client, seq, mine)
                    if live.version == seen and not turn.exclusive:
                        raise RuntimeError(
                            f"{live.room_id}: conflict at {seen}, no newer op"
                        ) from None
                except store.DuplicateSeq:
                    # Another process committed this (client, seq) meanwhile: the client's
                    # other connection resubmitting the same op, or the same seq reused for
                    # another op. The turn (if any) ends first: the reads below go through the
                    # database thread, which may itself be waiting for the room's row.
                    await turn_scope.aclose()
                    first_version = await store.seq_version(live.room_id, client, seq)
                    built_on = live.version
                    await live.catch_up()
                    await _require_same_op(
                        live, op, base=built_on, client=client, seq=seq, at=first_version
                    )
                    return CommitResult(first_version, live.text, duplicate=True)
        # Durable here: a turn commits when it ends.
        if copy is not None:
            live.code_version = change.version
        live.advance(change, new_text, authorship)
        metrics.change_committed()
        result = CommitResult(change.version, new_text)
    await following.change_announce(live.room_id, change)
    return result


async def _catch_up_in_turn(
    live: LiveRoom, turn: store.RoomTurn, op: ot.Op, client: str, seq: int | None
) -> tuple[ot.Op, int, int | None]:
    """Apply what other processes committed before the room's turn. Returns `op` moved past
    it, the version it was built on before, and the version of this very (client, seq) if
    that is among what was committed (the client's other connection resubmitted it there;
    then `op` is returned unmoved). The room stays contended (its next commit takes the turn at
    once) while others commit to it."""
    built_on = live.version
    changes = await turn.changes_after(built_on)
    for concurrent in changes:
        live.advance(concurrent)
    live.contended = bool(changes)
    for concurrent in changes:
        if seq is not None and (concurrent.client, concurrent.seq) == (client, seq):
            return op, built_on, concurrent.version
    for concurrent in changes:
        op = ot.transform(op, concurrent.op, "left")
    return op, built_on, None


async def _duplicate_result(
    live: LiveRoom, op: ot.Op, built_on: int, client: str, seq: int | None, at: int
) -> CommitResult:
    """The answer to a (client, seq) found committed as version `at` (another process got it
    first): its ack, if it is the same op; else ProtocolError."""
    assert seq is not None
    await _require_same_op(live, op, base=built_on, client=client, seq=seq, at=at)
    return CommitResult(at, live.text, duplicate=True)


def _quotas_check(live: LiveRoom, *, op: ot.Op, new_text: str) -> None:
    """Refuse a change that would take the room past its text or history quota."""
    text_quota = settings.COLLAB_ROOM_TEXT_MAX_CODE_POINTS
    if len(new_text) > text_quota:
        metrics.quota_refused()
        raise ProtocolError(
            TOO_LARGE, f"the room's text would exceed its quota of {text_quota:,} code points"
        )
    history_quota = settings.COLLAB_ROOM_HISTORY_MAX_BYTES
    if live.history_bytes + committed_bytes(live.version + 1, op, new_text) > history_quota:
        metrics.quota_refused()
        raise ProtocolError(
            TOO_LARGE,
            f"the room's history has reached its quota of {history_quota:,} bytes: it takes no "
            "more changes (copy its text into a new room to go on)",
        )


async def _duplicate_version(live: LiveRoom, client: str, seq: int) -> int | None:
    last = live.last_seq.get(client)
    if last is None:
        last = await store.last_seq(live.room_id, client)
        live.last_seq[client] = last
    if seq > last:
        return None
    first_version = await store.seq_version(live.room_id, client, seq)
    if first_version is None:
        raise ProtocolError(BAD_OP, f"seq {seq} was never used and is below {last}: seq must grow")
    return first_version


async def _require_same_op(
    live: LiveRoom, op: ot.Op, *, base: int, client: str, seq: int, at: int
) -> None:
    """Refuse a resubmitted (client, seq) unless it is the op committed as version `at`.

    The committed op is stored as it was applied: transformed past everything committed before
    it. A resubmission is the same op made against some version up to `at - 1` (a client moves
    its unacknowledged op past every change it receives, exactly as the server moves a
    submitted one), so moving it past the changes between its base and `at - 1` must give the
    committed op exactly. Anything else is another op under a used seq.
    """
    if base >= at:
        raise ProtocolError(
            BAD_OP,
            f"seq {seq} of client {client!r} was committed as version {at}, which this op's"
            f" version {base} already includes: a new op needs a new seq",
        )
    for concurrent in await live.changes_between(base, at - 1):
        op = ot.transform(op, concurrent.op, "left")
    (committed,) = await live.changes_between(at - 1, at)
    if op != committed.op:
        raise ProtocolError(
            BAD_OP,
            f"seq {seq} of client {client!r} was committed as version {at} with another op:"
            " a new op needs a new seq",
        )


async def room_restore(
    live: LiveRoom,
    *,
    version: int,
    base_version: int | None = None,
    user: str,
    client: str,
    author_name: str | None = None,
) -> CommitResult:
    """Make the room's text what it was at `version`, as one new change by `user` (of `client`)
    that goes through change_submit like any other: durable, delivered to everyone, history
    kept. `base_version` is the version the restore was decided on (None: the head): what was
    committed after it is concurrent and kept, transformed like any concurrent edit.

    The change replaces only the lines that differ (rooms/history/diff.py), so edits elsewhere
    keep their place. Raises ProtocolError (BAD_MESSAGE) for a version outside 0..head."""
    head = live.version
    base = head if base_version is None else base_version
    for name, number in (("version", version), ("base", base)):
        if not 0 <= number <= head:
            raise ProtocolError(BAD_MESSAGE, f"{name} {number} is not between 0 and {head}")
    old, target = await live.text_at(base), await live.text_at(version)
    return await change_submit(
        live,
        base_version=base,
        op=diff.diff_op(old, target),
        user=user,
        client=client,
        author_name=author_name,
    )


async def cursor_at_head(
    live: LiveRoom, *, anchor: int, head: int, version: int | None
) -> tuple[int, int, int]:
    """Validate a cursor made at `version` (None: head) and move it to the head version."""
    at = live.version if version is None else version
    if not 0 <= at <= live.version:
        raise ProtocolError(BAD_MESSAGE, f"cursor version {at} is not between 0 and {live.version}")
    length = len(live.text) if at == live.version else len(await live.text_at(at))
    if not (0 <= anchor <= length and 0 <= head <= length):
        raise ProtocolError(BAD_MESSAGE, f"cursor positions must be between 0 and {length}")
    target = live.version
    anchor, head = await live.position_moved([anchor, head], at, target)
    return anchor, head, target


# -- rooms (REST) ----------------------------------------------------------------------------


def room_create(*, code: str = "", name: str = "", owner: AbstractBaseUser | None = None) -> Room:
    """Create a public room with a fresh random id; `code` is its text at version 0."""
    return Room.objects.create(
        id=new_room_id(), code=code, initial_code=code, name=name, owner=owner
    )


def room_create_private(
    *, code: str = "", name: str = "", owner: AbstractBaseUser | None = None
) -> tuple[Room, dict[str, str]]:
    """Create a private room, open to its owner (if any) and its links. Its tokens
    ({"token", "view_token"}) are returned only here: the database keeps their hashes."""
    tokens = {"token": accounts.token_new(), "view_token": accounts.token_new()}
    room = Room.objects.create(
        id=new_room_id(),
        code=code,
        initial_code=code,
        name=name,
        private=True,
        owner=owner,
        edit_token_hash=accounts.token_hash(tokens["token"]),
        view_token_hash=accounts.token_hash(tokens["view_token"]),
    )
    return room, tokens


def room_get(room_id: str) -> Room | None:
    return Room.objects.filter(id=room_id).first()


def room_history(room: Room, *, since: int, limit: int | None = None) -> list[dict[str, Any]]:
    """The history entries after `since`, oldest first, at most `limit` of them."""
    return past.changes_page(room_id=room.id, since=since, limit=limit)
