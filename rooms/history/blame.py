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
    blamed = line_blame(text, authorship)
    mentioned = {last for _, _, last, _ in blamed} - {NOBODY}
    public = {who: author_public(keys[who], names) for who in mentioned}
    users_of: dict[tuple[int, ...], list[dict[str, str]]] = {}
    times: dict[int, str] = {}
    lines = []
    append = lines.append  # 10,000 lines: the loop body is what a long file costs
    for number, (users, changed, last, ts) in enumerate(blamed, start=1):
        listed = users_of.get(users)
        if listed is None:
            for who in users:
                if who not in public:
                    public[who] = author_public(keys[who], names)
            listed = users_of[users] = [
                {"id": public[who]["id"], "name": public[who]["name"]} for who in users
            ]
        time = times.get(ts)
        if time is None:
            time = times[ts] = iso_time(ts)
        append(
            {
                "line": number,
                "users": listed,
                "version": changed,
                "time": time,
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
