"""REST endpoints for rooms (docs/protocol.md, "REST"). JSON in, JSON out, errors included.

Views only translate between HTTP and rooms/document.py (rooms/store.py for a room's text,
rooms/history for its past; the history's own endpoints are in rooms/history/views.py) and
rooms/sharing.py (who may enter); rooms/accounts.py says who is asking and rooms/access.py what
they may do.
"""

import json
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from rooms import access, accounts, document, health, metrics, ot, presence, sharing, store
from rooms.history import answers
from rooms.limits import PerAddressLimit
from rooms.models import Room
from rooms.protocol import (
    MAX_NAME_LENGTH,
    is_valid_room_id,
    json_error,
    ws_url,
)


def room_body(room: Room, then: dict[str, Any] | None = None) -> dict[str, Any]:
    """The room's body; as of an older version with `then` (answers.text_answer's)."""
    past = {} if then is None else {"ts": then["ts"], "time": then["time"]}
    return {
        "room_id": room.id,
        "name": room.name,
        "code": store.room_code(room) if then is None else then["code"],
        "version": room.version if then is None else then["version"],
        **past,
        "users": async_to_sync(presence.presence.users)(room.id),
        "ws_url": ws_url(room.id),
    }


def only(*methods: str, message: str | None = None):
    """Answer other methods with a JSON 405 instead of Django's empty response, and the
    refusals of rooms/accounts.py and rooms/sharing.py with their JSON answers."""
    allowed = {*methods, "HEAD"} if "GET" in methods else set(methods)

    def refusal(request: HttpRequest) -> JsonResponse | None:
        if request.method in allowed:
            return None
        response = json_error(405, message or f"use {' or '.join(methods)}")
        response["Allow"] = ", ".join(methods)
        return response

    def decorate(view):
        if iscoroutinefunction(view):

            async def wrapped(request: HttpRequest, *args, **kwargs):
                if refused := refusal(request):
                    return refused
                return await view(request, *args, **kwargs)

        else:

            def wrapped(request: HttpRequest, *args, **kwargs):
                if refused := refusal(request):
                    return refused
                try:
                    return view(request, *args, **kwargs)
                except accounts.Refused as refusal_:
                    return refusal_.response
                except sharing.SharingError as error:
                    return json_error(error.status, error.message)

        # Exempt from the middleware: calls without a session (anonymous, link tokens, API
        # tokens) need no CSRF token, and rooms/accounts.py checks it on session writes.
        return csrf_exempt(wrapped)

    return decorate


def load_room(request: HttpRequest, room_id: str | None) -> Room | JsonResponse:
    """The room a request names, if it exists and the request may read it; else the error."""
    room = find_room(room_id)
    if isinstance(room, Room) and access.request_access(request, room) is None:
        return json_error(403, "this room is private: pass its token, or sign in as a member")
    return room


def find_room(room_id: str | None) -> Room | JsonResponse:
    if not room_id:
        return json_error(400, "room id missing: pass ?id=<room_id>")
    if not is_valid_room_id(room_id):
        return json_error(400, "malformed room id: 1-64 of A-Z a-z 0-9 _ -")
    room = document.room_get(room_id)
    if room is None:
        return json_error(404, f"no room {room_id!r}")
    return room


room_creation_limit = PerAddressLimit(settings.COLLAB_ROOM_CREATE_PER_MIN)


def creation_refused(request: HttpRequest) -> JsonResponse | None:
    # REMOTE_ADDR is the proxy behind a reverse proxy: see docs/deploying.md.
    if room_creation_limit.allow(request.META.get("REMOTE_ADDR", "")):
        return None
    return json_error(429, "too many rooms created from this address; try again in a minute")


@only("GET")
def room_create_view(request: HttpRequest) -> JsonResponse:
    if refused := creation_refused(request):
        return refused
    room = document.room_create()
    return JsonResponse({"room_id": room.id, "ws_url": ws_url(room.id)})


