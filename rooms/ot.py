"""Pure functions over ot-text-unicode ops; see docs/protocol.md.

This module owns the text operation algebra the server shares with browsers running ShareDB's
``ot-text-unicode`` 4.x: validating and normalizing ops, applying them to a document, transforming
concurrent ops against each other, composing them, moving cursor positions and diffing two texts.
It imports nothing from Django, touches no I/O and keeps no state, so any layer can call it and
tests can compare it against the npm package directly (tests/rooms/test_ot_differential.py).

An op is a list of parts, walked left to right over the old document:

* a positive int ``N``: keep the next N code points,
* a non-empty str: insert it here,
* ``{"d": N}`` with a positive int N: delete the next N code points.

Positions and lengths count Unicode code points, which is what Python str indexing counts, so
"a😀b" has length 3 here exactly as it does for ot-text-unicode (which counts through UTF-16 pairs
with ``unicount``). ot-text-unicode's invertible ``{"d": "text"}`` deletes are not accepted.

transform() and compose() are only defined for normalized ops (normalize() output): the npm
package's own checkOp lets some non-normalized ops through on which its transform does not
converge, so the server normalizes every incoming op first and these functions refuse the rest.
"""

from __future__ import annotations

import re

Op = list[int | str | dict[str, int]]

__all__ = [
    "InvalidOp",
    "Op",
    "apply",
    "base_length",
    "compose",
    "diff",
    "encoded_size",
    "invert",
    "is_valid_text",
    "normalize",
    "transform",
    "transform_position",
]

# NUL breaks PostgreSQL text columns, and a lone surrogate cannot be encoded as UTF-8 (nor does it
# count the same way in JS, where unicount would pair it with its neighbour), so neither may ever
# enter a document.
_BAD_TEXT = re.compile(r"[\x00\ud800-\udfff]")

# Part kinds. Comparing with `type(x) is int` (not isinstance) is deliberate: bool is an int
# subclass and True must not be read as "skip 1".
_SKIP = int
_INSERT = str
_DELETE = dict


class InvalidOp(ValueError):
    """An op (or an op/document pair) that ot-text-unicode semantics do not allow."""


def is_valid_text(text: str) -> bool:
    """True unless ``text`` contains U+0000 or a lone surrogate (U+D800..U+DFFF)."""
    return _BAD_TEXT.search(text) is None


def _describe(value: object) -> str:
    # Never echo a user's (possibly huge) value back in full; its type and a short repr suffice.
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_part(part: object, index: int) -> None:
    """Raise InvalidOp unless ``part`` is a positive int, a valid non-empty str or {"d": N>0}."""
    kind = type(part)
    if kind is _SKIP:
        if part <= 0:  # type: ignore[operator]
            raise InvalidOp(f"part {index}: skip must be a positive integer, got {part}")
        return
    if kind is _INSERT:
        if not part:
            raise InvalidOp(f"part {index}: insert must not be empty")
        if _BAD_TEXT.search(part) is not None:  # type: ignore[arg-type]
            raise InvalidOp(f"part {index}: insert contains NUL or a lone surrogate")
        return
    if isinstance(part, dict):
        if len(part) != 1 or "d" not in part:
            raise InvalidOp(f'part {index}: delete must be exactly {{"d": <positive integer>}}')
        count = part["d"]
        if type(count) is not int or count <= 0:
            raise InvalidOp(
                f"part {index}: delete count must be a positive integer, got {_describe(count)}"
            )
        return
    raise InvalidOp(
        f'part {index}: expected a positive integer, a non-empty string or {{"d": N}}, '
        f"got {type(part).__name__} {_describe(part)}"
    )


def normalize(op: object) -> Op:
    """Validate ``op`` and return ot-text-unicode's normalize() of it.

    Adjacent parts of one kind are merged and a trailing skip is dropped. Zero-length parts are
    rejected rather than dropped: our protocol treats them as malformed input. The result never
    shares dicts with the input, so callers may mutate either freely.
    """
    if not isinstance(op, list):
        raise InvalidOp(f"op must be a list, got {type(op).__name__}")
    result: Op = []
    # Runs of one kind are collected and merged once, so a client sending thousands of one-char
    # inserts costs one join instead of quadratic string concatenation.
    run_kind: type | None = None
    run: list = []

    def flush() -> None:
        if run_kind is _INSERT:
            result.append("".join(run))
        elif run_kind is _SKIP:
            result.append(sum(run))
        elif run_kind is _DELETE:
            result.append({"d": sum(run)})

    for index, part in enumerate(op):
        _check_part(part, index)
        if isinstance(part, dict):
            kind = _DELETE
            value = part["d"]
        else:
            kind = type(part)
            value = part
        if kind is not run_kind:
            flush()
            run_kind, run = kind, []
        run.append(value)
    flush()
    if result and type(result[-1]) is _SKIP:
        result.pop()
    return result


