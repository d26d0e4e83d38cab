"""`manage.py serve`: the production launcher, one uvicorn worker process per core.

    python manage.py serve --workers 2 --port 8000

Several workers share one listening socket (the kernel spreads connections), so no reverse
proxy is needed to use every core; put one in front for TLS. Workers share rooms through the
database and Redis, so more than one worker needs REDIS_URL (and PostgreSQL is recommended:
SQLite serialises every write across processes).
"""

import asyncio
import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from rooms.logs import RedactSecretsFilter


class HandshakeFreeProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (websockets, sans-I/O), minus the parsed handshake, with the
    send buffer of COLLAB_SEND_BUFFER_BYTES.

    uvicorn keeps the upgrade request and its response (headers and all) for the connection's
    whole life, though it never reads them after accepting: about 2 KiB per idle connection.
    Its `send` waits while the transport holds more than its high-water mark (asyncio's default:
    64 KiB); the same setting as under `runserver` sets it here.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=settings.COLLAB_SEND_BUFFER_BYTES)

    def keepalive_timeout(self) -> None:
        # uvicorn then closes the transport gracefully, which waits until its buffer is written:
        # for a client that stopped reading, forever, and the connection, its buffers and its
        # consumer stayed. It answered no ping: drop it, as daphne (autobahn) does.
        super().keepalive_timeout()
        self.transport.abort()

    def start_keepalive(self) -> None:  # called once, right after the accept is sent
        super().start_keepalive()
        self.request = self.response = None


# Above the protocol's 1 MiB message limit, so oversized edits get `too_large` from the
# application; frames beyond this close with 1009.
WEBSOCKET_MAX_BYTES = 4 * 1024 * 1024


class Command(BaseCommand):
    help = "Serve HTTP and WebSocket with uvicorn, optionally in several worker processes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers", type=int, default=1, help="worker processes (one per core is a good start)"
        )

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        import uvicorn

        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "several workers share rooms through Redis: set REDIS_URL "
                "(and DATABASE_URL=postgres://... for PostgreSQL)"
            )
        logging.getLogger("uvicorn.access").addFilter(RedactSecretsFilter())
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collabsite.settings")
        uvicorn.run(
            "collabsite.asgi:application",
            host=host,
            port=port,
            workers=workers,
            ws=f"{__name__}:HandshakeFreeProtocol",  # by name: workers import it themselves
            ws_max_size=WEBSOCKET_MAX_BYTES,
            # No permessage-deflate (browsers always offer it): with it each socket keeps its
            # own compressor (about 43 KiB per connection) and every broadcast is compressed
            # once per socket, where now it is encoded once for the whole room. daphne
            # (runserver) does not compress either.
            ws_per_message_deflate=False,
            lifespan="off",
            log_config=uvicorn_log_config(),
        )


def uvicorn_log_config() -> dict:
    """uvicorn's own logging, with tokens redacted from access lines in every worker."""
    from uvicorn.config import LOGGING_CONFIG

    config = {**LOGGING_CONFIG}
    config["filters"] = {"redact": {"()": "rooms.logs.RedactSecretsFilter"}}
    config["handlers"] = {
        name: {**handler, "filters": ["redact"]}
        for name, handler in LOGGING_CONFIG["handlers"].items()
    }
    return config
