"""Completion for the shared Python file: everything between "text and a cursor" and "ranked items".

This module owns:

- the keyword contract (`keyword_suggestions`): `sorted(k for k in keyword.kwlist if
  k.startswith(query))`, precomputed for every prefix so the answer is one dict lookup;
- context-free items (`items_without_context`): keywords and builtins, also precomputed;
- Jedi: one dedicated worker thread, a sandboxed import path, a warm-up off the request path,
  a time budget per request, and a bounded LRU cache of results;
- the fallback when the budget runs out: keywords, builtins and the names found in the file;
- ranking and the item shape (`label`, `kind`, `detail`, `insert_text`, `sort_text`).

Callers (the REST view, the WebSocket consumer) only validate transport input and load the room's
text, then call `complete_in_code` (async, never blocks the event loop) or
`complete_in_code_sync` (same core, blocks the calling thread up to the budget).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import gc
import inspect
import keyword
import logging
import re
import sys
import sysconfig
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from django.conf import settings

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 0.2
# Until the warm-up's first Jedi call has finished, a request waits up to this long for it (once
# per process), so the first answer after start-up is Jedi's rather than the fallback.
DEFAULT_COLD_WAIT_S = 10.0
CACHE_SIZE = 256  # entries of at most MAX_RAW_ITEMS small tuples each: a few MB at worst
MAX_PENDING_JOBS = 8  # queued + running Jedi jobs; past it, answer from the fallback at once
MAX_ITEMS = 500  # items in one answer; the ranking puts the rarest last, so they go first
MAX_RAW_ITEMS = 2000  # Jedi results kept per cached position (a query may still filter them)
SIGNATURE_LIMIT = 40  # signatures are the slow part of a Jedi answer: only for the top items
MAX_DETAIL_CHARS = 200
_WORD_WINDOW = 256  # identifiers longer than this are truncated when finding the prefix

# Ranking tiers for where a name comes from: the file and the language itself before the rest.
SOURCE_FILE = 0
SOURCE_LANGUAGE = 1  # keywords and builtins
SOURCE_OTHER = 2  # module members, imported names, ...


class BadPosition(ValueError):
    """The line/column does not point into the code (1-based line, 0-based column)."""


class CompletionItem(TypedDict):
    label: str
    kind: str
    detail: str
    insert_text: str
    sort_text: str


class RawItem(NamedTuple):
    """A candidate before ranking; what the cache stores (ranking depends on the query)."""

    label: str
    kind: str
    detail: str
    source: int


class Position(NamedTuple):
    prefix: str  # identifier characters just before the cursor
    word: str  # the whole identifier the cursor is in (prefix + the rest of it)
    after_dot: bool  # the prefix follows a "." (attribute access): no keywords or builtins


# --- keywords and builtins (precomputed at import: the context-free path is a dict lookup) ---

KEYWORDS: tuple[str, ...] = tuple(sorted(keyword.kwlist))


def _prefix_table(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Every prefix of every name (and "") -> the sorted names starting with it."""
    table: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        for end in range(len(name) + 1):
            table.setdefault(name[:end], []).append(name)
    return {prefix: tuple(found) for prefix, found in table.items()}


# A query that is not a key here is a prefix of no keyword: its answer is empty.
_KEYWORDS_BY_PREFIX = _prefix_table(KEYWORDS)


def keyword_suggestions(query: str) -> list[str]:
    """The keyword contract: `sorted(k for k in keyword.kwlist if k.startswith(query))`."""
    return list(_KEYWORDS_BY_PREFIX.get(query, ()))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def _builtin_raw_item(name: str) -> RawItem:
    value = getattr(builtins, name)
    if isinstance(value, type):
        return RawItem(name, "class", f"class {name}", SOURCE_LANGUAGE)
    if callable(value):
        try:
            detail = f"{name}{inspect.signature(value)}"
        except (TypeError, ValueError):
            # Many C builtins carry no signature, but their docstring opens with one.
            first_line = (value.__doc__ or "").strip().partition("\n")[0]
            detail = first_line if first_line.startswith(f"{name}(") else f"def {name}"
        return RawItem(name, "function", _clip(detail), SOURCE_LANGUAGE)
    return RawItem(name, "constant", f"instance {type(value).__name__}", SOURCE_LANGUAGE)


