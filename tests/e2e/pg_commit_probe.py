"""A process that commits through rooms/document.py on PostgreSQL, for tests/e2e/test_pg_commits.py.

Run as `python -m tests.e2e.pg_commit_probe SCENARIO ...` with DATABASE_URL pointing at a
migrated database (and no REDIS_URL: this process hears of other processes' changes only when
its commits lose the race, the hardest case for fairness). It prints one JSON line per event:
{"ready": ...} when set up, then waits for a line on stdin before it starts (so several probes
start together), and ends with {"result": ...}.

Scenarios:
  create                        create a room; the result is its id.
  hammer ROOM_ID TOTAL WRITERS  WRITERS concurrent submitters type into one room until its
                                version reaches TOTAL; the result counts this process's commits
                                and its longest wait for one.
  race CHANGES                  this process submits CHANGES changes to a room one after the
                                other while another connection commits to it as fast as it
                                can; the result has the versions of both.
  deadlock rooms                two rooms; a change of each is submitted together while
                                another connection holds the second room's row and then
                                asks for the first's.
  deadlock author               one room; a change naming its author is submitted while
                                another connection holds that author's row and then asks for
                                the room's: PostgreSQL breaks the deadlock by rolling ours back.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def hammer(room_id: str, total: int, writers: int) -> dict:
    from rooms import document
    from rooms.live import live_rooms

    live = await live_rooms.acquire(room_id)
    emit(ready=True)
    await asyncio.to_thread(sys.stdin.readline)
    commits = 0
    longest = 0.0
    waits: list[float] = []
    began = time.monotonic()
    errors: list[str] = []

    async def writer(number: int) -> None:
        nonlocal commits, longest
        typed = 0
        while live.version < total:
            typed += 1
            started = time.monotonic()
            try:
                await document.change_submit(
                    live,
                    base_version=None,
                    op=[f"<{os.getpid()}.{number}.{typed}>"],
                    user=f"u{number}",
                    client=f"p{os.getpid()}w{number}",
                    seq=typed,
                )
            except Exception as error:  # reported, and the test fails on it
                errors.append(f"{type(error).__name__}: {error}")
                return
            longest = max(longest, time.monotonic() - started)
            waits.append(time.monotonic() - started)
            commits += 1

    await asyncio.gather(*(writer(n) for n in range(writers)))
    waits.sort()
    return {
        "commits": commits,
        "longest_wait_s": round(longest, 3),
        "median_wait_s": round(waits[len(waits) // 2], 4) if waits else None,
        "elapsed_s": round(time.monotonic() - began, 2),
        "errors": errors,
    }


async def race(changes: int) -> dict:
    import psycopg
    from asgiref.sync import sync_to_async
    from django.db import connection

    from rooms import document, metrics
    from rooms.live import live_rooms

    room = await sync_to_async(document.room_create)()
    live = await live_rooms.acquire(room.id)
    emit(ready=True)
    await asyncio.to_thread(sys.stdin.readline)
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    stop = threading.Event()
    theirs: list[int] = []

    def other_process() -> None:
        # Commits as a process of the old kind would: read the head, write the next version
        # if nobody else did meanwhile; as fast as the database allows.
        with psycopg.connect(**params, autocommit=True) as other:
            while not stop.is_set() and len(theirs) < 5000:
                with other.transaction():
                    (head,) = other.execute(
                        "SELECT version FROM rooms_room WHERE id = %s", (room.id,)
                    ).fetchone()
                    advanced = other.execute(
                        "UPDATE rooms_room SET version = %s, history_bytes = history_bytes + 1"
                        " WHERE id = %s AND version = %s RETURNING id",
                        (head + 1, room.id, head),
                    ).fetchone()
                    if advanced is None:
                        continue
                    other.execute(
                        'INSERT INTO rooms_op (room_id, version, op, "user", client, ts)'
                        " VALUES (%s, %s, '[\"a\"]', 'other', 'other', 0)",
                        (room.id, head + 1),
                    )
                theirs.append(head + 1)

    thread = threading.Thread(target=other_process)
    thread.start()
    ours = []
    try:
        for number in range(1, changes + 1):
            result = await document.change_submit(
                live, base_version=None, op=["b"], user="u", client="ours", seq=number
            )
            ours.append(result.version)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 60)
    return {
        "ours": ours,
        "theirs": theirs,
        "room": room.id,
        "text": live.text,
        "conflicts": metrics.registry.get_sample_value("collab_version_conflicts_total"),
    }


async def deadlock(kind: str) -> dict:
    import psycopg
    from asgiref.sync import sync_to_async
    from django.db import connection

    from rooms import document, metrics
    from rooms.live import live_rooms

    first, second = [await sync_to_async(document.room_create)() for _ in range(2)]
    rooms = (first, second) if kind == "rooms" else (first,)
    lives = [await live_rooms.acquire(room.id) for room in rooms]
    emit(ready=True)
    await asyncio.to_thread(sys.stdin.readline)
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    other = psycopg.connect(**params)
    # Ours breaks a deadlock (its check runs first): our transaction is the one rolled back.
    other.execute("SET deadlock_timeout = '20s'")
    if kind == "rooms":
        # Holds the second room's row, then asks for the first's.
        other.execute("UPDATE rooms_room SET name = 'held' WHERE id = %s", (second.id,))
    else:
        # Holds the author row our change writes, then asks for the room's row.
        other.execute(
            "INSERT INTO rooms_author (room_id, client, name, updated_at)"
            " VALUES (%s, 'c', 'theirs', now())",
            (first.id,),
        )
    other_pid = other.info.backend_pid

    submits = asyncio.gather(
        *(
            document.change_submit(
                live, base_version=0, op=["x"], user="u", client="c", author_name="ours"
            )
            for live in lives
        ),
        return_exceptions=True,
    )

    def waiting() -> bool:
        with psycopg.connect(**params, autocommit=True) as probe:
            rows = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND pid <> %s AND datname = current_database()",
                (other_pid,),
            ).fetchall()
            return rows[0][0] > 0

    # Bounded: ours asks for what the other holds within a moment of being submitted.
    task = asyncio.ensure_future(submits)
    deadline = time.monotonic() + 20
    while not await asyncio.to_thread(waiting):
        if task.done() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)

    def close_the_circle() -> str:
        try:
            other.execute("UPDATE rooms_room SET name = 'held' WHERE id = %s", (first.id,))
            other.commit()
            return "committed"
        except psycopg.Error as error:
            other.rollback()
            return f"{type(error).__name__}"
        finally:
            other.close()

    circle = threading.Thread(target=lambda: results.append(close_the_circle()))
    results: list[str] = []
    circle.start()
    outcomes = await asyncio.wait_for(task, 60)
    await asyncio.to_thread(circle.join, 60)
    return {
        "outcomes": [
            r.version if not isinstance(r, BaseException) else f"{type(r).__name__}: {r}"
            for r in outcomes
        ],
        "other": results,
        "rooms": [room.id for room in rooms],
        "retries": metrics.registry.get_sample_value("collab_commit_retries_total"),
    }


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collabsite.settings")
    import django

    django.setup()
    scenario, *args = sys.argv[1:]
    if scenario == "create":
        from rooms import document

        result = document.room_create().id
    elif scenario == "hammer":
        room_id, total, writers = args[0], int(args[1]), int(args[2])
        result = asyncio.run(hammer(room_id, total, writers))
    elif scenario == "race":
        result = asyncio.run(race(int(args[0])))
    elif scenario == "deadlock":
        result = asyncio.run(deadlock(args[0]))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    emit(result=result)


if __name__ == "__main__":
    main()
