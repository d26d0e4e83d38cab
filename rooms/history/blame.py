"""Blame and authorship as the API answers them (docs/protocol.md, "History"): per line, who wrote
its characters and the last change that touched it; or the raw authorship, for clients that keep
it up to date themselves as ops arrive (collab-client.js).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rooms.history.authors import author_public
from rooms.history.authorship import NOBODY, Authorship, line_blame


def iso_time(ts: int) -> str:
    """Epoch ms as ISO 8601 in UTC, to the millisecond ("2026-11-27T13:47:29.123Z"): the form
    `?at=` takes."""
    moment = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def blame_body(
    *, text: str, authorship: Authorship, version: int, names: dict[str, str]
) -> dict[str, Any]:
    """{"version", "lines": [{"line", "users", "version", "time", "author"}], "authors"}:
    `users` the authors of the line's characters ({"id", "name"}, first seen first; none for
    text the room started with), `version` and `time` (ISO 8601) the last change that touched
    the line and `author` the id of who made it (null for version 0); `authors` maps every id
    mentioned to {"name", "color"}. A 10,000-line file is a long answer: each author's name and
    colour are spelled out once, not per line."""
    keys = authorship.authors
    public: dict[int, dict[str, Any]] = {}
    users_of: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    times: dict[int, str] = {}

    def user(who: int) -> dict[str, Any]:
        if who not in public:
            public[who] = author_public(keys[who], names)
        return public[who]

    lines = []
    for number, (users, changed, last, ts) in enumerate(line_blame(text, authorship), start=1):
        listed = users_of.get(users)
        if listed is None:
            listed = users_of[users] = [
                {"id": user(who)["id"], "name": user(who)["name"]} for who in users
            ]
        if ts not in times:
            times[ts] = iso_time(ts)
        if last != NOBODY:
            user(last)
        lines.append(
            {
                "line": number,
                "users": listed,
                "version": changed,
                "time": times[ts],
                "author": keys[last] if last != NOBODY else None,
            }
        )
    authors = {
        entry["id"]: {"name": entry["name"], "color": entry["color"]} for entry in public.values()
    }
    return {"version": version, "lines": lines, "authors": authors}


def authorship_body(
    *, authorship: Authorship, version: int, names: dict[str, str]
) -> dict[str, Any]:
    """{"version", "authors": [{"id", "name", "color"}], "runs": [length, author, ...], "lines":
    [count, version, author, ts, ...]}: Authorship.encode() with its author keys made public
    (index 0 is nobody: {"id": "", "name": "", "color": null})."""
    encoded = authorship.encode()
    authors = [{"id": "", "name": "", "color": None}]
    authors += [author_public(key, names) for key in encoded["authors"][1:]]
    return {"version": version, **encoded, "authors": authors}