def _require_normalized(op: object, name: str) -> Op:
    """Return ``op`` if it is a valid normalized op, else raise InvalidOp.

    Checking is cheaper than normalizing (no allocation) and refuses loudly instead of silently
    computing something that ot-text-unicode would compute differently.
    """
    if not isinstance(op, list):
        raise InvalidOp(f"{name} must be a list, got {type(op).__name__}")
    last_kind: type | None = None
    for index, part in enumerate(op):
        _check_part(part, index)
        kind = _DELETE if isinstance(part, dict) else type(part)
        if kind is last_kind:
            raise InvalidOp(f"{name} is not normalized (adjacent parts of one kind at {index})")
        last_kind = kind
    if last_kind is _SKIP:
        raise InvalidOp(f"{name} is not normalized (trailing skip)")
    return op  # type: ignore[return-value]


def base_length(op: Op) -> int:
    """Number of code points ``op`` reads from the document it applies to (skips + deletes)."""
    total = 0
    for part in op:
        if type(part) is _SKIP:
            total += part  # type: ignore[operator]
        elif isinstance(part, dict):
            total += part["d"]
    return total


def apply(text: str, op: Op) -> str:
    """Return ``text`` with ``op`` applied.

    Raises InvalidOp for a malformed part or when the op reads past the end of ``text``
    (ot-text-unicode raises for an overlong skip but silently clips an overlong delete; we refuse
    both, since either means the op was made for another document). Well-formed but
    non-normalized ops are accepted: applying them is unambiguous.
    """
    if not isinstance(op, list):
        raise InvalidOp(f"op must be a list, got {type(op).__name__}")
    # Slices plus one join: O(len(text)) per op, never per-character work in Python.
    pieces: list[str] = []
    pos = 0
    for index, part in enumerate(op):
        _check_part(part, index)
        if type(part) is _SKIP:
            pieces.append(text[pos : pos + part])  # type: ignore[operator]
            pos += part  # type: ignore[operator]
        elif type(part) is _INSERT:
            pieces.append(part)  # type: ignore[arg-type]
        else:
            pos += part["d"]  # type: ignore[index]
    if pos > len(text):
        raise InvalidOp(f"op reads {pos} characters but the document has only {len(text)}")
    pieces.append(text[pos:])
    return "".join(pieces)


def encoded_size(op: Op) -> int:
    """The UTF-8 bytes of the op as compact JSON, give or take escapes in its inserts."""
    size = 1 + max(len(op), 1)  # brackets and commas
    for part in op:
        if type(part) is _INSERT:
            # isascii() is O(1) on CPython: only non-ASCII text pays for an encoding pass.
            inserted = len(part) if part.isascii() else len(part.encode("utf-8", "surrogatepass"))
            size += inserted + 2
        elif type(part) is _SKIP:
            size += len(str(part))
        else:
            size += 6 + len(str(part["d"]))  # {"d":N}
    return size


def _append(op: Op, part: int | str | dict[str, int]) -> None:
    """ot-text-unicode's makeAppend: drop empty parts, merge with a last part of the same kind."""
    kind = type(part)
    if kind is _SKIP:
        if part == 0:
            return
    elif kind is _INSERT:
        if not part:
            return
    elif part["d"] == 0:  # type: ignore[index]
        return
    if op:
        last = op[-1]
        if type(last) is kind:
            # Replace rather than mutate: dicts may be shared with the caller's ops.
            if kind is _DELETE:
                op[-1] = {"d": last["d"] + part["d"]}  # type: ignore[index]
            else:
                op[-1] = last + part  # type: ignore[operator]
            return
    op.append(part)


def _trim(op: Op) -> Op:
    # _append merges skips, so at most one trailing skip can exist.
    if op and type(op[-1]) is _SKIP:
        op.pop()
    return op


