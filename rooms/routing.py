from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from rooms.consumers import RoomConsumer
from rooms.protocol import CLOSE_NOT_FOUND


class NoSuchPath(AsyncWebsocketConsumer):
    """A WebSocket path that names no room (`/ws`, `/ws/a/b`, `/anything`): accepted, then
    closed with 4404 as an unknown room is (docs/protocol.md section 4). Without it Channels'
    router raises, which the servers answer with an HTTP 500 and a traceback."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(CLOSE_NOT_FOUND)


# Any path segment is routed, so a malformed id gets the protocol's 4404 close, not a 403.
websocket_urlpatterns = [
    re_path(r"^ws/(?P<room_id>[^/]*)/?$", RoomConsumer.as_asgi()),
    re_path(r"", NoSuchPath.as_asgi()),
]