_KEYWORD_RAW = tuple(RawItem(k, "keyword", "keyword", SOURCE_LANGUAGE) for k in KEYWORDS)
# True/False/None are both keywords and builtins; they are offered once, as keywords.
_BUILTIN_RAW = tuple(
    _builtin_raw_item(name) for name in sorted(dir(builtins)) if name not in keyword.kwlist
)
_REAL_BUILTINS = frozenset(dir(builtins))
_LANGUAGE_RAW = {item.label: item for item in (*_KEYWORD_RAW, *_BUILTIN_RAW)}


# --- ranking and the item shape ---


def _privacy(label: str) -> int:
    if label.startswith("__"):
        return 2  # dunders: needed, but rarely what one is typing
    if label.startswith("_"):
        return 1
    return 0


def rank(raw: Iterable[RawItem], prefix: str, limit: int = MAX_ITEMS) -> list[CompletionItem]:
    """Order candidates and shape them as items; duplicates keep their best-ranked copy.

    Order: names starting with `prefix` exactly (case-sensitive) first, then public before
    `_private` before `__dunder__`, then names from the file, then keywords and builtins, then
    everything else; alphabetical (case-insensitive) within a tier.
    """

    def key(item: RawItem) -> tuple[bool, int, int, str, str]:
        label = item.label
        return (
            not label.startswith(prefix),
            _privacy(label),
            item.source,
            label.lower(),
            label,
        )

    items: list[CompletionItem] = []
    seen: set[str] = set()
    for item in sorted(raw, key=key):
        if item.label in seen:
            continue
        seen.add(item.label)
        items.append(
            {
                "label": item.label,
                "kind": item.kind,
                "detail": item.detail,
                "insert_text": item.label,
                # The list order, as text: editors sort by it and keep ours.
                "sort_text": f"{len(items):04d}",
            }
        )
        if len(items) >= limit:
            break
    return items


def _matching(raw: Iterable[RawItem], prefix: str) -> list[RawItem]:
    # Case-insensitive like Jedi's own matching; the ranking puts exact-case matches first.
    lowered = prefix.lower()
    return [item for item in raw if item.label.lower().startswith(lowered)]


def _language_items_table() -> dict[str, tuple[CompletionItem, ...]]:
    table: dict[str, tuple[CompletionItem, ...]] = {}
    for prefix in _prefix_table(_LANGUAGE_RAW):
        # Case-sensitive, like the keyword contract next to it in the same answer.
        matches = [item for label, item in _LANGUAGE_RAW.items() if label.startswith(prefix)]
        table[prefix] = tuple(rank(matches, prefix))
    return table


# Keyed by exact prefix; only the prefixes of keyword/builtin names have a non-empty answer.
_LANGUAGE_ITEMS_BY_PREFIX = _language_items_table()


def items_without_context(query: str) -> list[CompletionItem]:
    """Items when there is no file: keywords and builtins whose name starts with `query`
    (case-sensitive)."""
    # Copies: the precomputed items are shared by every request.
    return [CompletionItem(**item) for item in _LANGUAGE_ITEMS_BY_PREFIX.get(query, ())]


# --- positions ---

# Jedi (parso) splits lines on \n, \r\n and \r; counting the same way keeps positions in step.
_LINE_BREAK = re.compile(r"\n|\r\n|\r")


def _is_name_char(char: str) -> bool:
    return char == "_" or char.isalnum()