@only("GET", "POST", message="use POST to create a room (or GET /rooms/create), GET to list yours")
def rooms_collection(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return rooms_list(request)
    if refused := creation_refused(request):
        return refused
    try:
        raw = request.body
    except RequestDataTooBig:
        return json_error(
            413,
            "the body is too large ('code' is limited to "
            f"{settings.COLLAB_ROOM_TEXT_MAX_CODE_POINTS} code points)",
        )
    body = parse_create_body(raw)
    if isinstance(body, JsonResponse):
        return body
    # Signed in (with the CSRF token, for a session), the caller owns the new room.
    owner = accounts.request_identity(request).user
    if body["private"]:
        room, tokens = document.room_create_private(
            code=body["code"], name=body["name"], owner=owner
        )
    else:
        room, tokens = document.room_create(code=body["code"], name=body["name"], owner=owner), {}
    return JsonResponse({"room_id": room.id, "ws_url": ws_url(room.id), **tokens}, status=201)


def rooms_list(request: HttpRequest) -> JsonResponse:
    """GET /rooms: the caller's rooms (owned, or as a member), newest activity first."""
    user = accounts.request_account(request).user
    return JsonResponse(
        {
            "rooms": [
                {
                    "room_id": room.id,
                    "name": room.name,
                    "private": room.private,
                    "role": role,
                    "updated_at": room.updated_at.isoformat(),
                    "ws_url": ws_url(room.id),
                }
                for room, role in access.rooms_of(user)
            ]
        }
    )


def parse_create_body(raw: bytes) -> dict[str, Any] | JsonResponse:
    if not raw.strip():
        return {"code": "", "name": "", "private": False}
    try:
        body = json.loads(raw, parse_constant=_reject)
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return json_error(400, "the body must be a JSON object")
    code = body.get("code", "")
    name = body.get("name", "")
    if not isinstance(code, str) or not ot.is_valid_text(code):
        return json_error(400, "'code' must be a string without U+0000 or lone surrogates")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not ot.is_valid_text(name):
        return json_error(400, f"'name' must be a string of at most {MAX_NAME_LENGTH} characters")
    if "private" in body and not isinstance(body["private"], bool):
        return json_error(400, "'private' must be true or false")
    if len(code) > settings.COLLAB_ROOM_TEXT_MAX_CODE_POINTS:
        return json_error(
            413, f"'code' is limited to {settings.COLLAB_ROOM_TEXT_MAX_CODE_POINTS} code points"
        )
    return {"code": code, "name": name, "private": body.get("private", False)}


def _reject(name: str) -> None:
    raise ValueError(name)


@only("GET")
def room_join_view(request: HttpRequest) -> JsonResponse:
    return room_detail_view(request, request.GET.get("id"))


@only("GET")
def room_detail_view(request: HttpRequest, room_id: str | None) -> JsonResponse:
    room = load_room(request, room_id)
    if isinstance(room, JsonResponse):
        return room
    if "version" not in request.GET and "at" not in request.GET:
        return JsonResponse(room_body(room))
    try:
        if "version" in request.GET and "at" in request.GET:
            raise answers.BadRequest("pass 'version' or 'at', not both")
        if "at" in request.GET:
            version = answers.version_at(room_id=room.id, at=request.GET["at"])
        else:
            version = answers.version_between(request.GET["version"], room.version)
    except answers.BadRequest as error:
        return json_error(400, str(error))
    return JsonResponse(room_body(room, answers.text_answer(room_id=room.id, version=version)))


@only("GET")
def room_history_view(request: HttpRequest, room_id: str) -> JsonResponse:
    room = load_room(request, room_id)
    if isinstance(room, JsonResponse):
        return room
    since_raw = request.GET.get("since", "0")
    if not (since_raw.isascii() and since_raw.isdigit()) or int(since_raw) > room.version:
        return json_error(400, f"'since' must be an integer from 0 to {room.version}")
    since = int(since_raw)
    limit = None
    if "limit" in request.GET:
        raw = request.GET["limit"]
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= answers.PAGE_MAX):
            return json_error(400, f"'limit' must be an integer from 1 to {answers.PAGE_MAX}")
        limit = int(raw)
    return JsonResponse(
        {
            "room_id": room.id,
            "version": room.version,
            "ops": document.room_history(room, since=since, limit=limit),
        }
    )


# -- sharing: members, link access, new links (rooms/sharing.py) ----------------------------


