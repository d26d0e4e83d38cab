"""HTTP face of autocomplete: read the query string, load the room's text, answer JSON.

Completion itself (keywords, builtins, Jedi, ranking, cache, budget) lives in
autocomplete.completion; this module only validates input and maps outcomes to statuses.
"""

import re
from typing import NamedTuple

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from autocomplete import completion
from rooms import access, accounts, store
from rooms.live import live_rooms
from rooms.models import Room
from rooms.protocol import is_valid_room_id, json_error

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: int() would also accept "٣" or " 3"


class RoomText(NamedTuple):
    code: str
    version: int


async def load_room_text(request: HttpRequest, room_id: str) -> RoomText | HttpResponse | None:
    """The room's current code and version; None if there is no such room; a 403 response
    when the room is private and the request may not read it (rooms.access decides).

    The current text is the head of the live room when this process has it (its editors are
    connected here) and it is not behind the database, else the stored copy (`Room.code`, up to
    `SNAPSHOT_EVERY` changes old) with the ops after it applied."""
    room = await Room.objects.filter(id=room_id).afirst()
    if room is None:
        return None
    if room.private:  # reading the session or an API token is database work: only when needed
        try:
            allowed = await database_sync_to_async(access.request_access)(request, room)
        except accounts.Refused as refused:
            return refused.response
        if allowed is None:
            return json_error(403, "this room is private: pass its token, or sign in as a member")
    live = live_rooms.get(room_id)
    if live is not None and live.version >= room.version:
        return RoomText(live.text, live.version)
    return RoomText(await database_sync_to_async(store.room_code)(room), room.version)


def _position_param(request: HttpRequest, name: str, minimum: int) -> int | str:
    """The integer value of `name`, or an error message."""
    raw = request.GET.get(name)
    if raw is None:
        return "line and column are required with room"
    if raw.startswith("-") and _DIGITS.fullmatch(raw[1:]):
        return f"{name} must not be negative"
    if not _DIGITS.fullmatch(raw):
        return f"{name} must be an integer"
    value = int(raw)
    if value < minimum:
        return f"{name} must be {minimum} or more ({name}s count from {minimum})"
    return value


# GET only, and it changes nothing: exempt so that other methods get our JSON 405, not a 403.
@csrf_exempt
async def autocomplete(request: HttpRequest) -> HttpResponse:
    """GET /autocomplete?query=...  or  ?room=<id>&line=<1-based>&column=<0-based>[&query=...]"""
    if request.method not in ("GET", "HEAD"):
        response = json_error(405, f"method {request.method} not allowed; use GET")
        response["Allow"] = "GET, HEAD"
        return response

    query = request.GET.get("query")
    room_id = request.GET.get("room")
    if room_id is None:
        if "line" in request.GET or "column" in request.GET:
            return json_error(400, "line and column need a room")
        if query is None:
            return json_error(400, "missing query parameter")
        return JsonResponse(
            {
                "query": query,
                "suggestions": completion.keyword_suggestions(query),
                "items": completion.items_without_context(query),
                "incomplete": False,
            }
        )

    # Before any database query: a malformed id never reaches the ORM.
    if not is_valid_room_id(room_id):
        return json_error(400, "invalid room id")
    line = _position_param(request, "line", minimum=1)
    if isinstance(line, str):
        return json_error(400, line)
    column = _position_param(request, "column", minimum=0)
    if isinstance(column, str):
        return json_error(400, column)

    room = await load_room_text(request, room_id)
    if room is None:
        return json_error(404, "room not found")
    if isinstance(room, HttpResponse):
        return room
    try:
        result = await completion.complete_in_code(
            cache_key=(room_id, room.version, line, column),
            code=room.code,
            line=line,
            column=column,
            query=query,
        )
    except completion.BadPosition as error:
        return json_error(400, str(error))
    return JsonResponse(
        {
            "query": result["query"],
            "suggestions": completion.keyword_suggestions(result["query"]),
            "items": result["items"],
            "incomplete": result["incomplete"],
        }
    )