def locate(code: str, line: int, column: int) -> Position:
    """Check a 1-based line and 0-based column (code points) and read the name at the cursor.

    Raises BadPosition when the position is not inside the code. Splits only up to the line
    asked for, so the cost follows the position rather than the file size.
    """
    if type(line) is not int or type(column) is not int:
        raise BadPosition("line and column must be integers")
    if line < 1:
        raise BadPosition("line must be 1 or more (lines count from 1)")
    if column < 0:
        raise BadPosition("column must be 0 or more (columns count from 0)")
    # A text of n characters has at most n + 1 lines; this also keeps maxsplit in range.
    if line > len(code) + 1:
        raise BadPosition(f"line {line} is past the last line")
    # With maxsplit=line the first `line` parts are whole lines; the rest of the file stays in
    # one last part that is never looked at. str.split is 6x the regex's speed (measured:
    # 32 µs against 195 µs at line 988), and exact when there is no \r.
    parts = _LINE_BREAK.split(code, maxsplit=line) if "\r" in code else code.split("\n", line)
    if len(parts) < line:
        raise BadPosition(f"line {line} is past the last line ({len(parts)})")
    text = parts[line - 1]
    if column > len(text):
        raise BadPosition(f"column {column} is past the end of line {line} ({len(text)})")

    start = column
    floor = max(0, column - _WORD_WINDOW)
    while start > floor and _is_name_char(text[start - 1]):
        start -= 1
    end = column
    ceiling = min(len(text), column + _WORD_WINDOW)
    while end < ceiling and _is_name_char(text[end]):
        end += 1
    prefix = text[start:column]
    if prefix[:1].isdigit():
        # "12" or "0x1f" is a number being typed, not a name.
        return Position("", "", False)
    after_dot = start > 0 and text[start - 1] == "."
    return Position(prefix, text[start:end], after_dot)


# --- names in the file (the fallback when Jedi is late) ---

_NAME = re.compile(r"[^\W\d]\w*")
_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+)?(def|class)[ \t]+([^\W\d]\w*)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.MULTILINE)
_ASSIGNMENT = re.compile(r"^[ \t]*([^\W\d]\w*)[ \t]*(?::[^=\n]*)?=(?!=)", re.MULTILINE)


@lru_cache(maxsize=8)
def _names_in_file(code: str) -> tuple[dict[str, str], Counter[str]]:
    """(kind of each defined name, count of every word). Cached: the same text comes back for
    each request at one version. Regexes, not a parser: the file is usually mid-edit."""
    kinds: dict[str, str] = {}
    for match in _ASSIGNMENT.finditer(code):
        kinds.setdefault(match.group(1), "variable")
    for match in _IMPORT.finditer(code):
        for part in match.group(1).split(","):
            words = part.split()
            if not words:
                continue
            # `import a.b` binds `a`; `import a.b as c` binds `c`.
            name = words[2] if len(words) >= 3 and words[1] == "as" else words[0].split(".")[0]
            kinds[name] = "module"
    for match in _DEFINITION.finditer(code):
        kinds[match.group(2)] = "function" if match.group(1) == "def" else "class"
    return kinds, Counter(_NAME.findall(code))


_KIND_DETAIL = {
    "function": "function in this file",
    "class": "class in this file",
    "module": "module imported in this file",
    "variable": "variable in this file",
}


def fallback_items_raw(code: str, position: Position, prefix: str) -> list[RawItem]:
    """Candidates without Jedi: keywords, builtins (unless after a dot) and names in the file."""
    kinds, counts = _names_in_file(code)
    raw: list[RawItem] = []
    if not position.after_dot:
        raw.extend(_LANGUAGE_RAW.values())
    for name, count in counts.items():
        # The word being typed is not a suggestion for itself unless it also appears elsewhere.
        if (name == position.word and count == 1) or keyword.iskeyword(name):
            continue
        kind = kinds.get(name, "text")
        raw.append(RawItem(name, kind, _KIND_DETAIL.get(kind, "word in this file"), SOURCE_FILE))
    return _matching(raw, prefix)


# --- Jedi: one worker thread, sandboxed, warmed, budgeted, cached ---