def managed_room(
    request: HttpRequest, room_id: str, *, manage: bool = True
) -> tuple[Room, accounts.Identity, str | None] | JsonResponse:
    """The room, the signed-in caller and their role, when the caller may manage its sharing
    (`manage`), or see its members (any role)."""
    room = find_room(room_id)
    if isinstance(room, JsonResponse):
        return room
    identity = accounts.request_account(request)
    role = access.room_role(room, identity.user)
    if manage and not access.may_manage(role):
        return json_error(403, "only the room's owners may change who has access")
    if role is None:
        return json_error(403, "only the room's members may see who has access")
    return room, identity, role


def actor(identity: accounts.Identity) -> sharing.Actor:
    return sharing.Actor(identity.user, identity.via or "")


def member_body(member: sharing.Member, *, with_email: bool) -> dict[str, Any]:
    body = {
        "username": member.user.get_username(),
        "name": accounts.display_name(member.user),
        "role": member.role,
        "creator": member.creator,
    }
    if with_email:
        body["email"] = member.user.email
    return body


@only("GET", "POST")
def room_members_view(request: HttpRequest, room_id: str) -> JsonResponse:
    found = managed_room(request, room_id, manage=request.method == "POST")
    if isinstance(found, JsonResponse):
        return found
    room, identity, role = found
    manager = access.may_manage(role)
    if request.method == "POST":
        body = json_body(request)
        if isinstance(body, JsonResponse):
            return body
        member = sharing.member_invite(
            room=room, invitee=body.get("user"), role=body.get("role"), actor=actor(identity)
        )
        return JsonResponse(member_body(member, with_email=True), status=201)
    return JsonResponse(
        {
            "room_id": room.id,
            "members": [
                member_body(member, with_email=manager) for member in sharing.room_members(room)
            ],
            "link_access": room.link_access,
            "you": {"username": identity.user.get_username(), "role": role, "manage": manager},
        }
    )


@only("PATCH", "DELETE")
def room_member_view(request: HttpRequest, room_id: str, username: str) -> HttpResponse:
    found = managed_room(request, room_id)
    if isinstance(found, JsonResponse):
        return found
    room, identity, _ = found
    if request.method == "DELETE":
        sharing.member_remove(room=room, username=username, actor=actor(identity))
        return HttpResponse(status=204)
    body = json_body(request)
    if isinstance(body, JsonResponse):
        return body
    member = sharing.member_role_set(
        room=room, username=username, role=body.get("role"), actor=actor(identity)
    )
    return JsonResponse(member_body(member, with_email=True))


@only("GET", "PUT")
def room_link_view(request: HttpRequest, room_id: str) -> JsonResponse:
    found = managed_room(request, room_id)
    if isinstance(found, JsonResponse):
        return found
    room, identity, _ = found
    if request.method == "PUT":
        body = json_body(request)
        if isinstance(body, JsonResponse):
            return body
        sharing.link_access_set(room=room, access=body.get("access"), actor=actor(identity))
        room.refresh_from_db(fields=["link_access"])
    return JsonResponse({"room_id": room.id, "access": room.link_access})


@only("POST")
def room_link_rotate_view(request: HttpRequest, room_id: str) -> JsonResponse:
    found = managed_room(request, room_id)
    if isinstance(found, JsonResponse):
        return found
    room, identity, _ = found
    tokens = sharing.link_rotate(room=room, actor=actor(identity))
    return JsonResponse({"room_id": room.id, "access": room.link_access, **tokens})


def json_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        body = json.loads(request.body or b"null", parse_constant=_reject)
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return json_error(400, "the body must be a JSON object")
    return body


# -- operations: health and metrics (docs/deploying.md); no token, no room ids, no code ----


@only("GET")
async def healthz_view(request: HttpRequest) -> JsonResponse:
    checks = await health.health_check()
    healthy = all(reason is None for reason in checks.values())
    response = JsonResponse(
        {
            "status": "ok" if healthy else "fail",
            "checks": {name: reason or "ok" for name, reason in checks.items()},
        },
        status=200 if healthy else 503,
    )
    response["Cache-Control"] = "no-store"
    return response


# Async: the live-room count belongs to the event loop, and rendering is quick enough for it.
@only("GET")
async def metrics_view(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


# -- JSON everywhere: Django's own error pages ------------------------------------------------


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    return json_error(403, f"CSRF check failed: {reason}" if reason else "CSRF check failed")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(400, "bad request")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(403, "forbidden")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(404, f"no such endpoint: {request.path}")


def server_error(request: HttpRequest) -> JsonResponse:
    return json_error(500, "internal server error")
