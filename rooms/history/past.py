"""Reading a room's past from the database: its text (and authorship) at any version or time, the
versions' times, and pages of its op log.

The text at version V is the latest copy at or before V (rooms/models.py Snapshot, one every
SNAPSHOT_EVERY changes; version 0 is the room's initial text) with the ops after it applied, so
any version costs one row and at most SNAPSHOT_EVERY - 1 ops, however long the history. Change
times only grow within a room (rooms/document.py stamps each change no earlier than the one
before), which is what finds the version at a time by the copies first.

Every function here is synchronous (a few short queries): views call them directly, async code
through `database_sync_to_async`. Callers check that versions are within 0..head.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from rooms import ot
from rooms.history.authorship import Authorship
from rooms.models import Op, Room, Snapshot


@dataclass(slots=True)
class Past:
    """A room as it was at `version`."""

    version: int
    text: str
    ts: int  # epoch ms of the change that made this version (version 0: the room's creation)
    authorship: Authorship | None = None  # only when asked for


def epoch_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def past_at(*, room_id: str, version: int, authorship: bool = False) -> Past:
    """The room at `version`, with its authorship if `authorship`."""
    columns = ("version", "ts", "code", "authorship") if authorship else ("version", "ts", "code")
    copy = (
        Snapshot.objects.filter(room_id=room_id, version__lte=version)
        .order_by("-version")
        .values_list(*columns)
        .first()
    )
    if copy is None:
        initial_code, created_at = Room.objects.values_list("initial_code", "created_at").get(
            id=room_id
        )
        ts = epoch_ms(created_at)
        past = Past(
            0, initial_code, ts, Authorship.initial(initial_code, ts) if authorship else None
        )
    else:
        past = Past(
            copy[0], copy[2], copy[1], Authorship.from_json(copy[3]) if authorship else None
        )
    if past.version == version:
        return past
    ops = (
        Op.objects.filter(room_id=room_id, version__gt=past.version, version__lte=version)
        .order_by("version")
        .values_list("version", "op", "client", "ts")
    )
    text = past.text
    for number, op, client, ts in ops:
        if past.authorship is not None:
            past.authorship.apply(text, op, author=client, version=number, ts=ts)
        text = ot.apply(text, op)
        past.version, past.ts = number, ts
    past.text = text
    return past


def version_at_time(*, room_id: str, ts: int) -> int | None:
    """The room's version at `ts` (epoch ms): the last change made at or before it; None when
    the room did not exist yet."""
    created_at = Room.objects.values_list("created_at", flat=True).get(id=room_id)
    if ts < epoch_ms(created_at):
        return None
    copies = Snapshot.objects.filter(room_id=room_id)
    before = copies.filter(ts__lte=ts).order_by("-version").values_list("version", flat=True)
    after = before.first() or 0
    ops = Op.objects.filter(room_id=room_id, version__gt=after, ts__lte=ts)
    following = (
        copies.filter(version__gt=after).order_by("version").values_list("version", flat=True)
    ).first()
    if following is not None:
        ops = ops.filter(version__lt=following)  # at most SNAPSHOT_EVERY rows to look at
    last = ops.order_by("-version").values_list("version", flat=True).first()
    return after if last is None else last


def version_times(*, room_id: str, head: int) -> list[tuple[int, int]]:
    """(version, ts) of version 0, of every copy and of the head: a coarse time axis over the
    whole history, one point per SNAPSHOT_EVERY changes."""
    created_at = Room.objects.values_list("created_at", flat=True).get(id=room_id)
    points = [(0, epoch_ms(created_at))]
    points += (
        Snapshot.objects.filter(room_id=room_id, version__lte=head)
        .order_by("version")
        .values_list("version", "ts")
    )
    if points[-1][0] != head:
        last = Op.objects.filter(room_id=room_id, version=head).values_list("ts", flat=True)
        points.append((head, last.get()))
    return points


def changes_page(*, room_id: str, since: int, limit: int | None = None) -> list[dict[str, Any]]:
    """History entries after version `since`, oldest first, at most `limit` of them."""
    rows = (
        Op.objects.filter(room_id=room_id, version__gt=since)
        .order_by("version")
        .values_list("version", "op", "user", "client", "seq", "ts")
    )
    if limit is not None:
        rows = rows[:limit]
    return [
        {"version": version, "op": op, "user": user, "client": client, "seq": seq, "ts": ts}
        for version, op, user, client, seq, ts in rows
    ]
