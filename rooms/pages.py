"""The editor page at `/`, `/r/<room_id>` and `/?room=<room_id>` (its API: docs/protocol.md).

The page is a template plus static files (rooms/static/rooms/editor.js, editor.css, the
CodeMirror bundle built by frontend/build.mjs, and page-errors.js, which shows what went wrong
when they fail to load or run); everything it does happens in the browser through
the REST and WebSocket API. A private room's token travels in the link's fragment, which browsers
never send to a server, so it appears in no request line or log here.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from rooms.protocol import is_valid_room_id
from rooms.views import only

# Everything the page loads comes from this server: no CDN, no inline script. Inline styles stay
# allowed because CodeMirror writes its theme into <style> elements at run time.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


@only("GET")
def editor_page(request: HttpRequest, room_id: str | None = None) -> HttpResponse:
    room_id = room_id if room_id is not None else request.GET.get("room", "")
    valid = not room_id or is_valid_room_id(room_id)
    response = render(
        request,
        "rooms/editor.html",
        {"page": {"roomId": room_id if valid else "", "badRoomId": not valid}},
        status=200 if valid else 400,
    )
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "no-referrer"
    return response
