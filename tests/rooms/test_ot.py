"""Unit tests and a seeded property fuzzer for rooms.ot (pure: no database, no Node).

The random generators at the top are shared with test_ot_differential.py, which checks the same
functions against the npm package ot-text-unicode itself.
"""

from __future__ import annotations

import random
import time

import pytest

from rooms import ot
from rooms.ot import InvalidOp

# Documents mix ASCII, newlines, accented letters (precomposed and combining) and non-BMP emoji,
# which are one code point here but a surrogate pair in JS: the case that breaks naive ports.
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 \n\n\téüßñ\u0301中文😀🎉𝄞🚀"


def random_text(rng: random.Random, max_len: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def random_op(rng: random.Random, doc_len: int, max_insert: int = 6) -> ot.Op:
    """A random normalized op valid for a document of ``doc_len`` code points.

    Parts are drawn independently and then normalized, so runs like insert-delete-insert and
    delete-insert (which normalize keeps as they are) appear as well as the plain shapes.
    """
    parts: list = []
    remaining = doc_len
    while True:
        roll = rng.random()
        if roll < 0.15:
            break
        if roll < 0.45 and remaining:
            n = rng.randint(1, min(remaining, 8) if rng.random() < 0.8 else remaining)
            parts.append(n)
            remaining -= n
        elif roll < 0.7 and remaining:
            n = rng.randint(1, min(remaining, 5) if rng.random() < 0.8 else remaining)
            parts.append({"d": n})
            remaining -= n
        else:
            text = random_text(rng, max_insert) or "x"
            parts.append(text)
    return ot.normalize(parts)


def test_random_op_generator_yields_normalized_ops_valid_for_the_doc() -> None:
    rng = random.Random(7)
    for _ in range(500):
        doc = random_text(rng, 30)
        op = random_op(rng, len(doc))
        assert ot.normalize(op) == op
        assert ot.base_length(op) <= len(doc)


# --- docs/protocol.md examples (section 7.1) --------------------------------------------------


def test_skip_whole_document_then_insert_appends() -> None:
    assert ot.apply("hello", [5, " world"]) == "hello world"


def test_delete_then_insert_replaces_first_letter() -> None:
    assert ot.apply("hello", [{"d": 1}, "H"]) == "Hello"


def test_skip_then_delete_removes_middle_letters() -> None:
    assert ot.apply("hello", [2, {"d": 2}]) == "heo"


def test_empty_op_is_a_noop() -> None:
    assert ot.apply("hello", []) == "hello"
    assert ot.normalize([]) == []


def test_non_bmp_character_counts_as_one_code_point() -> None:
    doc = "a😀b"
    assert len(doc) == 3
    assert ot.apply(doc, [2, "x"]) == "a😀xb"
    assert ot.apply(doc, [1, {"d": 1}]) == "ab"
    assert ot.diff(doc, "ab") == [1, {"d": 1}]


# --- apply / base_length -----------------------------------------------------------------------


def test_base_length_counts_skips_and_deletes_not_inserts() -> None:
    assert ot.base_length([3, "abc", {"d": 2}, 1, "z"]) == 6
    assert ot.base_length([]) == 0


def test_apply_rejects_skip_past_end_of_document() -> None:
    with pytest.raises(InvalidOp, match="document has only 5"):
        ot.apply("hello", [6, "x"])


def test_apply_rejects_delete_past_end_of_document() -> None:
    # ot-text-unicode would silently clip this delete; we refuse it (see module docstring).
    with pytest.raises(InvalidOp):
        ot.apply("hello", [3, {"d": 3}])


def test_apply_accepts_op_reading_exactly_the_whole_document() -> None:
    assert ot.apply("hello", [{"d": 5}]) == ""
    assert ot.apply("", ["new"]) == "new"


def test_apply_rejects_malformed_part() -> None:
    with pytest.raises(InvalidOp):
        ot.apply("hello", [True, "x"])
    with pytest.raises(InvalidOp):
        ot.apply("hello", "not a list")  # type: ignore[arg-type]


def test_apply_accepts_well_formed_non_normalized_op() -> None:
    assert ot.apply("hello", [1, 1, "a", "b", 1]) == "heabllo"


def test_apply_is_fast_on_a_one_mebibyte_document() -> None:
    doc = "x" * (1 << 20)
    op = [1 << 19, "inserted", {"d": 10}]
    started = time.perf_counter()
    for _ in range(20):
        result = ot.apply(doc, op)
    # 20 applies in well under a second: no per-character Python work.
    assert time.perf_counter() - started < 1.0
    assert len(result) == len(doc) + len("inserted") - 10


# --- normalize ---------------------------------------------------------------------------------


def test_normalize_merges_adjacent_parts_of_one_kind() -> None:
    assert ot.normalize([1, 2, "a", "b", {"d": 1}, {"d": 2}, 3, "c"]) == [
        3,
        "ab",
        {"d": 3},
        3,
        "c",
    ]


def test_normalize_drops_trailing_skip() -> None:
    assert ot.normalize([2, "x", 4]) == [2, "x"]
    assert ot.normalize([4]) == []


def test_normalize_keeps_insert_delete_order_as_given() -> None:
    # ot-text-unicode does not reorder inserts and deletes; neither do we.
    assert ot.normalize([{"d": 1}, "a"]) == [{"d": 1}, "a"]
    assert ot.normalize(["a", {"d": 1}, "b"]) == ["a", {"d": 1}, "b"]


def test_normalize_is_idempotent_and_does_not_touch_its_input() -> None:
    op = [1, {"d": 1}, {"d": 1}, "a"]
    snapshot = [1, {"d": 1}, {"d": 1}, "a"]
    once = ot.normalize(op)
    assert op == snapshot
    assert ot.normalize(once) == once
    once[1]["d"] = 99
    assert op == snapshot


def test_normalize_rejects_non_list_op() -> None:
    for bad in ((1, "a"), {"d": 1}, "abc", None, 3):
        with pytest.raises(InvalidOp, match="must be a list"):
            ot.normalize(bad)


def test_normalize_rejects_bool_skip() -> None:
    with pytest.raises(InvalidOp):
        ot.normalize([True, "x"])
    with pytest.raises(InvalidOp):
        ot.normalize([False, "x"])


def test_normalize_rejects_float_skip_even_integral() -> None:
    with pytest.raises(InvalidOp):
        ot.normalize([3.0, "x"])


def test_normalize_rejects_zero_and_negative_skip() -> None:
    with pytest.raises(InvalidOp, match="positive"):
        ot.normalize([0, "x"])
    with pytest.raises(InvalidOp, match="positive"):
        ot.normalize([-1, "x"])


def test_normalize_rejects_empty_insert() -> None:
    with pytest.raises(InvalidOp, match="empty"):
        ot.normalize(["", 1])


def test_normalize_rejects_insert_with_nul() -> None:
    with pytest.raises(InvalidOp, match="NUL"):
        ot.normalize(["a\x00b"])


def test_normalize_rejects_insert_with_lone_surrogate() -> None:
    for text in ("\ud800", "a\udfffb", "\ud83d"):
        with pytest.raises(InvalidOp, match="surrogate"):
            ot.normalize([text])


def test_normalize_rejects_string_delete() -> None:
    # ot-text-unicode's invertible {"d": "text"} form is not part of our protocol.
    with pytest.raises(InvalidOp):
        ot.normalize([{"d": "abc"}])


def test_normalize_rejects_zero_negative_bool_and_float_delete() -> None:
    for count in (0, -2, True, 2.0, None):
        with pytest.raises(InvalidOp):
            ot.normalize([{"d": count}])


def test_normalize_rejects_delete_dict_with_other_keys() -> None:
    for part in ({"d": 1, "x": 1}, {"i": "a"}, {}):
        with pytest.raises(InvalidOp):
            ot.normalize([part])


def test_normalize_rejects_other_part_types() -> None:
    for part in (None, [1], 1.5, b"x"):
        with pytest.raises(InvalidOp):
            ot.normalize([part])


def test_invalid_op_message_is_short_and_names_the_part() -> None:
    with pytest.raises(InvalidOp) as caught:
        ot.normalize([1, "y" * 10_000, ["z" * 10_000]])
    message = str(caught.value)
    assert message.startswith("part 2:")
    assert len(message) < 200


def test_invalid_op_is_a_value_error() -> None:
    assert issubclass(InvalidOp, ValueError)


# --- is_valid_text -----------------------------------------------------------------------------


def test_is_valid_text_accepts_unicode_and_emoji() -> None:
    assert ot.is_valid_text("")
    assert ot.is_valid_text("héllo\n中文 😀𝄞")


def test_is_valid_text_rejects_nul() -> None:
    assert not ot.is_valid_text("a\x00")


def test_is_valid_text_rejects_lone_surrogates() -> None:
    assert not ot.is_valid_text("\ud800")
    assert not ot.is_valid_text("x\udc00y")
    assert not ot.is_valid_text("\udfff")


# --- transform ---------------------------------------------------------------------------------


def test_transform_left_insert_goes_first_at_same_position() -> None:
    assert ot.transform([1, "x"], [1, "y"], "left") == [1, "x"]
    assert ot.transform([1, "x"], [1, "y"], "right") == [2, "x"]


def test_transform_against_insert_before_shifts_by_its_length_in_code_points() -> None:
    assert ot.transform([3, "x"], ["😀😀"], "left") == [5, "x"]


def test_transform_both_deleting_same_text_deletes_it_once() -> None:
    assert ot.transform([1, {"d": 2}], [1, {"d": 2}], "left") == []
    assert ot.transform([{"d": 3}], [1, {"d": 1}], "left") == [{"d": 2}]


def test_transform_insert_inside_deleted_range_survives() -> None:
    assert ot.transform([2, "x"], [{"d": 4}], "left") == ["x"]


def test_transform_rejects_non_normalized_ops() -> None:
    with pytest.raises(InvalidOp, match="not normalized"):
        ot.transform([1, 1, "x"], [], "left")
    with pytest.raises(InvalidOp, match="trailing skip"):
        ot.transform(["x"], [2, "y", 3], "left")


def test_transform_rejects_unknown_side() -> None:
    with pytest.raises(ValueError, match="side"):
        ot.transform([], [], "middle")


# --- compose -----------------------------------------------------------------------------------


def test_compose_delete_of_inserted_text_cancels_out() -> None:
    assert ot.compose([1, "abc"], [1, {"d": 3}]) == []


def test_compose_keeps_first_ops_delete_when_second_skips_over_it() -> None:
    assert ot.compose([{"d": 2}], [1, "x"]) == [{"d": 2}, 1, "x"]


def test_compose_rejects_non_normalized_ops() -> None:
    with pytest.raises(InvalidOp):
        ot.compose([{"d": 1}, {"d": 1}], [])


# --- transform_position ------------------------------------------------------------------------


def test_insert_at_cursor_leaves_it_in_place() -> None:
    assert ot.transform_position(2, [2, "abc"]) == 2


def test_insert_before_cursor_moves_it_right() -> None:
    assert ot.transform_position(2, [1, "abc"]) == 5
    assert ot.transform_position(2, ["😀"]) == 3


def test_cursor_inside_deleted_range_moves_to_its_start() -> None:
    assert ot.transform_position(3, [1, {"d": 4}]) == 1


def test_delete_before_cursor_moves_it_left() -> None:
    assert ot.transform_position(5, [1, {"d": 2}]) == 3


def test_edit_after_cursor_leaves_it_in_place() -> None:
    assert ot.transform_position(1, [3, {"d": 2}, "zz"]) == 1


def test_transform_position_rejects_malformed_op() -> None:
    with pytest.raises(InvalidOp):
        ot.transform_position(1, "abc")  # type: ignore[arg-type]
    with pytest.raises(InvalidOp):
        ot.transform_position(1, [{"d": "x"}])


def test_transform_position_rejects_negative_and_bool_positions() -> None:
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError):
            ot.transform_position(bad, [])  # type: ignore[arg-type]


