"""Who an author is, for people: the display name each author (a client id) last edited a room
under, and the colour presence gives that client.

Authorship (rooms/history/authorship.py) keys on the client id of each change, which the op log
already records: it is stable across a client's reconnects (and bound to it by its secret), and
a later account can be mapped to the client ids it edits from without touching the authorship
itself. The name is not in the op log: a connection's first change, and its first after it
renames itself, record it in the same transaction (rooms/store.py writes it).
"""

from __future__ import annotations

from typing import Any

from rooms.models import Author
from rooms.presence import color_for


def author_names(*, room_id: str) -> dict[str, str]:
    """Every recorded author of the room: client id -> name."""
    return dict(Author.objects.filter(room_id=room_id).values_list("client", "name"))


def author_public(key: str, names: dict[str, str]) -> dict[str, Any]:
    """An author as the API shows it: `{"id", "name", "color"}`. Changes from before names were
    recorded show the name the server gives a connection without one."""
    return {"id": key, "name": names.get(key) or f"guest-{key[:5]}", "color": color_for(key)}
