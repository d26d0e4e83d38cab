"""REST endpoints for rooms (docs/protocol.md, "REST"). JSON in, JSON out, errors included.

Views only translate between HTTP and rooms/document.py (rooms/store.py for a room's text).
"""

import json
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from rooms import access, document, health, metrics, ot, presence, store
from rooms.limits import PerAddressLimit
from rooms.models import Room
from rooms.protocol import (
    MAX_DOCUMENT_CODE_POINTS,
    MAX_NAME_LENGTH,
    is_valid_room_id,
    json_error,
    ws_url,
)


def room_body(room: Room) -> dict[str, Any]:
    return {
        "room_id": room.id,
        "name": room.name,
        "code": store.room_code(room),
        "version": room.version,
        "users": async_to_sync(presence.presence.users)(room.id),
        "ws_url": ws_url(room.id),
    }


def only(method: str):
    """Answer other methods with a JSON 405 instead of Django's empty response."""

    def refusal(request: HttpRequest) -> JsonResponse | None:
        if request.method == method or (method == "GET" and request.method == "HEAD"):
            return None
        response = json_error(405, f"use {method}")
        response["Allow"] = method
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
                return view(request, *args, **kwargs)

        # An API for editors and scripts: it reads no cookies, so CSRF cannot apply.
        return csrf_exempt(wrapped)

    return decorate


def load_room(request: HttpRequest, room_id: str | None) -> Room | JsonResponse:
    """The room a request names, if it exists and the request may read it; else the error."""
    if not room_id:
        return json_error(400, "room id missing: pass ?id=<room_id>")
    if not is_valid_room_id(room_id):
        return json_error(400, "malformed room id: 1-64 of A-Z a-z 0-9 _ -")
    room = document.room_get(room_id)
    if room is None:
        return json_error(404, f"no room {room_id!r}")
    if access.room_access(room, access.request_token(request)) is None:
        return json_error(403, "this room is private: pass its token")
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


@csrf_exempt  # an API for editors and scripts: no cookies are read, so no CSRF risk
def rooms_collection(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        response = json_error(405, "use POST to create a room (or GET /rooms/create)")
        response["Allow"] = "POST"
        return response
    if refused := creation_refused(request):
        return refused
    try:
        raw = request.body
    except RequestDataTooBig:
        return json_error(
            413,
            f"the body is too large ('code' is limited to {MAX_DOCUMENT_CODE_POINTS} code points)",
        )
    body = parse_create_body(raw)
    if isinstance(body, JsonResponse):
        return body
    if body["private"]:
        room, tokens = document.room_create_private(code=body["code"], name=body["name"])
    else:
        room, tokens = document.room_create(code=body["code"], name=body["name"]), {}
    return JsonResponse({"room_id": room.id, "ws_url": ws_url(room.id), **tokens}, status=201)


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
    if len(code) > MAX_DOCUMENT_CODE_POINTS:
        return json_error(413, f"'code' is limited to {MAX_DOCUMENT_CODE_POINTS} code points")
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
    return JsonResponse(room_body(room))


@only("GET")
def room_history_view(request: HttpRequest, room_id: str) -> JsonResponse:
    room = load_room(request, room_id)
    if isinstance(room, JsonResponse):
        return room
    since_raw = request.GET.get("since", "0")
    if not (since_raw.isascii() and since_raw.isdigit()) or int(since_raw) > room.version:
        return json_error(400, f"'since' must be an integer from 0 to {room.version}")
    since = int(since_raw)
    return JsonResponse(
        {
            "room_id": room.id,
            "version": room.version,
            "ops": document.room_history(room, since=since),
        }
    )


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
