"""Line diffs between two versions of a room, to show and to restore.

Python's difflib (SequenceMatcher) finds the matching lines: the standard library's, readable
output, no dependency. The same matching turns "make the text what it was" into an op that
replaces only the lines that differ, so that a restore leaves alone what both versions share
and concurrent edits there keep their place (rooms/document.py, room_restore).
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

from rooms import ot

CONTEXT_LINES = 3


def _lines(text: str) -> list[str]:
    """The lines of `text`, each with its "\n": lines end at "\n" only, as in the editor and in
    blame (str.splitlines would also split at "\r", form feeds and more)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _matcher(old: str, new: str) -> tuple[list[str], list[str], SequenceMatcher]:
    old_lines, new_lines = _lines(old), _lines(new)
    return old_lines, new_lines, SequenceMatcher(None, old_lines, new_lines)


def diff_hunks(old: str, new: str) -> list[dict[str, Any]]:
    """The changed lines of `new` against `old`, in hunks with CONTEXT_LINES of context, as
    `unified_diff` would print them: [{"old_start", "old_lines", "new_start", "new_lines",
    "lines": [" kept", "-removed", "+added", ...]}]; line numbers count from 1, and the lines
    carry no line break."""
    old_lines, new_lines, matcher = _matcher(old, new)
    hunks = []
    for group in matcher.get_grouped_opcodes(CONTEXT_LINES):
        lines: list[str] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [" " + line.removesuffix("\n") for line in old_lines[i1:i2]]
                continue
            lines += ["-" + line.removesuffix("\n") for line in old_lines[i1:i2]]
            lines += ["+" + line.removesuffix("\n") for line in new_lines[j1:j2]]
        first, last = group[0], group[-1]
        hunks.append(
            {
                "old_start": first[1] + 1,
                "old_lines": last[2] - first[1],
                "new_start": first[3] + 1,
                "new_lines": last[4] - first[3],
                "lines": lines,
            }
        )
    return hunks


def diff_op(old: str, new: str) -> ot.Op:
    """A normalized op turning `old` into `new` that replaces only the lines that differ."""
    old_lines, new_lines, matcher = _matcher(old, new)
    op: ot.Op = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            op.append(sum(len(line) for line in old_lines[i1:i2]))
            continue
        deleted = sum(len(line) for line in old_lines[i1:i2])
        if deleted:
            op.append({"d": deleted})
        if j2 > j1:
            op.append("".join(new_lines[j1:j2]))
    return ot.normalize([part for part in op if part != 0])