# Jedi keeps shared inference state and is not safe across concurrent calls: every Jedi call,
# including reading signatures off its results, runs on this one thread.
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="jedi")
_lock = threading.Lock()  # guards the cache, the in-flight table and the warm-up future
_cache: OrderedDict[Hashable, tuple[RawItem, ...]] = OrderedDict()
_inflight: dict[Hashable, concurrent.futures.Future[tuple[RawItem, ...]]] = {}
_pending = 0
_warm: concurrent.futures.Future[None] | None = None
_sandbox: tempfile.TemporaryDirectory[str] | None = None  # Jedi's project root, see _project()

_JEDI_KINDS = {
    "module": "module",
    "class": "class",
    "instance": "variable",
    "function": "function",
    "param": "variable",
    "keyword": "keyword",
    "property": "property",
    "statement": "variable",
}


def budget_s() -> float:
    return float(getattr(settings, "AUTOCOMPLETE_BUDGET_S", DEFAULT_BUDGET_S))


def cold_wait_s() -> float:
    return float(getattr(settings, "AUTOCOMPLETE_COLD_WAIT_S", DEFAULT_COLD_WAIT_S))


def _library_paths() -> list[str]:
    """The interpreter's own library folders (stdlib, lib-dynload, site-packages) only.

    Jedi would otherwise search the server's working directory and sys.path[0]: a user could
    complete `from collabsite.settings import SE` and read our source lines in `detail`.
    """
    roots = {
        Path(path)
        for name in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_path(name))
    }
    kept: list[str] = []
    for entry in sys.path:
        if entry and any(Path(entry) == r or r in Path(entry).parents for r in roots):
            kept.append(entry)
    return list(dict.fromkeys(kept))


@lru_cache(maxsize=1)
def _project() -> Any:
    import jedi  # here, not at module import: `migrate` and the keyword path never pay for it

    # An empty folder of our own as the project root: Jedi scans the project for call sites of
    # functions (dynamic params), and there must be nothing of ours to find. Kept referenced
    # here so that it is removed when the process exits, not before.
    global _sandbox
    _sandbox = tempfile.TemporaryDirectory(prefix="autocomplete-jedi-")
    return jedi.Project(_sandbox.name, sys_path=_library_paths(), smart_sys_path=False)


def _source_of(completion: Any) -> int:
    if completion.type == "keyword":
        return SOURCE_LANGUAGE
    if completion.module_path is None and completion.module_name == "__main__":
        return SOURCE_FILE
    if completion.in_builtin_module():
        return SOURCE_LANGUAGE
    return SOURCE_OTHER


def _jedi_completions(code: str, line: int, column: int, position: Position) -> tuple[RawItem, ...]:
    """Jedi's completions at the position. Runs on the Jedi thread only."""
    import jedi

    script = jedi.Script(code, project=_project())
    # Jedi re-checks which `if` branches are reachable for every name it offers (the sys.platform
    # tests all over the os stubs): measured here, `os.pa` costs 195 ms with it and 21 ms
    # without, for the same names. Jedi turns it off itself for reference search. Private
    # attribute, hence the guard: a Jedi without it just runs slower.
    state = getattr(script, "_inference_state", None)
    if state is not None and hasattr(state, "flow_analysis_enabled"):
        state.flow_analysis_enabled = False
    found = script.complete(line, column)
    candidates: list[tuple[RawItem, Any]] = []
    for completion in found[:MAX_RAW_ITEMS]:
        if completion.type == "path":
            continue  # file names from inside string literals: the server's disk, never offered
        label = completion.name_with_symbols  # "sep=" for keyword arguments
        source = _source_of(completion)
        if (
            source == SOURCE_LANGUAGE
            and not position.after_dot
            and completion.type != "keyword"
            and completion.name not in _REAL_BUILTINS
        ):
            # Names Jedi's builtins stub imports for itself (AbstractSet, ellipsis, and
            # WindowsError off Windows) would be a NameError at run time.
            continue
        kind = _JEDI_KINDS.get(completion.type, "variable")
        item = RawItem(label, kind, _clip(completion.description), source)
        candidates.append((item, completion))
    # Signatures cost most of the time: only for the items an editor shows first.
    ranked = rank([item for item, _ in candidates], position.prefix, limit=SIGNATURE_LIMIT)
    shown_first = {item["label"] for item in ranked}
    raw: list[RawItem] = []
    for item, completion in candidates:
        if item.kind in ("function", "class") and item.label in shown_first:
            signatures = completion.get_signatures()
            if signatures:
                item = item._replace(detail=_clip(signatures[0].to_string()))
        raw.append(item)
    return tuple(raw)


