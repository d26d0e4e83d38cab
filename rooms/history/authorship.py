"""Who wrote what: the author of every code point of a room's text, and the last change that
touched every line, kept up to date one committed change at a time.

Pure (no Django, no I/O), like rooms/ot.py. rooms/live.py keeps one `Authorship` beside each live
room's text and applies every committed change to both, in version order; rooms/store.py writes
`encode()` with every copy of the text, so a room loaded from the database rebuilds its
authorship from the latest copy and the few ops after it. The op log decides everything: every
process, and every reload, arrives at the same authorship (`encode()` is canonical).

An author is a key: the client id that made the change (docs/protocol.md, "History" explains
why). Index 0 is nobody: the room's initial text.

Characters: runs of (length, author) in blocks of about BLOCK_RUNS runs, so an edit finds its
place by walking a few block totals and one block, never the whole text. Lines: one record per
line (the version, author and time of the last change that touched it) in three arrays, replaced
per change by slice assignment. A change touches the lines its inserted text lands on and the
line a deletion joins; a line whose content is exactly what it was (its neighbour was split off
or deleted whole) keeps its record, the way `git blame` keeps a line above an inserted one.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from rooms.ot import Op

NOBODY = 0
# Runs per block: an edit walks the block totals and then one block, so both stay short. A block
# is split in two when it doubles.
BLOCK_RUNS = 32
# The author table is compacted (authors no longer in the text or the line records dropped) when
# it reaches this size, then when it doubles again: memory stays bounded by what the text uses,
# however many clients come and go, for O(1) per edit amortised.
COMPACT_AUTHORS_AT = 64


class Authorship:
    """The authorship of one text (code points), changed only through `apply`."""

    __slots__ = (
        "_blocks",
        "_compact_at",
        "_hint",
        "_index",
        "_mark",
        "_totals",
        "authors",
        "line_authors",
        "times",
        "versions",
    )

    def __init__(
        self,
        authors: list[str],
        runs: list[tuple[int, int]],
        lines: list[tuple[int, int, int]],
    ) -> None:
        self.authors = authors  # index -> author key; authors[NOBODY] == ""
        self._index = {key: index for index, key in enumerate(authors)}
        self._blocks: list[tuple[list[int], list[int]]] = []  # (lengths, authors) per block
        self._totals: list[int] = []  # code points per block
        for start in range(0, len(runs), BLOCK_RUNS):
            chunk = runs[start : start + BLOCK_RUNS]
            self._blocks.append(([n for n, _ in chunk], [who for _, who in chunk]))
            self._totals.append(sum(n for n, _ in chunk))
        self.versions = array("q", [version for version, _, _ in lines])
        self.line_authors = array("q", [who for _, who, _ in lines])
        self.times = array("q", [ts for _, _, ts in lines])
        # Where the last edit was, so that the next one (usually nearby) is found from there:
        # (position, its line number) in the current text, and (block, its start position).
        self._mark = (0, 0)
        self._hint = (0, 0)
        self._compact_at = max(COMPACT_AUTHORS_AT, 2 * len(authors))

    # -- making one --------------------------------------------------------------------------

    @classmethod
    def initial(cls, text: str, ts: int) -> Authorship:
        """A room's text at version 0: nobody's, every line from version 0 at `ts`."""
        runs = [(len(text), NOBODY)] if text else []
        return cls([""], runs, [(0, NOBODY, ts)] * (text.count("\n") + 1))

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Authorship:
        """The inverse of `encode()`."""
        runs = data["runs"]
        lines = data["lines"]
        authorship = cls(list(data["authors"]), [], [])
        lengths, whos = runs[0::2], runs[1::2]
        for start in range(0, len(lengths), BLOCK_RUNS):
            block = (lengths[start : start + BLOCK_RUNS], whos[start : start + BLOCK_RUNS])
            authorship._blocks.append(block)
            authorship._totals.append(sum(block[0]))
        for i in range(0, len(lines), 4):
            count = lines[i]
            authorship.versions.extend(array("q", [lines[i + 1]]) * count)
            authorship.line_authors.extend(array("q", [lines[i + 2]]) * count)
            authorship.times.extend(array("q", [lines[i + 3]]) * count)
        return authorship

    @classmethod
    def from_json(cls, text: str) -> Authorship:
        return cls.decode(json.loads(text))

    def to_json(self) -> str:
        """`encode()` as compact JSON: what a Snapshot row keeps."""
        return json.dumps(self.encode(), separators=(",", ":"))

    def copy(self) -> Authorship:
        clone = Authorship.__new__(Authorship)
        clone.authors = list(self.authors)
        clone._index = dict(self._index)
        clone._blocks = [(list(lengths), list(whos)) for lengths, whos in self._blocks]
        clone._totals = list(self._totals)
        clone.versions = array("q", self.versions)
        clone.line_authors = array("q", self.line_authors)
        clone.times = array("q", self.times)
        clone._mark = self._mark
        clone._hint = self._hint
        clone._compact_at = self._compact_at
        return clone

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(self._totals)

    def runs(self) -> Iterator[tuple[int, int]]:
        """(length, author index) runs in text order, neighbours of one author merged."""
        length, who = 0, -1
        for lengths, whos in self._blocks:
            for n, w in zip(lengths, whos, strict=True):
                if w == who:
                    length += n
                else:
                    if length:
                        yield length, who
                    length, who = n, w
        if length:
            yield length, who

    def lines(self) -> Iterator[tuple[int, int, int]]:
        """(version, author index, ts) of the last change that touched each line."""
        return zip(self.versions, self.line_authors, self.times, strict=True)

    def encode(self) -> dict[str, Any]:
        """A canonical, compact form (JSON-ready): the same authorship always encodes the same,
        whatever indices this object gave its authors. Authors are listed by first use in the
        text, then in the line records; authors no longer used are dropped.

        {"authors": [key, ...], "runs": [length, author, ...],
         "lines": [count, version, author, ts, ...]} (consecutive equal line records counted)."""
        dense = {NOBODY: 0}
        authors = [""]

        def index(who: int) -> int:
            number = dense.get(who)
            if number is None:
                number = dense[who] = len(authors)
                authors.append(self.authors[who])
            return number

        runs: list[int] = []
        for length, who in self.runs():
            runs += (length, index(who))
        lines: list[int] = []
        previous = None
        for record in self.lines():
            if record == previous:
                lines[-4] += 1
            else:
                lines += (1, record[0], index(record[1]), record[2])
                previous = record
        return {"authors": authors, "runs": runs, "lines": lines}

    # -- changing ----------------------------------------------------------------------------

    def apply(self, text: str, op: Op, *, author: str, version: int, ts: int) -> None:
        """Record the normalized `op`, applied to `text` (the text before it), as change
        `version` by `author` at `ts` (epoch ms)."""
        hunks = _hunks(op)
        if not hunks:
            return  # a no-op change: it touches nothing
        who = self._index.get(author)
        if who is None:
            if len(self.authors) >= self._compact_at:
                self._compact()
            who = self._index[author] = len(self.authors)
            self.authors.append(author)
        # Right to left: each hunk's positions and line numbers are those of `text`, which the
        # hunks to its right do not move.
        for start, end, inserted in reversed(hunks):
            if end > start:
                self._delete(start, end - start)
            if inserted:
                self._insert(start, len(inserted), who)
        groups = _line_groups(text, hunks, self._mark)
        for group in reversed(groups):
            self._touch_lines(text, *group, (version, who, ts))
        # Nothing before the first hunk moved: its start and line hold in the new text too.
        self._mark = (groups[0][0], groups[0][2])

    def _compact(self) -> None:
        """Drop the authors nothing refers to any more and number the others densely."""
        used = {NOBODY}
        for _, whos in self._blocks:
            used.update(whos)
        used.update(self.line_authors)
        dense = {old: new for new, old in enumerate(sorted(used))}
        self.authors = [self.authors[old] for old in sorted(used)]
        self._index = {key: index for index, key in enumerate(self.authors)}
        for _, whos in self._blocks:
            whos[:] = [dense[who] for who in whos]
        self.line_authors = array("q", [dense[who] for who in self.line_authors])
        self._compact_at = max(COMPACT_AUTHORS_AT, 2 * len(self.authors))

    def _touch_lines(
        self,
        text: str,
        start: int,
        end: int,
        first: int,
        last: int,
        inserted: str,
        record: tuple[int, int, int],
    ) -> None:
        """Lines `first`..`last` of `text` (holding [start, end)) become the lines of
        text[line start:start] + inserted + text[end:line end]: touched by `record`, except a
        line whose content is exactly an old line's, which keeps that line's record."""
        count = inserted.count("\n") + 1
        if count == 1 and first == last:  # the usual keystroke: one line changed in place
            self.versions[first], self.line_authors[first], self.times[first] = record
            return

        def line_start(position: int) -> int:
            return text.rfind("\n", 0, position) + 1

        def line_end(position: int) -> int:
            found = text.find("\n", position)
            return len(text) if found < 0 else found

        kept_first = kept_last = False
        if count == 1:
            if not inserted:  # a deletion across lines: the joined line may be one of the old ones
                if start == line_start(start) and end == line_start(end):
                    kept_last = True  # whole lines deleted above it
                elif start == line_end(start) and end == line_end(end):
                    kept_first = True  # whole lines deleted below it
        else:
            # A line split exactly at its end or its start is what it was.
            kept_first = inserted[0] == "\n" and start == line_end(start)
            kept_last = (
                inserted[-1] == "\n"
                and end == line_start(end)
                and not (kept_first and first == last)
            )
        span = slice(first, last + 1)
        if not (kept_first or kept_last):
            version, who, ts = record
            self.versions[span] = array("q", [version]) * count
            self.line_authors[span] = array("q", [who]) * count
            self.times[span] = array("q", [ts]) * count
            return
        records = [record] * count
        if kept_first:
            records[0] = self._line(first)
        if kept_last:
            records[-1] = self._line(last)
        self.versions[span] = array("q", [r[0] for r in records])
        self.line_authors[span] = array("q", [r[1] for r in records])
        self.times[span] = array("q", [r[2] for r in records])

    def _line(self, number: int) -> tuple[int, int, int]:
        return self.versions[number], self.line_authors[number], self.times[number]

    def _block_at(self, position: int, *, inside: bool) -> tuple[int, int]:
        """The block holding `position` and the position it starts at. `inside`: the block whose
        code points include the one at `position`; else the first block that reaches it (an
        insert there goes at its end rather than at the next block's start).

        The walk starts at the block of the last edit (`_hint`): an edit starts no earlier than
        its block, so that block's start is still right afterwards."""
        totals = self._totals
        number, start = self._hint
        if number >= len(totals):
            number, start = 0, 0
        while number > 0 and start >= position:  # back to a block that starts before it
            number -= 1
            start -= totals[number]
        while number < len(totals):
            end = start + totals[number]
            if end > position or (not inside and end == position):
                self._hint = (number, start)
                return number, start
            start = end
            number += 1
        raise IndexError(f"position {position} is past the text ({start})")

    def _insert(self, position: int, length: int, who: int) -> None:
        if not self._blocks:
            self._blocks.append(([length], [who]))
            self._totals.append(length)
            return
        number, block_start = self._block_at(position, inside=False)
        lengths, whos = self._blocks[number]
        offset = position - block_start
        if offset == 0:  # only at the very start of the text
            if whos[0] == who:
                lengths[0] += length
            else:
                lengths.insert(0, length)
                whos.insert(0, who)
        else:
            # The run the insert follows: the first one that reaches the offset.
            ends = list(accumulate(lengths))
            i = bisect_right(ends, offset - 1)
            within = offset - (ends[i - 1] if i else 0)
            if whos[i] == who:
                lengths[i] += length
            elif within == lengths[i]:  # between runs i and i + 1
                if i + 1 < len(lengths) and whos[i + 1] == who:
                    lengths[i + 1] += length
                else:
                    lengths.insert(i + 1, length)
                    whos.insert(i + 1, who)
            else:  # inside run i: split it around the insert
                rest = lengths[i] - within
                lengths[i] = within
                lengths[i + 1 : i + 1] = [length, rest]
                whos[i + 1 : i + 1] = [who, whos[i]]
        self._totals[number] += length
        if len(lengths) > 2 * BLOCK_RUNS:
            half = len(lengths) // 2
            self._blocks[number : number + 1] = [
                (lengths[:half], whos[:half]),
                (lengths[half:], whos[half:]),
            ]
            self._totals[number : number + 1] = [sum(lengths[:half]), sum(lengths[half:])]

    def _delete(self, position: int, length: int) -> None:
        number, block_start = self._block_at(position, inside=True)
        while length:
            lengths, whos = self._blocks[number]
            offset = position - block_start
            ends = list(accumulate(lengths))
            i = bisect_right(ends, offset)  # the run holding the first deleted code point
            within = offset - (ends[i - 1] if i else 0)
            taken = 0
            while length and i < len(lengths):
                take = min(length, lengths[i] - within)
                lengths[i] -= take
                length -= take
                taken += take
                if lengths[i] == 0:
                    del lengths[i], whos[i]
                else:
                    i += 1
                within = 0
            self._totals[number] -= taken
            if not lengths:
                del self._blocks[number], self._totals[number]
            elif length:  # the rest of the deletion starts the next block
                block_start += self._totals[number]
                number += 1
            elif 0 < i < len(lengths) and whos[i - 1] == whos[i]:
                # The deletion ended inside this block and closed up two runs of one author.
                # (Across blocks they stay apart: runs() and encode() merge them.)
                lengths[i - 1] += lengths[i]
                del lengths[i], whos[i]


def _hunks(op: Op) -> list[tuple[int, int, str]]:
    """The op as replacements of the text before it: (start, end, inserted), left to right."""
    hunks: list[tuple[int, int, str]] = []
    position = 0
    start = end = -1
    inserted = ""
    for part in op:
        if type(part) is int:
            if start >= 0:
                hunks.append((start, end, inserted))
                start, inserted = -1, ""
            position += part
        elif type(part) is str:
            if start < 0:
                start = end = position
            inserted += part
        else:
            if start < 0:
                start = end = position
            position += part["d"]
            end = position
    if start >= 0:
        hunks.append((start, end, inserted))
    return hunks


def _line_groups(
    text: str, hunks: list[tuple[int, int, str]], mark: tuple[int, int]
) -> list[tuple[int, int, int, int, str]]:
    """The hunks as line replacements: (start, end, first line, last line, inserted), hunks that
    share a line joined into one with the old text between them (it holds no line break).
    `mark` is a (position, line number) of `text`: line breaks are counted from there."""
    groups: list[tuple[int, int, int, int, str]] = []
    counted_to, line = mark
    if hunks[0][0] < counted_to:
        line -= text.count("\n", hunks[0][0], counted_to)
        counted_to = hunks[0][0]
    for start, end, inserted in hunks:
        line += text.count("\n", counted_to, start)
        first = line
        line += text.count("\n", start, end)
        counted_to = end
        if groups and groups[-1][3] == first:
            g_start, g_end, g_first, _, g_inserted = groups[-1]
            groups[-1] = (g_start, end, g_first, line, g_inserted + text[g_end:start] + inserted)
        else:
            groups.append((start, end, first, line, inserted))
    return groups


def line_blame(text: str, authorship: Authorship) -> list[tuple[tuple[int, ...], int, int, int]]:
    """Per line of `text`: (the authors of its characters before its line break, first seen
    first, nobody left out; the version, author and ts of the last change that touched it)."""
    ends: list[int] = []
    whos: list[int] = []
    end = 0
    for length, who in authorship.runs():
        end += length
        ends.append(end)
        whos.append(who)
    result = []
    start = 0
    run = 0
    for line, record in zip(text.split("\n"), authorship.lines(), strict=True):
        end = start + len(line)
        users: tuple[int, ...] = ()
        if end > start:
            while ends[run] <= start:
                run += 1
            last = bisect_left(ends, end, run)  # the run holding the line's last character
            if last == run:
                users = () if whos[run] == NOBODY else (whos[run],)
            else:
                users = tuple(who for who in dict.fromkeys(whos[run : last + 1]) if who != NOBODY)
        result.append((users, *record))
        start = end + 1
    return result
