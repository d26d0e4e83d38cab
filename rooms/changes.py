"""A committed change: the value the store writes and reads, live rooms keep and deliver, and
processes send each other. Its wire forms (the ops-mode broadcast, the channel-layer event) are
encoded here, once per change; docs/protocol.md describes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rooms import ot
from rooms.protocol import encode_frame

# Changes between two copies of the whole text (Room.code, and a Snapshot row with its
# authorship): the change of every version that is a multiple of this writes one. Each change is
# durable in the op log when it is acked; rewriting the text with every keystroke made a commit
# cost grow with the document (an insert at the top rewrites every page of it). Reading any
# version, the head included, replays fewer ops than this onto a copy.
SNAPSHOT_EVERY = 100

# What a change's row holds besides its op, about: user, client, seq and ts, the row's header
# and its index entries. Counted per change, so a flood of empty ops fills a history too.
ROW_BYTES = 100


def stored_bytes(op: ot.Op) -> int:
    """What a change's op-log row holds: its op as JSON, and the row."""
    return ROW_BYTES + ot.encoded_size(op)


def copy_bytes(text: str) -> int:
    """What a stored copy of the whole text holds: its UTF-8 bytes (the authorship kept beside
    it is not counted)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def committed_bytes(version: int, op: ot.Op, text_after: str) -> int:
    """What committing the change of `version` adds to its room's history (its quota counts
    these): its op-log row, and for every SNAPSHOT_EVERY-th change the copy of the text."""
    size = stored_bytes(op)
    if version % SNAPSHOT_EVERY == 0:
        size += copy_bytes(text_after)
    return size


@dataclass(slots=True)
class Change:
    """A committed change. `version` is the room's version after it."""

    version: int
    op: ot.Op
    user: str
    client: str
    seq: int | None
    ts: int
    # The inverse op (computed when applied), so the text at an older version can be rebuilt.
    undo: ot.Op | None = None
    # Kept by the live room that holds the change (rooms/live.py): about what it takes in
    # memory, and the length of every text-mode broadcast before it (a running total), so what
    # a lagging text-mode socket is owed is one subtraction.
    memory_bytes: int = 0
    texts_before: int = 0
    _op_frame: str | None = field(default=None, repr=False)
    _op_message: dict[str, str] | None = field(default=None, repr=False)

    def entry(self) -> dict[str, Any]:
        """The change as a history / `init.ops` entry."""
        return {
            "version": self.version,
            "op": self.op,
            "user": self.user,
            "client": self.client,
            "seq": self.seq,
            "ts": self.ts,
        }

    def op_message(self) -> dict[str, str]:
        """The ops-mode broadcast as an ASGI send message: one object shared by every socket."""
        if self._op_message is None:
            self._op_message = {"type": "websocket.send", "text": self.op_frame()}
        return self._op_message

    def op_frame(self) -> str:
        """The ops-mode broadcast, encoded once and sent as the same bytes to every socket."""
        if self._op_frame is None:
            self._op_frame = encode_frame(
                {
                    "type": "op",
                    "version": self.version,
                    "op": self.op,
                    "user": self.user,
                    "client": self.client,
                    "seq": self.seq,
                }
            )
        return self._op_frame

    def event(self) -> dict[str, Any]:
        """The channel-layer message that tells every process about this change."""
        return {"type": "room.change", **self.entry()}

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Change:
        return cls(
            version=event["version"],
            op=event["op"],
            user=event["user"],
            client=event["client"],
            seq=event["seq"],
            ts=event["ts"],
        )
