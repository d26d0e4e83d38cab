"""The channel-layer group names of a room.

Kept below every module that sends to a room: the consumers and presence address a room's
connections, rooms/following.py the processes that have the room live.
"""

from __future__ import annotations


def group_name(room_id: str) -> str:
    """The channel-layer group of a room's connections (room ids are already group-name safe)."""
    return f"room.{room_id}"


def changes_group_name(room_id: str) -> str:
    """The group through which processes tell each other about a room's committed changes: one
    member per process with the room live (its LiveRoom), not one per connection."""
    return f"changes.{room_id}"