# Tiny completions that pay the one-time costs: importing Jedi, starting its helper process,
# parsing the builtins, str, os and os.path stubs (about a second on 2 cores, in the background).
_WARM_UP = (("import os\nos.pa", 2, 5), ("import os\nos.path.jo", 2, 10), ("''.up", 1, 5))


def _warm_up_job() -> None:
    try:
        for code, line, column in _WARM_UP:
            _jedi_completions(code, line, column, locate(code, line, column))
    except Exception:
        logger.exception("autocomplete: Jedi warm-up failed")
    # Jedi's caches live as long as the process: take them out of the garbage collector's
    # generations, as collabsite/asgi.py does for everything loaded at start.
    gc.collect()
    gc.freeze()


def start_warm_up() -> concurrent.futures.Future[None]:
    """Queue the warm-up on the Jedi thread (once per process); returns its future."""
    global _warm
    with _lock:
        if _warm is None:
            _warm = _executor.submit(_warm_up_job)
        return _warm


def clear_cache() -> None:
    """Forget cached results (tests, benchmarks). Jobs in flight still store theirs."""
    with _lock:
        _cache.clear()


def _jedi_job(
    cache_key: Hashable | None, code: str, line: int, column: int, position: Position
) -> tuple[RawItem, ...]:
    global _pending
    try:
        raw = _jedi_completions(code, line, column, position)
        if cache_key is not None:
            # Stored even when the request that asked has given up: the next keystroke at the
            # same version and position (or a retry) gets the full answer at once.
            with _lock:
                _cache[cache_key] = raw
                _cache.move_to_end(cache_key)
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
        return raw
    except Exception:
        logger.exception("autocomplete: Jedi failed at %s:%s", line, column)
        raise
    finally:
        with _lock:
            _pending -= 1
            if cache_key is not None:
                _inflight.pop(cache_key, None)


def _cached_or_submit(
    cache_key: Hashable | None, code: str, line: int, column: int, position: Position
) -> tuple[RawItem, ...] | concurrent.futures.Future[tuple[RawItem, ...]] | None:
    """A cached result, or the (possibly shared) future of a Jedi job, or None when the queue
    is full and the request should use the fallback without waiting."""
    global _pending
    with _lock:
        if cache_key is not None:
            if (cached := _cache.get(cache_key)) is not None:
                _cache.move_to_end(cache_key)
                return cached
            if (running := _inflight.get(cache_key)) is not None:
                return running
        if _pending >= MAX_PENDING_JOBS:
            return None
        future = _executor.submit(_jedi_job, cache_key, code, line, column, position)
        _pending += 1
        if cache_key is not None:
            _inflight[cache_key] = future
    return future


def _full_key(cache_key: Hashable | None, code: str) -> Hashable | None:
    # The text's hash too: a room deleted and created again under the same id restarts at
    # version 0 with other code, and must not get the old room's answers.
    return None if cache_key is None else (cache_key, len(code), hash(code))


def _result(
    future: concurrent.futures.Future[tuple[RawItem, ...]] | None,
) -> tuple[RawItem, ...] | None:
    if future is None or not future.done() or future.cancelled() or future.exception():
        return None
    return future.result()


