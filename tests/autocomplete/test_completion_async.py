"""The completion core the WebSocket consumer awaits: budget, fallback, cache, one Jedi thread."""

import asyncio
import concurrent.futures
import threading

import pytest

from autocomplete import completion
from autocomplete.apps import should_warm_up

GATE_TIMEOUT_S = 10  # every wait in these tests is bounded


class GatedJedi:
    """Stands in for Jedi: records its calls and answers only once the test releases it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self, code, line, column, position):
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.started.set()
        if not self.release.wait(timeout=GATE_TIMEOUT_S):
            raise RuntimeError("the test never released Jedi")
        # Named after the prefix, so that it passes the prefix filter like Jedi's own answers.
        label = f"{position.prefix}_from_jedi"
        return (completion.RawItem(label, "function", f"{label}()", completion.SOURCE_FILE),)


def drain_jedi_thread() -> None:
    """Return once every job queued so far on the Jedi thread has finished (it is FIFO)."""
    completion._executor.submit(lambda: None).result(timeout=30)


@pytest.fixture(autouse=True)
def empty_cache():
    completion.clear_cache()
    yield
    completion.clear_cache()


@pytest.fixture
def gated_jedi(monkeypatch):
    gate = GatedJedi()
    # Queue no warm-up on the Jedi thread during these tests (it would call the stand-in too),
    # and let an already running one end before the stand-in goes in.
    if completion._warm is None:
        warmed: concurrent.futures.Future[None] = concurrent.futures.Future()
        warmed.set_result(None)
        monkeypatch.setattr(completion, "_warm", warmed)
    drain_jedi_thread()
    monkeypatch.setattr(completion, "_jedi_completions", gate)
    yield gate
    gate.release.set()
    drain_jedi_thread()


def labels(result: dict) -> list[str]:
    return [item["label"] for item in result["items"]]


async def test_attributes_of_an_imported_module_are_completed_by_jedi():
    result = await asyncio.wait_for(
        completion.complete_in_code(
            cache_key=("r1", 0, 2, 5), code="import os\nos.pa", line=2, column=5, budget=5
        ),
        timeout=30,
    )

    assert {"path", "pardir"} <= set(labels(result))
    assert result["incomplete"] is False
    assert result["query"] == "pa"


@pytest.mark.parametrize(("line", "column"), [(0, 0), (3, 0), (1, -1), (1, 10), (2, 6)])
async def test_a_bad_position_raises_bad_position_a_value_error(line, column):
    with pytest.raises(completion.BadPosition):
        await completion.complete_in_code(
            cache_key=None, code="import os\nos.pa", line=line, column=column
        )
    assert issubclass(completion.BadPosition, ValueError)


async def test_past_the_budget_the_answer_is_the_fallback_marked_incomplete(gated_jedi):
    result = await asyncio.wait_for(
        completion.complete_in_code(
            cache_key=("r1", 0, 2, 1), code="items = []\ni", line=2, column=1, budget=0.01
        ),
        timeout=GATE_TIMEOUT_S,
    )

    assert result["incomplete"] is True
    assert result["query"] == "i"
    assert {"if", "import", "in", "is", "int", "items"} <= set(labels(result))
    assert "i_from_jedi" not in labels(result)


async def test_the_budget_defaults_to_the_setting(gated_jedi, settings):
    settings.AUTOCOMPLETE_BUDGET_S = 0.01

    result = await asyncio.wait_for(
        completion.complete_in_code(cache_key=None, code="i", line=1, column=1),
        timeout=GATE_TIMEOUT_S,
    )

    assert result["incomplete"] is True


async def test_a_late_jedi_answer_still_fills_the_cache(gated_jedi):
    key = ("r1", 0, 1, 1)
    first = await completion.complete_in_code(
        cache_key=key, code="i", line=1, column=1, budget=0.01
    )
    gated_jedi.release.set()
    await asyncio.to_thread(drain_jedi_thread)

    second = await completion.complete_in_code(
        cache_key=key, code="i", line=1, column=1, budget=0.01
    )

    assert first["incomplete"] is True
    assert second["incomplete"] is False
    assert labels(second) == ["i_from_jedi"]
    assert gated_jedi.calls == 1


async def test_a_running_completion_never_blocks_the_event_loop(gated_jedi):
    task = asyncio.create_task(
        completion.complete_in_code(
            cache_key=None, code="i", line=1, column=1, budget=GATE_TIMEOUT_S
        )
    )
    # Jedi is now busy on its own thread, waiting for the gate...
    assert await asyncio.to_thread(gated_jedi.started.wait, GATE_TIMEOUT_S)

    # ...and meanwhile this coroutine keeps running on the loop.
    ticks = 0
    for _ in range(100):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 100
    assert not task.done()

    gated_jedi.release.set()
    result = await asyncio.wait_for(task, timeout=GATE_TIMEOUT_S)
    assert result["incomplete"] is False
    assert labels(result) == ["i_from_jedi"]


async def test_requests_for_one_position_share_one_jedi_job(gated_jedi):
    def ask():
        return completion.complete_in_code(
            cache_key=("r1", 0, 1, 1), code="i", line=1, column=1, budget=GATE_TIMEOUT_S
        )

    tasks = [asyncio.create_task(ask()) for _ in range(3)]
    assert await asyncio.to_thread(gated_jedi.started.wait, GATE_TIMEOUT_S)
    gated_jedi.release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=GATE_TIMEOUT_S)

    assert [labels(r) for r in results] == [["i_from_jedi"]] * 3
    assert gated_jedi.calls == 1


async def test_jedi_runs_on_one_dedicated_thread(gated_jedi):
    gated_jedi.release.set()

    await asyncio.wait_for(
        asyncio.gather(
            *(
                completion.complete_in_code(
                    cache_key=("r1", 0, 1, column), code="ab", line=1, column=column, budget=5
                )
                for column in range(3)
            )
        ),
        timeout=GATE_TIMEOUT_S,
    )

    assert gated_jedi.calls == 3
    assert len(gated_jedi.threads) == 1
    assert threading.get_ident() not in gated_jedi.threads


async def test_when_jedi_is_backed_up_the_fallback_comes_at_once(gated_jedi, monkeypatch):
    monkeypatch.setattr(completion, "MAX_PENDING_JOBS", 1)
    busy = asyncio.create_task(
        completion.complete_in_code(cache_key=None, code="i", line=1, column=1, budget=5)
    )
    assert await asyncio.to_thread(gated_jedi.started.wait, GATE_TIMEOUT_S)

    # A budget far longer than the wait below: only an immediate answer passes.
    result = await asyncio.wait_for(
        completion.complete_in_code(cache_key=None, code="in", line=1, column=2, budget=60),
        timeout=GATE_TIMEOUT_S / 2,
    )

    assert result["incomplete"] is True
    assert "in" in labels(result)
    gated_jedi.release.set()
    await asyncio.wait_for(busy, timeout=GATE_TIMEOUT_S)
    assert gated_jedi.calls == 1


async def test_the_sync_variant_gives_the_same_answer(gated_jedi):
    gated_jedi.release.set()
    arguments = {"cache_key": None, "code": "x = 1\nx", "line": 2, "column": 1, "budget": 5}

    from_async = await completion.complete_in_code(**arguments)
    from_sync = await asyncio.to_thread(lambda: completion.complete_in_code_sync(**arguments))

    assert from_sync == from_async


async def test_the_same_position_in_other_code_is_not_served_from_the_cache(gated_jedi):
    # A room deleted and created again restarts at version 0 under the same id.
    gated_jedi.release.set()
    key = ("r1", 0, 1, 1)
    await completion.complete_in_code(cache_key=key, code="a", line=1, column=1, budget=5)

    await completion.complete_in_code(cache_key=key, code="b", line=1, column=1, budget=5)

    assert gated_jedi.calls == 2


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["manage.py", "migrate"], {}, False),
        (["manage.py", "makemigrations", "rooms"], {}, False),
        (["manage.py", "runserver"], {}, False),  # the autoreloader's watcher process
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, True),
        (["manage.py", "runserver", "--noreload"], {}, True),
        (["/venv/bin/daphne", "collabsite.asgi:application"], {}, True),
        (["/venv/bin/uvicorn", "collabsite.asgi:application"], {}, True),
        (["manage.py", "serve"], {}, True),
        (["manage.py", "serve", "--workers", "1"], {}, True),
        # With several workers the launcher only routes connections; its workers serve.
        (["manage.py", "serve", "--workers", "2"], {}, False),
        (["manage.py", "serve", "--workers=4"], {}, False),
        (["manage.py", "serve", "--worker-channel", "5"], {}, True),
    ],
)
def test_jedi_warms_up_at_start_for_servers_only(argv, environ, expected):
    assert should_warm_up(argv, environ, under_pytest=False) is expected


def test_tests_do_not_warm_up_at_start_unless_asked(settings):
    assert should_warm_up(["daphne"], {}, under_pytest=True) is False

    settings.AUTOCOMPLETE_WARM_UP = True
    assert should_warm_up(["manage.py", "migrate"], {}, under_pytest=True) is True
