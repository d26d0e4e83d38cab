"""REST endpoints of a room's history (docs/protocol.md, "History"): blame, authorship, diffs,
the time axis, and restoring an old version. `GET /rooms/<id>?version=V` (or `?at=`) is the
room's usual body (rooms/views.py). JSON in, JSON out, errors as everywhere else.
"""

from __future__ import annotations

import json
import secrets

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from rooms import access, accounts, document, ot
from rooms.history import answers
from rooms.live import live_rooms
from rooms.models import Room
from rooms.protocol import MAX_NAME_LENGTH, TOO_LARGE, ProtocolError, encode_frame, json_error
from rooms.views import find_room, load_room, only


def _version(request: HttpRequest, room: Room, name: str = "version") -> int:
    return answers.version_between(request.GET.get(name, str(room.version)), room.version, name)


def _answer(request: HttpRequest, room_id: str, answer) -> HttpResponse:
    room = load_room(request, room_id)
    if isinstance(room, JsonResponse):
        return room
    try:
        body = answer(room)
    except answers.BadRequest as error:
        return json_error(400, str(error))
    # Compact JSON (the WebSocket's own encoder): blame of a long file is megabytes otherwise.
    return HttpResponse(encode_frame(body), content_type="application/json")


@only("GET")
def room_blame_view(request: HttpRequest, room_id: str) -> HttpResponse:
    return _answer(
        request,
        room_id,
        lambda room: answers.blame_answer(room_id=room.id, version=_version(request, room)),
    )


@only("GET")
def room_authorship_view(request: HttpRequest, room_id: str) -> HttpResponse:
    return _answer(
        request,
        room_id,
        lambda room: answers.authorship_answer(room_id=room.id, version=_version(request, room)),
    )


@only("GET")
def room_diff_view(request: HttpRequest, room_id: str) -> HttpResponse:
    def diff(room: Room) -> dict:
        if "from" not in request.GET:
            raise answers.BadRequest("'from' is missing: the version to compare with")
        return answers.diff_answer(
            room_id=room.id, old=_version(request, room, "from"), new=_version(request, room, "to")
        )

    return _answer(request, room_id, diff)


@only("GET")
def room_times_view(request: HttpRequest, room_id: str) -> HttpResponse:
    return _answer(
        request, room_id, lambda room: answers.times_answer(room_id=room.id, head=room.version)
    )


@only("POST")
async def room_restore_view(request: HttpRequest, room_id: str) -> JsonResponse:
    """Commit the text of an old version as a new change, on this process's live room (the one
    its connections here use) or on one loaded for the purpose."""
    try:
        room, allowed = await sync_to_async(_room_and_access)(request, room_id)
    except accounts.Refused as refusal:  # a bad API token, a session write without CSRF
        return refusal.response
    if isinstance(room, JsonResponse):
        return room
    if allowed != "edit":
        return json_error(403, "restoring needs edit access: the edit link, or the role editor")
    body = _restore_body(request.body)
    if isinstance(body, JsonResponse):
        return body
    account_name = await sync_to_async(_account_name)(request)
    live = live_rooms.get(room.id)
    loaded = live is None
    if loaded:
        live = await live_rooms.acquire(room.id)
    # Like a connection without a client id: a user id of its own, which is also its client.
    user = secrets.token_urlsafe(9)
    try:
        result = await document.room_restore(
            live,
            version=body["version"],
            base_version=body["base"],
            user=user,
            client=user,
            author_name=account_name or body["name"],
        )
    except ProtocolError as error:
        return json_error(413 if error.code == TOO_LARGE else 400, error.message)
    finally:
        if loaded:
            live_rooms.release(live)
    return JsonResponse({"version": result.version})


def _room_and_access(
    request: HttpRequest, room_id: str
) -> tuple[Room | JsonResponse, access.Access | None]:
    room = find_room(room_id)
    if isinstance(room, JsonResponse):
        return room, None
    allowed = access.request_access(request, room)
    if allowed is None:
        return json_error(403, "this room is private: pass its token, or sign in as a member"), None
    return room, allowed


def _account_name(request: HttpRequest) -> str | None:
    """The restorer's account name, stamped as on the WebSocket: a signed-in user is credited
    by their account, whatever name the body asks for. A session write without its CSRF token
    (allowed in a public room, where anyone may restore) is credited to nobody's account, so a
    forged request cannot put a victim's name on a change."""
    try:
        user = accounts.request_identity(request).user
    except accounts.Refused:
        return None
    return accounts.display_name(user) if user is not None else None


def _restore_body(raw: bytes) -> dict | JsonResponse:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return json_error(400, 'the body must be a JSON object: {"version": V}')
    fields = {"version": body.get("version"), "base": body.get("base"), "name": body.get("name")}
    for key in ("version", "base"):
        value = fields[key]
        if (value is not None or key == "version") and (type(value) is not int or value < 0):
            return json_error(400, f"'{key}' must be a non-negative integer")
    name = fields["name"]
    if name is not None and not (
        isinstance(name, str) and 1 <= len(name) <= MAX_NAME_LENGTH and ot.is_valid_text(name)
    ):
        return json_error(400, f"'name' must be 1-{MAX_NAME_LENGTH} characters")
    return fields