def _part_length(part: int | str | dict[str, int]) -> int:
    if type(part) is _SKIP:
        return part  # type: ignore[return-value]
    if type(part) is _INSERT:
        return len(part)  # type: ignore[arg-type]
    return part["d"]  # type: ignore[index]


class _Reader:
    """ot-text-unicode's makeTake: consume an op part by part, splitting parts on demand.

    Past the end the op behaves as an infinite skip, as in the npm package.
    """

    __slots__ = ("idx", "offset", "op", "size")

    def __init__(self, op: Op) -> None:
        self.op = op
        self.size = len(op)
        self.idx = 0
        # Offset into the current part, in code points.
        self.offset = 0

    def peek(self) -> int | str | dict[str, int] | None:
        return self.op[self.idx] if self.idx < self.size else None

    def take(self, n: int, indivisible: str = "") -> int | str | dict[str, int]:
        """Take up to ``n`` code points of the next part (all of it if n == -1).

        ``indivisible`` is "i" to take inserts whole, "d" to take deletes whole.
        """
        if self.idx == self.size:
            return n  # n == -1 callers use take_rest(), which checks the end first
        part = self.op[self.idx]
        offset = self.offset
        kind = type(part)
        if kind is _SKIP:
            rest = part - offset  # type: ignore[operator]
            if n == -1 or rest <= n:
                self.idx += 1
                self.offset = 0
                return rest
            self.offset = offset + n
            return n
        if kind is _INSERT:
            if n == -1 or indivisible == "i" or len(part) - offset <= n:  # type: ignore[arg-type]
                self.idx += 1
                self.offset = 0
                return part[offset:]  # type: ignore[index]
            self.offset = offset + n
            return part[offset : offset + n]  # type: ignore[index]
        rest = part["d"] - offset  # type: ignore[index]
        if n == -1 or indivisible == "d" or rest <= n:
            self.idx += 1
            self.offset = 0
            return {"d": rest}
        self.offset = offset + n
        return {"d": n}

    def take_rest(self, out: Op) -> None:
        """Append everything not yet taken (the npm code's trailing `while (c = take(-1))`)."""
        while self.idx < self.size:
            _append(out, self.take(-1))


