"""Which browser pages may open a WebSocket to us (docs/protocol.md, section 4, handshake).

Channels' AllowedHostsOriginValidator refuses connections without an Origin header, but only
browsers send one; editors, bots and CLIs must be able to connect. So: no Origin header is
allowed, `Origin: null` and unknown origins are refused at the handshake (HTTP 403).
"""

from channels.security.websocket import OriginValidator
from django.conf import settings

DEBUG_LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def allowed_origins() -> list[str]:
    origins = list(settings.COLLAB_ALLOWED_ORIGINS or settings.ALLOWED_HOSTS)
    if settings.DEBUG:
        origins += DEBUG_LOCAL_HOSTS
    return origins


class BrowserOriginValidator(OriginValidator):
    def __init__(self, application) -> None:
        super().__init__(application, allowed_origins())

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)