# --- diff --------------------------------------------------------------------------------------


def test_diff_of_equal_texts_is_empty() -> None:
    assert ot.diff("same", "same") == []
    assert ot.diff("", "") == []


def test_diff_replaces_single_hunk_delete_before_insert() -> None:
    assert ot.diff("hello world", "hello there world") == [6, "there "]
    assert ot.diff("hello", "help me") == [3, {"d": 2}, "p me"]
    assert ot.diff("abc", "") == [{"d": 3}]
    assert ot.diff("", "abc") == ["abc"]


def test_diff_suffix_never_overlaps_prefix() -> None:
    assert ot.diff("aaa", "aaaa") == [3, "a"]
    assert ot.diff("aaaa", "aa") == [2, {"d": 2}]
    assert ot.diff("abab", "ab") == [2, {"d": 2}]


def test_diff_counts_code_points() -> None:
    assert ot.diff("😀a😀", "😀b😀") == [1, {"d": 1}, "b"]


def test_diff_is_fast_on_a_one_mebibyte_document() -> None:
    old = "line of text\n" * 80_000
    new = old[:500_000] + "edit" + old[500_003:]
    started = time.perf_counter()
    op = ot.diff(old, new)
    assert time.perf_counter() - started < 0.5
    assert op == [500_000, {"d": 3}, "edit"]


