"""rooms/affinity.py: the room a request line names, and the home a room has among slots."""

from __future__ import annotations

import secrets

import pytest

from rooms.affinity import home_of, room_of_request_line


@pytest.mark.parametrize(
    ("line", "room"),
    [
        (b"GET /ws/abc123 HTTP/1.1", "abc123"),
        (b"GET /ws/abc123/ HTTP/1.1", "abc123"),
        (b"GET /ws/abc123?mode=ops&client=x HTTP/1.1", "abc123"),
        (b"GET /ws/abc-_9?name=a/b HTTP/1.1", "abc-_9"),
        (b"GET /ws/ HTTP/1.1", None),  # no room: any worker answers 4404
        (b"GET /ws/a/b HTTP/1.1", None),
        (b"GET /rooms/abc123 HTTP/1.1", None),
        (b"POST /ws/abc123 HTTP/1.1", None),
        (b"GET / HTTP/1.1", None),
        (b"GET /ws/\xff HTTP/1.1", None),
        (b"garbage", None),
        (b"", None),
    ],
)
def test_the_room_of_a_request_line_is_its_websocket_paths_room_id(line, room):
    assert room_of_request_line(line) == room


def test_a_rooms_home_is_the_same_for_every_asker():
    rooms = [secrets.token_urlsafe(16) for _ in range(200)]
    assert [home_of(r, range(4)) for r in rooms] == [home_of(r, [3, 2, 1, 0]) for r in rooms]


def test_rooms_spread_over_every_slot():
    homes = [home_of(secrets.token_urlsafe(16), range(4)) for _ in range(400)]
    # 100 expected per slot; below 50 has a probability far under 1e-9.
    assert all(homes.count(slot) > 50 for slot in range(4)), homes


def test_removing_a_slot_moves_only_the_rooms_whose_home_it_was():
    rooms = [secrets.token_urlsafe(16) for _ in range(400)]
    before = {r: home_of(r, range(4)) for r in rooms}
    after = {r: home_of(r, [0, 1, 3]) for r in rooms}
    for room in rooms:
        if before[room] != 2:
            assert after[room] == before[room], room
        else:
            assert after[room] in (0, 1, 3)


def test_no_slot_is_an_error():
    with pytest.raises(ValueError, match="no slot"):
        home_of("abc", [])
