"""What the history requests answer (docs/protocol.md, "History"), for the REST views and the
WebSocket alike: the text at a version or time, pages of the op log, the time axis, blame,
authorship and diffs.

The `*_answer` functions are synchronous and read the database (views call them as they are).
`history_answer` serves a WebSocket request: it answers from the live room's memory when the
request is about the head, reads the database on the database thread otherwise, and computes
blame and diffs on a worker thread, so that the event loop never stalls on a long file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from rooms.history import diff
from rooms.history.authors import author_names
from rooms.history.blame import authorship_body, blame_body, iso_time
from rooms.history.past import changes_page, past_at, version_at_time, version_times

if TYPE_CHECKING:
    from rooms.live import LiveRoom

# Entries per page of the op log when a request names no limit (WebSocket), and at most.
PAGE_DEFAULT = 500
PAGE_MAX = 1000
# What a WebSocket `history` request may `get`.
GETS = ("text", "changes", "times", "blame", "authorship", "diff")


class BadRequest(ValueError):
    """A request the history cannot answer as asked: REST 400, WebSocket `bad_message`."""


def time_ms(value: str) -> int:
    """An ISO 8601 time ("2026-11-27T13:47:29Z", "2026-11-27T14:47:29.5+01:00"; without an
    offset: UTC) as epoch ms."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'at' must be an ISO 8601 time, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def version_between(value: object, head: int, name: str = "version") -> int:
    """`value` (an int, or digits from a query string) as a version in 0..head."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value <= head:
        raise BadRequest(f"'{name}' must be an integer from 0 to {head}")
    return value


def version_at(*, room_id: str, at: str) -> int:
    """The version at an ISO 8601 time; BadRequest before the room existed."""
    version = version_at_time(room_id=room_id, ts=time_ms(at))
    if version is None:
        raise BadRequest(f"the room did not exist yet at {at[:40]}")
    return version


# -- answers (synchronous: the database) ------------------------------------------------------


def text_answer(*, room_id: str, version: int) -> dict[str, Any]:
    """{"version", "code", "ts", "time"}: the text at `version` and when it was made."""
    past = past_at(room_id=room_id, version=version)
    return {"version": version, "code": past.text, "ts": past.ts, "time": iso_time(past.ts)}


def changes_answer(*, room_id: str, head: int, since: int, limit: int | None) -> dict[str, Any]:
    """{"version": head, "ops": [entry, ...]}: the op log after `since`, `limit` at most."""
    return {"version": head, "ops": changes_page(room_id=room_id, since=since, limit=limit)}


def times_answer(*, room_id: str, head: int) -> dict[str, Any]:
    """{"version": head, "times": [[version, ts], ...]}: a time axis over the whole history."""
    return {"version": head, "times": [list(p) for p in version_times(room_id=room_id, head=head)]}


def blame_answer(*, room_id: str, version: int) -> dict[str, Any]:
    past = past_at(room_id=room_id, version=version, authorship=True)
    return blame_body(
        text=past.text,
        authorship=past.authorship,
        version=version,
        names=author_names(room_id=room_id),
    )


def authorship_answer(*, room_id: str, version: int) -> dict[str, Any]:
    past = past_at(room_id=room_id, version=version, authorship=True)
    return authorship_body(
        authorship=past.authorship, version=version, names=author_names(room_id=room_id)
    )


def diff_answer(*, room_id: str, old: int, new: int) -> dict[str, Any]:
    """{"from", "to", "hunks"}: the lines of version `new` against version `old`."""
    return {
        "from": old,
        "to": new,
        "hunks": diff.diff_hunks(
            past_at(room_id=room_id, version=old).text, past_at(room_id=room_id, version=new).text
        ),
    }


# -- the WebSocket -------------------------------------------------------------------------------


async def history_answer(live: LiveRoom, request: dict[str, Any]) -> dict[str, Any]:
    """The answer to a WebSocket `history` request (its `get` and parameters), without the
    envelope. Raises BadRequest."""
    room_id = live.room_id
    get = request.get("get")
    if get not in GETS:
        raise BadRequest(f"'get' must be one of {', '.join(GETS)}")
    head = live.version
    if get == "changes":
        since = version_between(request.get("since", 0), head, "since")
        limit = request.get("limit", PAGE_DEFAULT)
        if type(limit) is not int or not 1 <= limit <= PAGE_MAX:
            raise BadRequest(f"'limit' must be an integer from 1 to {PAGE_MAX}")
        return await database_sync_to_async(changes_answer)(
            room_id=room_id, head=head, since=since, limit=limit
        )
    if get == "times":
        return await database_sync_to_async(times_answer)(room_id=room_id, head=head)
    if get == "diff":
        old = version_between(request.get("from"), head, "from")
        new = version_between(request.get("to", head), head, "to")
        texts = [await _text_of(live, old), await _text_of(live, new)]
        return {"from": old, "to": new, "hunks": await asyncio.to_thread(diff.diff_hunks, *texts)}
    if get == "text":
        if "at" in request:
            if not isinstance(request["at"], str):
                raise BadRequest("'at' must be an ISO 8601 time string")
            version = await database_sync_to_async(version_at)(room_id=room_id, at=request["at"])
        else:
            version = version_between(request.get("version"), head)
        if version == live.version:
            return {
                "version": version,
                "code": live.text,
                "ts": live.head_ts,
                "time": iso_time(live.head_ts),
            }
        return await database_sync_to_async(text_answer)(room_id=room_id, version=version)
    # blame, authorship: at the head from memory (copied now: the room moves on meanwhile)
    version = version_between(request.get("version", head), head)
    names = await database_sync_to_async(author_names)(room_id=room_id)
    if version == live.version:
        text, authorship = live.text, live.authorship.copy()
    else:
        past = await database_sync_to_async(past_at)(
            room_id=room_id, version=version, authorship=True
        )
        text, authorship = past.text, past.authorship
    if get == "blame":
        return await asyncio.to_thread(
            blame_body, text=text, authorship=authorship, version=version, names=names
        )
    return await asyncio.to_thread(
        authorship_body, authorship=authorship, version=version, names=names
    )


async def _text_of(live: LiveRoom, version: int) -> str:
    """The text at `version`: the head from memory, older ones from their copy in the database
    (fewer ops to replay than walking back from the head may take)."""
    if version == live.version:
        return live.text
    past = await database_sync_to_async(past_at)(room_id=live.room_id, version=version)
    return past.text