def transform(op: Op, other: Op, side: str) -> Op:
    """Transform ``op`` so it applies after ``other``; both were made against the same document.

    ``side`` breaks ties between inserts at the same position: "left" puts ``op``'s insert first.
    Same result as ot-text-unicode's transform(op, other, side). Both ops must be normalized.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {_describe(side)}")
    _require_normalized(op, "op")
    _require_normalized(other, "other op")
    left = side == "left"
    out: Op = []
    reader = _Reader(op)
    take = reader.take
    for part in other:
        kind = type(part)
        if kind is _SKIP:
            length = part
            while length > 0:  # type: ignore[operator]
                chunk = take(length, "i")  # type: ignore[arg-type]
                _append(out, chunk)
                # Our inserts take no room in `other`'s base document.
                if type(chunk) is not _INSERT:
                    length -= _part_length(chunk)  # type: ignore[operator]
        elif kind is _INSERT:
            # Two inserts at one spot: the left one goes first.
            if left and type(reader.peek()) is _INSERT:
                _append(out, take(-1))
            _append(out, len(part))  # type: ignore[arg-type]
        else:
            length = part["d"]  # type: ignore[index]
            while length > 0:
                chunk = take(length, "i")
                chunk_kind = type(chunk)
                if chunk_kind is _SKIP:
                    # Text we kept is gone already; nothing to emit.
                    length -= chunk  # type: ignore[operator]
                elif chunk_kind is _INSERT:
                    _append(out, chunk)
                else:
                    # Both deleted the same text: the delete is already done.
                    length -= chunk["d"]  # type: ignore[index]
    reader.take_rest(out)
    return _trim(out)


def compose(a: Op, b: Op) -> Op:
    """Return one op equivalent to applying ``a`` then ``b``; same as ot-text-unicode's compose.

    Both ops must be normalized.
    """
    _require_normalized(a, "first op")
    _require_normalized(b, "second op")
    out: Op = []
    reader = _Reader(a)
    take = reader.take
    for part in b:
        kind = type(part)
        if kind is _SKIP:
            length = part
            while length > 0:  # type: ignore[operator]
                chunk = take(length, "d")  # type: ignore[arg-type]
                _append(out, chunk)
                # a's deletes are not in b's base document, so they use none of b's skip.
                if type(chunk) is not _DELETE:
                    length -= _part_length(chunk)  # type: ignore[operator]
        elif kind is _INSERT:
            _append(out, part)  # type: ignore[arg-type]
        else:
            length = part["d"]  # type: ignore[index]
            offset = 0
            while offset < length:
                chunk = take(length - offset, "d")
                chunk_kind = type(chunk)
                if chunk_kind is _SKIP:
                    # b deletes text a kept: the composed op deletes it from the original.
                    _append(out, {"d": chunk})  # type: ignore[dict-item]
                    offset += chunk  # type: ignore[operator]
                elif chunk_kind is _INSERT:
                    # b deletes text a inserted: the two cancel out.
                    offset += len(chunk)  # type: ignore[arg-type]
                else:
                    _append(out, chunk)
    reader.take_rest(out)
    return _trim(out)


def transform_position(position: int, op: Op) -> int:
    """Where ``position`` (a code point offset) ends up after ``op``; ot-text-unicode's
    transformPosition.

    An insert exactly at the position leaves it in place (the cursor stays before the new text);
    a position inside a deleted range moves to the start of that range.
    """
    if type(position) is not int or position < 0:
        raise ValueError(f"position must be a non-negative integer, got {_describe(position)}")
    if not isinstance(op, list):
        raise InvalidOp(f"op must be a list, got {type(op).__name__}")
    cursor = position
    pos = 0
    for index, part in enumerate(op):
        if cursor <= pos:
            break
        _check_part(part, index)
        kind = type(part)
        if kind is _SKIP:
            pos += part  # type: ignore[operator]
        elif kind is _INSERT:
            # pos tracks the new document too, so it moves with the cursor past the insert.
            length = len(part)  # type: ignore[arg-type]
            pos += length
            cursor += length
        else:
            cursor -= min(part["d"], cursor - pos)  # type: ignore[index]
    return cursor


def _common_prefix(a: str, b: str, limit: int) -> int:
    """Length of the longest common prefix of a[:limit] and b[:limit].

    Binary search with slice comparisons keeps the character loop in C: about log2(limit)
    memcmp-speed comparisons instead of up to a million Python iterations on a 1 MiB document.
    """
    low, high = 0, limit  # a[:low] == b[:low] is known; the answer is at most high
    while low < high:
        mid = (low + high + 1) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix of a and b, capped at ``limit``."""
    len_a, len_b = len(a), len(b)
    low, high = 0, limit
    while low < high:
        mid = (low + high + 1) // 2
        if a[len_a - mid : len_a - low] == b[len_b - mid : len_b - low]:
            low = mid
        else:
            high = mid - 1
    return low


def diff(old: str, new: str) -> Op:
    """A normalized op turning ``old`` into ``new`` with a single changed hunk.

    The hunk lies between the longest common prefix and the longest common suffix of what is
    left (the suffix never overlaps the prefix). Inside the hunk the delete comes before the
    insert. Returns [] when the texts are equal.
    """
    if old == new:
        return []
    shorter = min(len(old), len(new))
    prefix = _common_prefix(old, new, shorter)
    suffix = _common_suffix(old, new, shorter - prefix)
    deleted = len(old) - prefix - suffix
    inserted = new[prefix : len(new) - suffix]
    out: Op = []
    if prefix:
        out.append(prefix)
    if deleted:
        out.append({"d": deleted})
    if inserted:
        out.append(inserted)
    return out


def invert(text: str, op: Op) -> Op:
    """The op that undoes ``op`` on ``text``: apply(apply(text, op), invert(text, op)) == text.

    Deletes count code points and do not carry what they removed, so the inverse needs the text
    the op was applied to; the server keeps inverses to rebuild the text at a recent version.
    """
    inverse: Op = []
    pos = 0
    for part in op:
        if type(part) is _SKIP:
            _append(inverse, part)
            pos += part  # type: ignore[operator]
        elif type(part) is _INSERT:
            _append(inverse, {"d": len(part)})  # type: ignore[arg-type]
        else:
            count = part["d"]  # type: ignore[index]
            _append(inverse, text[pos : pos + count])
            pos += count
    return _trim(inverse)
