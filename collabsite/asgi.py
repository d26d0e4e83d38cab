"""ASGI entry point: HTTP goes to Django, WebSockets to the room consumer."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collabsite.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from rooms.origin import BrowserOriginValidator  # noqa: E402
from rooms.outage import OutageGuard  # noqa: E402
from rooms.routing import websocket_urlpatterns  # noqa: E402
from rooms.websocket_auth import AccountMiddleware  # noqa: E402

# Everything loaded so far (Django, libraries, the URL conf) lives as long as the process.
# Frozen, it is never scanned again by the garbage collector: a full collection otherwise walks
# ~400k long-lived objects and pauses every connection for ~200 ms (docs/benchmarks.md).
gc.collect()
gc.freeze()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The origin check comes first: it is what keeps other sites' pages from opening a
        # socket with our users' session cookie. Then a service outage anywhere below (the
        # session's database included) closes with 4503.
        "websocket": BrowserOriginValidator(
            OutageGuard(AccountMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)
