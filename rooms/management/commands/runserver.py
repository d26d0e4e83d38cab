"""`manage.py runserver`: daphne's development server, tuned in two ways.

- Daphne sets the message size cap (DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE, above the protocol's own
  1 MiB limit) but leaves autobahn's `failByDrop` on, so a frame over the cap drops the TCP
  connection without a close frame. Clients should see close code 1009 ("message too big").
- Access logs print the full URL, and private rooms' tokens may travel in `?token=`: they are
  redacted before anything is logged.
"""

from daphne.management.commands.runserver import Command as DaphneRunserver
from daphne.server import Server

from rooms.logs import redact_secrets


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

    def log_action(self, protocol: str, action: str, details: dict) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact_secrets(details["path"])}
        super().log_action(protocol, action, details)
