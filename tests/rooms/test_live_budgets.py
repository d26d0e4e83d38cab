"""A live room's memory budget (rooms/live.py): its recent changes are bounded in bytes as well
as in count (docs/deploying.md, "Memory and storage budgets")."""

from __future__ import annotations

from rooms import live as live_module
from rooms.changes import Change
from rooms.live import LiveRoom

MIB = 1024 * 1024


def rewrite(live: LiveRoom, text: str) -> None:
    """Commit-free: apply a change that replaces the whole text, as a room's head would."""
    op = [{"d": len(live.text)}, text] if live.text else [text]
    live.advance(Change(live.version + 1, op, "u", "c", None, 0))


async def test_recent_changes_of_large_rewrites_stay_within_the_byte_budget(settings):
    settings.COLLAB_RECENT_CHANGES_BYTES = 4 * MIB
    live = LiveRoom("r", "", "", 0)
    for number in range(40):
        rewrite(live, chr(ord("a") + number % 26) * 512_000)
    assert live.recent_bytes <= 4 * MIB
    assert sum(change.memory_bytes for change in live.recent) == live.recent_bytes
    # Each change holds about 1.5 MB (its insert, its encoded frame and its inverse, which holds
    # the text it deleted): two fit in 4 MiB.
    assert [change.version for change in live.recent] == [39, 40]


async def test_the_newest_change_is_kept_whatever_its_size(settings):
    settings.COLLAB_RECENT_CHANGES_BYTES = 1000
    live = LiveRoom("r", "", "", 0)
    rewrite(live, "x" * 100_000)
    rewrite(live, "y" * 100_000)
    assert [change.version for change in live.recent] == [2]


async def test_small_changes_are_still_bounded_by_count():
    live = LiveRoom("r", "", "", 0)
    for number in range(live_module.RECENT_CHANGES_KEPT + 5):
        live.advance(Change(live.version + 1, [str(number % 10)], "u", "c", None, 0))
    assert len(live.recent) == live_module.RECENT_CHANGES_KEPT
    assert live.recent[0].version == 6


async def test_text_backlog_counts_the_whole_text_of_every_version_after():
    live = LiveRoom("r", "", "ab", 0)
    live.advance(Change(1, [2, "c"], "u", "c", None, 0))  # "abc"
    live.advance(Change(2, [3, "de"], "u", "c", None, 0))  # "abcde"
    assert live.text_backlog(0) == 3 + 5
    assert live.text_backlog(1) == 5
    assert live.text_backlog(-1) is None  # before what memory holds
