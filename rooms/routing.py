from django.urls import re_path

from rooms.consumers import RoomConsumer

# Any path segment is routed, so a malformed id gets the protocol's 4404 close, not a 403.
websocket_urlpatterns = [
    re_path(r"^ws/(?P<room_id>[^/]*)/?$", RoomConsumer.as_asgi()),
]