# --- seeded property fuzzer --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_transform_converges(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(1000):
        doc = random_text(rng, 20)
        a = random_op(rng, len(doc))
        b = random_op(rng, len(doc))
        a2 = ot.transform(a, b, "left")
        b2 = ot.transform(b, a, "right")
        assert ot.normalize(a2) == a2
        assert ot.normalize(b2) == b2
        left = ot.apply(ot.apply(doc, b), a2)
        right = ot.apply(ot.apply(doc, a), b2)
        assert left == right, (doc, a, b)


@pytest.mark.parametrize("seed", range(2))
def test_fuzz_compose_agrees_with_sequential_apply(seed: int) -> None:
    rng = random.Random(2000 + seed)
    for _ in range(1000):
        doc = random_text(rng, 20)
        a = random_op(rng, len(doc))
        mid = ot.apply(doc, a)
        b = random_op(rng, len(mid))
        ab = ot.compose(a, b)
        assert ot.normalize(ab) == ab
        assert ot.apply(doc, ab) == ot.apply(mid, b), (doc, a, b)


@pytest.mark.parametrize("seed", range(2))
def test_fuzz_diff_turns_old_into_new_with_a_normalized_op(seed: int) -> None:
    rng = random.Random(3000 + seed)
    for _ in range(1000):
        old = random_text(rng, 20)
        # Half related edits (the common case), half unrelated texts.
        new = (
            ot.apply(old, random_op(rng, len(old))) if rng.random() < 0.5 else random_text(rng, 20)
        )
        op = ot.diff(old, new)
        assert ot.apply(old, op) == new
        assert ot.normalize(op) == op
        assert (op == []) == (old == new)


@pytest.mark.parametrize("seed", range(2))
def test_fuzz_transform_position_tracks_a_marker_insert(seed: int) -> None:
    # A cursor behaves like a zero-width insert that loses every tie: transforming [p, marker]
    # on the left side against the op must put the marker exactly where the cursor goes.
    marker = "\u2603"
    rng = random.Random(4000 + seed)
    for _ in range(1000):
        doc = random_text(rng, 20)
        op = random_op(rng, len(doc))
        new = ot.apply(doc, op)
        previous = 0
        for position in range(len(doc) + 1):
            moved = ot.transform_position(position, op)
            assert previous <= moved <= len(new)
            previous = moved
            cursor_op = ot.normalize([position, marker]) if position else [marker]
            with_marker = ot.apply(new, ot.transform(cursor_op, op, "left"))
            assert with_marker.index(marker) == moved, (doc, op, position)
