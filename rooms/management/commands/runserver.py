"""`manage.py runserver`: daphne's development server, with its WebSocket cap answering 1009.

Daphne sets the message size cap (DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE, above the protocol's own
1 MiB limit) but leaves autobahn's `failByDrop` on, so a frame over the cap drops the TCP
connection without a close frame. Clients should see close code 1009 ("message too big").
"""

from daphne.management.commands.runserver import Command as DaphneRunserver
from daphne.server import Server


class TunedServer(Server):
    def run(self) -> None:
        from twisted.internet import reactor

        # The factory is made inside run(); tune it once the reactor starts, before it serves.
        reactor.callWhenRunning(self._close_oversized_frames_cleanly)
        super().run()

    def _close_oversized_frames_cleanly(self) -> None:
        # allowNullOrigin defaults to False here, unlike daphne's setting: restate daphne's choice
        # (the application's origin policy decides, and answers 403).
        self.ws_factory.setProtocolOptions(failByDrop=False, allowNullOrigin=True)


class Command(DaphneRunserver):
    server_cls = TunedServer