def _respond(raw: Iterable[RawItem], prefix: str, incomplete: bool) -> dict[str, Any]:
    items = rank(_matching(raw, prefix), prefix)
    return {"items": items, "incomplete": incomplete, "query": prefix}


async def _wait(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    """Wait for a thread-pool future without blocking the loop and without cancelling it.

    Not `wait_for(wrap_future(...))`: on timeout that cancels the wrapper, which cancels a job
    still queued, and the late result would never reach the cache.
    """
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: concurrent.futures.Future[Any]) -> None:
        # RuntimeError: the loop is closed, its request has already been answered.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_done, waiter)

    future.add_done_callback(wake)
    try:
        await asyncio.wait_for(waiter, timeout)
    except TimeoutError:
        return future.done()
    return True


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wait_sync(future: concurrent.futures.Future[Any], timeout: float) -> bool:
    done, _ = concurrent.futures.wait([future], timeout=timeout)  # never cancels
    return bool(done)


def _begin(
    cache_key: Hashable | None, code: str, line: int, column: int, query: str | None
) -> tuple[Position, str, concurrent.futures.Future[None], Any]:
    """The part both entry points share: locate, start the warm-up, look up or submit Jedi.

    `found` is the cached answer (a tuple), Jedi's pending future, or None (Jedi is busy)."""
    position = locate(code, line, column)
    prefix = position.prefix if query is None else query
    warm = start_warm_up()  # lazily, for processes that did not warm up at start
    found = _cached_or_submit(_full_key(cache_key, code), code, line, column, position)
    return position, prefix, warm, found


async def complete_in_code(
    *,
    cache_key: Hashable | None,
    code: str,
    line: int,
    column: int,
    query: str | None = None,
    budget: float | None = None,
) -> dict[str, Any]:
    """Complete at line (1-based), column (0-based, code points) of `code`.

    Returns {"items": [...], "incomplete": bool, "query": prefix}, at most MAX_ITEMS items, best
    first. `query` defaults to the name prefix before the cursor; given, it filters and ranks
    instead (the client may be ahead of the stored text). `cache_key` names the position in one
    version of the text, e.g. (room_id, version, line, column); the text's hash is added to it,
    so a reused key never serves another text's answer. None skips the cache. Jedi runs on its
    own thread and is awaited for at most `budget` seconds (default:
    settings.AUTOCOMPLETE_BUDGET_S); past it the answer is the fallback with "incomplete": true,
    and Jedi's late answer still goes to the cache. Until the process's warm-up has finished,
    the wait for it (at most settings.AUTOCOMPLETE_COLD_WAIT_S, default 10 s) comes first.
    Raises BadPosition. Never blocks the event loop.
    """
    position, prefix, warm, found = _begin(cache_key, code, line, column, query)
    if isinstance(found, tuple):
        return _respond(found, prefix, False)
    if found is not None:
        if not warm.done():
            await _wait(warm, cold_wait_s())
        await _wait(found, budget_s() if budget is None else budget)
        if (raw := _result(found)) is not None:
            return _respond(raw, prefix, False)
    # Off the loop: on a big file the word scan takes milliseconds.
    fallback = await asyncio.to_thread(fallback_items_raw, code, position, prefix)
    return _respond(fallback, prefix, True)


def complete_in_code_sync(
    *,
    cache_key: Hashable | None,
    code: str,
    line: int,
    column: int,
    query: str | None = None,
    budget: float | None = None,
) -> dict[str, Any]:
    """`complete_in_code` for synchronous callers: blocks this thread for at most the budget."""
    position, prefix, warm, found = _begin(cache_key, code, line, column, query)
    if isinstance(found, tuple):
        return _respond(found, prefix, False)
    if found is not None:
        if not warm.done():
            _wait_sync(warm, cold_wait_s())
        _wait_sync(found, budget_s() if budget is None else budget)
        if (raw := _result(found)) is not None:
            return _respond(raw, prefix, False)
    return _respond(fallback_items_raw(code, position, prefix), prefix, True)
