"""`manage.py serve`: the production launcher, one uvicorn worker process per core.

    python manage.py serve --workers 2 --port 8000

With several workers a small parent owns the port and sends every connection to a room to that
room's worker (rooms/workers.py), so no reverse proxy is needed to use every core; put one in
front for TLS. Workers share rooms through the database and Redis (a misrouted connection still
works), so more than one worker needs REDIS_URL (and PostgreSQL is recommended: SQLite
serialises every write across processes).
"""

import argparse
import asyncio
import logging
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from rooms.logs import RedactSecretsFilter
from rooms.workers import ROUTE_ROOM, ROUTES, Router, run_worker


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
        parser.add_argument(
            "--route",
            choices=ROUTES,
            default=ROUTE_ROOM,
            help="with several workers: send a room's connections to one worker (room, the "
            "default) or each connection to any worker (random: for measuring what it saves)",
        )
        parser.add_argument(
            "--standby",
            type=int,
            default=1,
            help="with several workers: started, idle workers that take a dead worker's rooms "
            "at once (default 1; 0 saves its memory, and a dead worker's rooms then wait for "
            "its restart)",
        )
        # Internal: how the parent starts a worker (the socket it passes connections over).
        parser.add_argument("--worker-channel", type=int, default=None, help=argparse.SUPPRESS)

    def handle(
        self,
        *args,
        host: str,
        port: int,
        workers: int,
        route: str,
        standby: int,
        worker_channel: int | None,
        **options,
    ) -> None:
        import uvicorn

        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if standby < 0:
            raise CommandError("--standby must be 0 or more")
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "several workers share rooms through Redis: set REDIS_URL "
                "(and DATABASE_URL=postgres://... for PostgreSQL)"
            )
        logging.getLogger("uvicorn.access").addFilter(RedactSecretsFilter())
        logging.getLogger("uvicorn.error").addFilter(not_connection_open)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collabsite.settings")
        if worker_channel is not None:
            run_worker(uvicorn.Config(**uvicorn_options()), worker_channel)
        elif workers == 1:
            uvicorn.run(host=host, port=port, **uvicorn_options())
        else:
            Router(
                host=host,
                port=port,
                workers=workers,
                route=route,
                standby=standby,
                worker_command=[sys.executable, os.path.abspath(sys.argv[0]), "serve"],
            ).run()


def uvicorn_options() -> dict:
    """What every worker runs: the app, the WebSocket protocol and its limits, the logging."""
    return {
        "app": "collabsite.asgi:application",
        "ws": f"{__name__}:HandshakeFreeProtocol",
        "ws_max_size": WEBSOCKET_MAX_BYTES,
        # No permessage-deflate (browsers always offer it): with it each socket keeps its own
        # compressor (about 43 KiB per connection) and every broadcast is compressed once per
        # socket, where now it is encoded once for the whole room. daphne (runserver) does not
        # compress either.
        "ws_per_message_deflate": False,
        "lifespan": "off",
        "log_config": uvicorn_log_config(),
    }


def not_connection_open(record: logging.LogRecord) -> bool:
    """Leave out the websockets library's "connection open" (logged through uvicorn's logger):
    uvicorn's line for the same accept comes just before it, with the path and the client, and
    the second line cost a few percent of a connection's set-up."""
    return record.msg != "connection open"


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
