"""rooms/history/authorship.py: who wrote each character and who last touched each line, kept one
change at a time (pure: no database)."""

from __future__ import annotations

import random

from rooms import ot
from rooms.history.authorship import COMPACT_AUTHORS_AT, Authorship, line_blame


def authors_per_character(authorship: Authorship) -> list[str]:
    return [authorship.authors[who] for length, who in authorship.runs() for _ in range(length)]


def line_records(authorship: Authorship) -> list[tuple[int, str]]:
    """(version, author) of the last change of each line."""
    return [(version, authorship.authors[who]) for version, who, _ in authorship.lines()]


class Room:
    """A text and its authorship, changed together the way a live room changes them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.authorship = Authorship.initial(text, ts=0)
        self.version = 0

    def edit(self, op: list, author: str) -> Room:
        op = ot.normalize([part for part in op if part != 0])
        self.version += 1
        self.authorship.apply(self.text, op, author=author, version=self.version, ts=self.version)
        self.text = ot.apply(self.text, op)
        return self

    def lines(self) -> list[tuple[int, str]]:
        return line_records(self.authorship)


def random_op(rng: random.Random, text: str) -> list:
    """A few skips, deletes and inserts (line breaks and emoji included) anywhere in `text`."""
    op: list = []
    position = 0
    for _ in range(rng.randint(1, 3)):
        skip = rng.randint(0, max(0, (len(text) - position) // 2))
        if skip:
            op.append(skip)
            position += skip
        if position < len(text) and rng.random() < 0.4:
            deleted = rng.randint(1, min(len(text) - position, 9))
            op.append({"d": deleted})
            position += deleted
        if rng.random() < 0.8:
            op.append(rng.choice(["a", "\n", "bc\nd", "😀", "\n\n", "xy", "q\n"]))
    return op


def test_every_character_is_its_inserters_under_random_edits():
    """Against the obvious model: one author per character, moved by each op."""
    for seed in range(60):
        rng = random.Random(seed)
        room = Room(rng.choice(["", "abc", "a\nb\n", "x\ny\nz"]))
        model = [""] * len(room.text)
        for _ in range(150):
            op = ot.normalize(random_op(rng, room.text))
            author = rng.choice(["alice", "bob", "carol"])
            moved, position = [], 0
            for part in op:
                if type(part) is int:
                    moved += model[position : position + part]
                    position += part
                elif type(part) is str:
                    moved += [author] * len(part)
                else:
                    position += part["d"]
            model = moved + model[position:]
            room.edit(op, author)
            assert authors_per_character(room.authorship) == model, seed
            assert len(room.authorship.versions) == room.text.count("\n") + 1


def test_encoding_is_canonical_and_round_trips():
    """The same history encodes the same, however the object got there: straight through, or
    reloaded from its encoding halfway (other internal indices, other blocks), as a process that
    loads the room from a copy does."""
    rng = random.Random(7)
    history, text = [], "start\n"
    for _ in range(400):
        op = ot.normalize(random_op(rng, text))
        history.append((text, op, rng.choice(["a", "b", "c", "d"])))
        text = ot.apply(text, op)
    straight = Authorship.initial("start\n", ts=0)
    reloaded = Authorship.initial("start\n", ts=0)
    for version, (before, op, author) in enumerate(history, start=1):
        straight.apply(before, op, author=author, version=version, ts=version)
        reloaded.apply(before, op, author=author, version=version, ts=version)
        if version % 50 == 0:
            reloaded = Authorship.from_json(reloaded.to_json())
    assert reloaded.encode() == straight.encode()
    assert Authorship.decode(straight.encode()).encode() == straight.encode()
    assert authors_per_character(reloaded) == authors_per_character(straight)


def test_authors_no_longer_in_the_text_are_dropped_from_the_encoding():
    room = Room("").edit(["gone"], "ghost").edit([{"d": 4}, "kept"], "stays")
    assert room.authorship.encode()["authors"] == ["", "stays"]


def test_typing_on_a_line_touches_only_that_line():
    room = Room("one\ntwo\nthree\n").edit([5, "X"], "bob")
    assert room.lines() == [(0, ""), (1, "bob"), (0, ""), (0, "")]


def test_enter_at_the_end_of_a_line_leaves_it_and_adds_a_new_one():
    room = Room("one\ntwo\n").edit([3, "\n"], "bob")
    assert room.text == "one\n\ntwo\n"
    assert room.lines() == [(0, ""), (1, "bob"), (0, ""), (0, "")]


def test_enter_at_the_start_of_a_line_adds_a_new_one_above_it():
    room = Room("one\ntwo\n").edit([4, "\n"], "bob")
    assert room.text == "one\n\ntwo\n"
    assert room.lines() == [(0, ""), (1, "bob"), (0, ""), (0, "")]


def test_splitting_a_line_in_the_middle_touches_both_halves():
    room = Room("onetwo\n").edit([3, "\n"], "bob")
    assert room.lines() == [(1, "bob"), (1, "bob"), (0, "")]


def test_deleting_whole_lines_leaves_their_neighbours_alone():
    room = Room("a\nb\nc\nd").edit([2, {"d": 4}], "bob")  # "b\nc\n"
    assert room.text == "a\nd"
    assert room.lines() == [(0, ""), (0, "")]
    room = Room("a\nb\nc\nd").edit([1, {"d": 4}], "bob")  # "\nb\nc"
    assert room.text == "a\nd"
    assert room.lines() == [(0, ""), (0, "")]


def test_joining_two_lines_touches_the_joined_line():
    room = Room("ab\ncd\n").edit([1, {"d": 3}], "bob")  # "b\nc"
    assert room.text == "ad\n"
    assert room.lines() == [(1, "bob"), (0, "")]


def test_a_pasted_block_touches_exactly_its_own_lines():
    room = Room("top\nbottom\n").edit([4, "x = 1\ny = 2\n"], "bob")
    assert room.lines() == [(0, ""), (1, "bob"), (1, "bob"), (0, ""), (0, "")]


def test_two_edits_of_one_op_on_one_line_touch_it_once():
    room = Room("abcdef\nnext\n").edit([1, "X", 3, "Y"], "bob")
    assert room.text == "aXbcdYef\nnext\n"
    assert room.lines() == [(1, "bob"), (0, ""), (0, "")]


def test_a_no_op_change_touches_nothing():
    room = Room("abc\n").edit([], "bob")
    assert room.lines() == [(0, ""), (0, "")]


def test_later_changes_win_and_earlier_lines_keep_theirs():
    room = Room("").edit(["def f():\n    return 1\n"], "alice").edit([13, {"d": 8}, "pass"], "bob")
    assert room.text == "def f():\n    pass\n"
    # The room's one empty line is still its last one: nothing was written on it.
    assert room.lines() == [(1, "alice"), (2, "bob"), (0, "")]


def test_blame_users_are_the_authors_of_the_lines_characters():
    room = Room("ab\ncd").edit([1, "XY"], "bob").edit([7, "\n"], "carol")
    assert room.text == "aXYb\ncd\n"
    blamed = line_blame(room.text, room.authorship)
    # Nobody's text (the room's initial one) is left out; an empty line has no characters, but
    # the change that made it touched it.
    authors = room.authorship.authors
    assert [([authors[who] for who in users], version) for users, version, *_ in blamed] == [
        (["bob"], 1),
        ([], 0),
        ([], 2),
    ]


def test_blame_lists_every_author_of_a_line_in_order():
    room = (
        Room("").edit(["hello world\n"], "alice").edit([6, "big "], "bob").edit([0, "> "], "carol")
    )
    (users, version, last, _), _ = line_blame(room.text, room.authorship)
    assert [room.authorship.authors[who] for who in users] == ["carol", "alice", "bob"]
    assert (version, room.authorship.authors[last]) == (3, "carol")


def test_many_authors_at_random_places_stay_consistent_across_blocks():
    """Enough runs for many blocks; edits at random places, deletes spanning blocks."""
    rng = random.Random(3)
    room = Room("".join(f"line {n}\n" for n in range(300)))
    model = [""] * len(room.text)
    for number in range(2000):
        position = rng.randint(0, len(room.text))
        if rng.random() < 0.2 and position < len(room.text):
            deleted = rng.randint(1, min(6, len(room.text) - position))
            op = [position, {"d": deleted}]
            del model[position : position + deleted]
        else:
            op = [position, "ab"]
            model[position:position] = [f"u{number % 7}"] * 2
        room.edit(op, f"u{number % 7}")
    assert authors_per_character(room.authorship) == model
    assert len(room.authorship._blocks) > 3


def test_authors_who_left_no_trace_do_not_pile_up_in_memory():
    """Thousands of short-lived clients (e.g. text-mode bots reconnecting) each edit once and
    their text is replaced: the author table stays the size of what the text still uses."""
    room = Room("x\n")
    for number in range(5000):
        room.edit([{"d": len(room.text)}, f"bot {number}\n"], f"bot-client-{number}")
    assert len(room.authorship.authors) <= 2 * COMPACT_AUTHORS_AT
    assert authors_per_character(room.authorship) == [f"bot-client-{4999}"] * len(room.text)
    assert room.authorship.encode()["authors"] == ["", "bot-client-4999"]
