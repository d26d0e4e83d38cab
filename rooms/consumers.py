"""The WebSocket endpoint `/ws/<room_id>`: one consumer per connection, one group per room.

Thin by design: parse and validate a message, call rooms/document.py, send the result. The
consumer's own state is what the connection needs and no more: who it is, its mode, the last
version it delivered (so every connection sees every version exactly once, in order) and, in
text mode, the text at that version. The protocol is described in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from autocomplete import completion
from rooms import access, accounts, affinity, document, identity, metrics, ot, presence, sockets
from rooms.changes import Change
from rooms.groups import group_name
from rooms.history import answers
from rooms.limits import TokenBucket
from rooms.live import LiveRoom, live_rooms
from rooms.presence import CursorThrottle, TypingState
from rooms.protocol import (
    BAD_JSON,
    BAD_MESSAGE,
    BAD_OP,
    CLIENT_ID_RE,
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_ROOM_FULL,
    CLOSE_TOO_FAR_BEHIND,
    FORBIDDEN,
    MAX_MESSAGE_BYTES,
    MAX_NAME_LENGTH,
    MAX_SEQ,
    RATE_LIMITED,
    ROOM_FULL,
    TOO_LARGE,
    UNKNOWN_TYPE,
    ProtocolError,
    encode_frame,
    error_message,
    is_valid_room_id,
)

logger = logging.getLogger(__name__)

MODES = ("text", "ops")
# What sending to a client that is gone or closing raises (uvicorn: ClientDisconnected, an
# OSError; daphne's autobahn: Disconnected, a RuntimeError). Not an error here: disconnect()
# follows, and what the client missed it gets when it resumes.
GONE = (OSError, RuntimeError)
# What a view token may not send (decided before any other validation).
EDITING_TYPES = frozenset({"sync_code", "op", "cursor", "typing", "restore"})
# History requests one connection may have answered at a time: blame of a long file costs real
# CPU, and the message rate limit alone would let one socket ask for a hundred a second.
HISTORY_IN_FLIGHT_MAX = 4


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Real messages nest a few levels. Far deeper input is refused as unparseable before parsing:
# the parser recurses per level, and near the interpreter's limit (1,000) it can take the
# process down instead of raising. Up to this depth it parses, and the usual checks answer.
MAX_JSON_DEPTH = 500
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nested_too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False  # cheap: too few brackets to nest that deep
    depth = 0
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif token in "]}":
            depth -= 1
    return False


# Built once: json.loads with an option builds a decoder on every call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_message(text: str) -> Any:
    """Strict RFC 8259 JSON: NaN and Infinity are refused."""
    return _STRICT_DECODER.decode(text)


def require_text(message: dict, key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise ProtocolError(BAD_MESSAGE, f"'{key}' must be a string")
    if not ot.is_valid_text(value):
        raise ProtocolError(BAD_MESSAGE, f"'{key}' contains U+0000 or a lone surrogate")
    return value


def require_int(message: dict, key: str, *, optional: bool = False) -> int | None:
    value = message.get(key)
    if value is None and optional and key not in message:
        return None
    # bool is an int in Python, but not on the wire.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(BAD_MESSAGE, f"'{key}' must be an integer")
    return value


def valid_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_NAME_LENGTH
        or not ot.is_valid_text(value)
    ):
        raise ProtocolError(BAD_MESSAGE, f"name must be 1-{MAX_NAME_LENGTH} characters")
    return value


def query_credentials(query_string: bytes) -> dict[str, str]:
    """`token`, `client` and `client_secret` as given (the last of each), read before the query
    is validated: 4403 comes before 4400."""
    raw = parse_qs(query_string.decode("utf-8", "replace"))
    return {key: raw[key][-1] for key in ("token", "client", "client_secret") if key in raw}


def parse_query(query_string: bytes) -> dict[str, Any]:
    """The connection's query parameters, validated (docs/protocol.md, section 4); whether `version`
    is ahead of the room is checked once the room is caught up."""
    try:
        raw = parse_qs(query_string.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ProtocolError(BAD_MESSAGE, "the query string is not UTF-8") from None
    params = {key: values[-1] for key, values in raw.items()}
    parsed: dict[str, Any] = {"name": None, "mode": "text", "client": None, "version": None}
    if "name" in params:
        parsed["name"] = valid_name(params["name"])
    if "mode" in params:
        if params["mode"] not in MODES:
            raise ProtocolError(BAD_MESSAGE, "mode must be 'text' or 'ops'")
        parsed["mode"] = params["mode"]
    if "client" in params:
        if not CLIENT_ID_RE.fullmatch(params["client"]):
            raise ProtocolError(BAD_MESSAGE, "client must be 8-64 of A-Z a-z 0-9 _ -")
        parsed["client"] = params["client"]
    if "version" in params:
        value = params["version"]
        if not value.isascii() or not value.isdigit():
            raise ProtocolError(BAD_MESSAGE, "version must be a non-negative integer")
        parsed["version"] = int(value)
    return parsed


class IdleSweeper:
    """Closes connections that sent nothing for COLLAB_IDLE_TIMEOUT_S (with 4408).

    One timer for the process instead of one per connection (a timer is about 0.6 KiB per idle
    connection). A sweep runs every quarter of the timeout, so an idle connection is closed
    between 1 and 1.25 timeouts after its last message; receiving costs nothing but a clock
    read (`last_heard`).
    """

    def __init__(self) -> None:
        self.connections: set[RoomConsumer] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, consumer: RoomConsumer) -> None:
        if settings.COLLAB_IDLE_TIMEOUT_S <= 0:
            return
        self.connections.add(consumer)
        loop = asyncio.get_running_loop()
        if self.timer is None or self.loop is not loop:  # a new loop: tests run one per case
            self.loop = loop
            self.schedule()

    def discard(self, consumer: RoomConsumer) -> None:
        self.connections.discard(consumer)

    def schedule(self) -> None:
        interval = min(settings.COLLAB_IDLE_TIMEOUT_S / 4, 30.0)
        self.timer = self.loop.call_later(interval, self.sweep)

    def sweep(self) -> None:
        timeout = settings.COLLAB_IDLE_TIMEOUT_S
        now = self.loop.time()
        for consumer in [c for c in self.connections if now - c.last_heard >= timeout]:
            self.connections.discard(consumer)
            consumer.close_idle()
        if self.connections:
            self.schedule()
        else:
            self.timer = None


idle_sweeper = IdleSweeper()


class RoomConsumer(AsyncJsonWebsocketConsumer):
    live: LiveRoom | None = None
    user_id: str = ""
    joined = False
    # While this connection's own change is being committed and acked, the room's fan-out
    # passes it by: its ack stands for that change, which it must not get as someone else's.
    submitting = False
    # A fan-out send waiting for this socket to drain; later changes wait for it.
    blocked_send: asyncio.Future | None = None
    # This connection's name is recorded as its client's author name (rooms/history/authors.py).
    authored = False
    history_in_flight = 0
    # Fell further behind than the budgets allow: nothing more is sent but the close (4413).
    behind = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.side_tasks: set[asyncio.Task] = set()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def send_unless_gone(message: dict) -> None:
            if self.behind and message["type"] == "websocket.send":
                return  # a frame after the last one delivered would skip versions
            with contextlib.suppress(*GONE):
                await send(message)

        # Channels' AsyncConsumer.__call__, with its message loop replaced: that one waits on
        # both sources with asyncio.wait and starts a new task for every message, which cost
        # more than handling the message and three tasks per idle connection. Here the
        # client's messages are read in this task; the channel layer's come through our
        # layer's inbox (a task only while messages wait) or, on other layers, one long-lived
        # task. `turn` still handles them one at a time, as Channels does.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.base_send = send_unless_gone
        self.asgi_send = send  # the fan-out's, which handles GONE itself
        self.turn = asyncio.Lock()
        subscribed = hasattr(self.channel_layer, "subscribe")
        if subscribed:
            self.channel_layer.subscribe(
                self.channel_name, self.dispatch_layer_message, overflow=self.layer_overflowed
            )
        else:
            relay = asyncio.ensure_future(self.relay_layer_messages())
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            if subscribed:
                self.channel_layer.unsubscribe(self.channel_name)
            else:
                relay.cancel()
            # Whatever ended this connection, its presence entry and live room are released.
            if self.live is not None:
                await self.disconnect(CLOSE_INTERNAL_ERROR)

    async def relay_layer_messages(self) -> None:
        while True:
            await self.dispatch_layer_message(await self.channel_layer.receive(self.channel_name))

    async def dispatch_layer_message(self, message: dict[str, Any]) -> None:
        try:
            await self.dispatch(message)
        except Exception:
            # What Channels' loop would do (the connection ends), without taking the process
            # down: the client reconnects and resumes.
            logger.exception("room message %s failed", message.get("type"))
            await self.close(CLOSE_INTERNAL_ERROR)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs close_old_connections() in the database thread before every message,
        # which costs a thread hop per delivered broadcast, queued behind the commits. Every
        # database call here goes through database_sync_to_async, which does that cleanup
        # itself, so a message that touches no database skips it.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        async with self.turn:
            await handler(message)

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        # Accept first: a close before accept reaches browsers as a bare HTTP 403, and clients
        # need the close code to tell "no such room" from "bad request". The header names this
        # process: where the routing (rooms/affinity.py) sent the room's connection.
        await self.accept(headers=[affinity.process_header_pair()])
        room_id = self.scope["url_route"]["kwargs"]["room_id"]
        if not is_valid_room_id(room_id):
            await self.close(CLOSE_NOT_FOUND)
            return
        self.live = await live_rooms.acquire(room_id)
        if self.live is None:
            await self.close(CLOSE_NOT_FOUND)
            return
        query_string = self.scope.get("query_string", b"")
        credentials = query_credentials(query_string)
        user = self.scope.get("user")  # rooms/websocket_auth.py
        self.account = user if user is not None and user.is_authenticated else None
        self.token = credentials.get("token")
        self.access = await self.access_now()
        access_version = self.live.access_version
        if self.access is None:
            await self.close(CLOSE_FORBIDDEN)
            return
        try:
            params = parse_query(query_string)
        except ProtocolError as error:
            await self.refuse(credentials, error)
            return
        self.user_id = identity.user_id_new()
        self.client_id = params["client"] or self.user_id
        self.mode = params["mode"]
        if self.account is not None:
            self.name = accounts.display_name(self.account)  # stamped: no client picks it
        else:
            self.name = params["name"] or f"guest-{self.user_id[:5]}"
        self.color = presence.color_for(self.client_id)
        self.rate = TokenBucket(settings.COLLAB_RATE_BURST, settings.COLLAB_RATE_PER_S)
        self.cursor = CursorThrottle(self.publish_cursor)
        self.typing = TypingState(self.publish_typing)
        self.last_heard = asyncio.get_running_loop().time()
        idle_sweeper.add(self)

        await self.channel_layer.group_add(group_name(room_id), self.channel_name)
        # Changes another process committed before we subscribed reach us through the log.
        await self.live.catch_up_to_join(params["version"])
        if params["version"] is not None and params["version"] > self.live.version:
            await self.channel_layer.group_discard(group_name(room_id), self.channel_name)
            await self.refuse(
                credentials,
                ProtocolError(BAD_MESSAGE, f"version {params['version']} is ahead of the room"),
            )
            return
        # Last of the checks: a chosen client id seen for the first time is bound here, when
        # nothing but sending init is left to do.
        admission = await identity.client_admit(
            room_id=room_id,
            client=params["client"],
            secret=credentials.get("client_secret"),
            claim=True,
        )
        if admission is None:
            await self.channel_layer.group_discard(group_name(room_id), self.channel_name)
            await self.refuse_client(params["client"])
            return
        entered = None
        try:
            entered = await self.send_init(params["version"])
        finally:
            if entered is None and admission == "claimed":
                # Its secret never left: free the id for this client's next attempt.
                await identity.client_release(room_id=room_id, client=params["client"])
        if not self.joined:
            await self.channel_layer.group_discard(group_name(room_id), self.channel_name)
            await self.send_error(ProtocolError(ROOM_FULL, "the room has too many connections"))
            await self.close(CLOSE_ROOM_FULL)
            return
        self.live.members.add(self)
        await self.deliver_through(self.live.version)  # committed while init was on its way
        await self.announce("join", entered)
        if self.live.access_version != access_version:
            await self.access_apply()  # changed before the room could tell this connection

    async def send_init(self, resume_from: int | None) -> presence.Entered | None:
        """Enter the room's presence and send init; None when the room is full
        (COLLAB_ROOM_MAX_CONNECTIONS), else the entry, with the users init carried."""
        room_id = self.live.room_id
        entered = await presence.presence.enter(
            room_id,
            user_id=self.user_id,
            name=self.name,
            color=self.color,
            limit=settings.COLLAB_ROOM_MAX_CONNECTIONS,
        )
        if entered is None:
            return None
        self.presence_seq = entered.seq
        presence.keeper.add(room_id, self.user_id)
        self.joined = True
        metrics.connection_opened()
        # Everything in init describes one version, captured before anything else can await:
        # changes committed meanwhile reach this connection as broadcasts, after init.
        head, self.text = self.live.version, self.live.text
        self.delivered = head
        init = {
            "type": "init",
            "room_id": room_id,
            "user_id": self.user_id,
            "name": self.name,
            "code": self.text,
            "version": head,
            "client_secret": identity.client_secret(room_id, self.client_id),
            "users": entered.users,
            "cursors": await self.cursors_at(head),
            # Editors make a view connection read-only before anything is refused.
            "access": self.access,
        }
        if self.mode == "ops" and resume_from is not None:
            # Resume: everything after the client's version, its own in-flight op included.
            changes = await self.live.changes_between(resume_from, head)
            init["ops"] = [change.entry() for change in changes]
        await self.send_json(init)
        return entered

    async def refuse(self, credentials: dict[str, str], error: ProtocolError) -> None:
        """Close a connection whose query is invalid (4400), unless the client id it names is
        bound and its secret missing: that 4403 comes first. Either way the id is not bound."""
        client = credentials.get("client")
        admission = await identity.client_admit(
            room_id=self.live.room_id,
            client=client,
            secret=credentials.get("client_secret"),
            claim=False,
        )
        if admission is not None:
            await self.send_error(error)
            await self.close(CLOSE_BAD_REQUEST)
        else:
            await self.refuse_client(client)

    async def refuse_client(self, client: str) -> None:
        await self.send_error(
            ProtocolError(
                FORBIDDEN, f"client id {client!r} is taken in this room: pass its client_secret"
            )
        )
        await self.close(CLOSE_FORBIDDEN)

    async def disconnect(self, code: int) -> None:
        live = self.live
        if live is None:
            return
        live.members.discard(self)
        for task in self.side_tasks:
            task.cancel()
        idle_sweeper.discard(self)
        try:
            if self.joined:
                self.joined = False
                metrics.connection_closed()
                self.cursor.stop()
                # First, so the heartbeat stops vouching for us even if a step below fails.
                presence.keeper.discard(live.room_id, self.user_id)
                await self.typing.stop()
                await self.channel_layer.group_discard(group_name(live.room_id), self.channel_name)
                left = await presence.presence.leave(live.room_id, user_id=self.user_id)
                if left is not None:
                    await self.announce("leave", left)
        finally:
            self.live = None
            live_rooms.release(live)

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.joined or self.access is None or self.behind:
            # Not in yet, or closing: its access was taken away, or it fell too far behind
            # (4413). Nothing it sends now is applied.
            return
        self.last_heard = asyncio.get_running_loop().time()
        if not self.rate.take():
            metrics.rate_limited()
            await self.send_error(ProtocolError(RATE_LIMITED, "too many messages; slow down"))
            return
        try:
            message = self.parse_frame(text_data, bytes_data)
            await self.handle(message)
        except ProtocolError as error:
            await self.send_error(error)
        except Exception:
            # Not the client's fault (e.g. the database failed): nothing was acked, so the
            # client reconnects, resumes and resubmits; everyone else is unaffected.
            logger.exception("room %s: message failed", self.live.room_id)
            await self.close(CLOSE_INTERNAL_ERROR)

    @staticmethod
    def parse_frame(text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        # Sizes are checked on the UTF-8 bytes before anything is parsed.
        if text_data is None:
            size = len(bytes_data or b"")
        elif len(text_data) * 4 <= MAX_MESSAGE_BYTES:
            size = 0  # cannot be over the limit; skip encoding
        else:
            size = len(text_data.encode("utf-8", "surrogatepass"))
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(TOO_LARGE, f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
        if text_data is None:
            raise ProtocolError(BAD_JSON, "binary frames are not accepted; send JSON text")
        if nested_too_deep(text_data):
            raise ProtocolError(BAD_JSON, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            message = decode_message(text_data)
        except (ValueError, RecursionError):
            raise ProtocolError(BAD_JSON, "the message is not valid JSON") from None
        if not isinstance(message, dict):
            raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object")
        if not isinstance(message.get("type"), str):
            raise ProtocolError(BAD_MESSAGE, "a message needs a string 'type'")
        return message

    async def handle(self, message: dict[str, Any]) -> None:
        handler = self.HANDLERS.get(message["type"])
        if handler is None:
            raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {message['type']!r}")
        if self.access == "view" and message["type"] in EDITING_TYPES:
            raise ProtocolError(FORBIDDEN, "this connection may view this room, not edit it")
        await handler(self, message)

    async def on_join(self, message: dict[str, Any]) -> None:
        name = valid_name(message.get("name"))
        if self.account is not None:
            return  # a signed-in user is shown by their account's name, whatever they ask
        self.name = name
        renamed = await presence.presence.rename(
            self.live.room_id, user_id=self.user_id, name=self.name
        )
        if renamed is not None:
            await self.announce("rename", renamed)
        self.authored = False  # the new name goes with this connection's next change

    async def on_sync_code(self, message: dict[str, Any]) -> None:
        code = require_text(message, "code")
        base = require_int(message, "version", optional=True)
        async with self.own_change():
            result = await document.change_submit(
                self.live,
                base_version=base,
                text=code,
                user=self.user_id,
                client=self.client_id,
                author_name=self.author_name(),
            )
            self.authored |= not result.duplicate
            self.typing.edited()
            ack: dict[str, Any] = {"type": "ack", "version": result.version}
            if result.text != code:
                ack["code"] = result.text
            await self.send_ack(result, ack)

    async def on_op(self, message: dict[str, Any]) -> None:
        if self.mode != "ops":
            raise ProtocolError(BAD_MESSAGE, "op messages need an ops-mode connection (?mode=ops)")
        base = require_int(message, "version")
        seq = require_int(message, "seq")
        if not 1 <= seq <= MAX_SEQ:
            raise ProtocolError(BAD_MESSAGE, f"'seq' runs from 1 to {MAX_SEQ}")
        if "op" not in message:
            raise ProtocolError(BAD_MESSAGE, "an op message needs 'op'")
        if not isinstance(message["op"], list):
            raise ProtocolError(BAD_OP, "'op' must be a list of parts")
        async with self.own_change():
            result = await document.change_submit(
                self.live,
                base_version=base,
                op=message["op"],
                user=self.user_id,
                client=self.client_id,
                seq=seq,
                author_name=self.author_name(),
            )
            self.authored |= not result.duplicate
            self.typing.edited()
            await self.send_ack(result, {"type": "ack", "version": result.version, "seq": seq})

    def author_name(self) -> str | None:
        """The name to record with this connection's next change: its name, with its first
        change and the first after a rename (rooms/history/authors.py); else None."""
        return None if self.authored else self.name

    async def on_history(self, message: dict[str, Any]) -> None:
        request_id = require_int(message, "id")
        if self.history_in_flight >= HISTORY_IN_FLIGHT_MAX:
            refusal = f"at most {HISTORY_IN_FLIGHT_MAX} history requests at a time"
            await self.send_json({**error_message(RATE_LIMITED, refusal), "id": request_id})
            return
        # Answered beside this connection's messages (blame of a long file takes a while), like
        # completions; `id` matches answers to requests.
        self.history_in_flight += 1
        task = self.start_side_task(self.send_history(request_id, message))
        task.add_done_callback(self.history_done)

    def history_done(self, task: asyncio.Future) -> None:
        self.history_in_flight -= 1

    async def send_history(self, request_id: int, message: dict[str, Any]) -> None:
        try:
            body = await answers.history_answer(self.live, message)
        except answers.BadRequest as error:
            reply = {**error_message(BAD_MESSAGE, str(error)), "id": request_id}
        except Exception:
            logger.exception("room %s: history request failed", self.live.room_id)
            await self.close(CLOSE_INTERNAL_ERROR)
            return
        else:
            reply = {"type": "history", "id": request_id, "get": message["get"], **body}
        if self.joined:
            await self.send_json(reply)

    async def on_restore(self, message: dict[str, Any]) -> None:
        request_id = require_int(message, "id")
        version = require_int(message, "version")
        base = require_int(message, "base", optional=True)
        try:
            result = await document.room_restore(
                self.live,
                version=version,
                base_version=base,
                user=self.user_id,
                client=self.client_id,
                author_name=self.author_name(),
            )
        except ProtocolError as error:
            await self.send_json({**error_message(error.code, error.message), "id": request_id})
            return
        self.authored = True
        # The restore reaches this connection as a change like any other (it is not the
        # client's own op to acknowledge), before the answer.
        await self.deliver_through(result.version)
        await self.send_json(
            {"type": "restored", "id": request_id, "version": result.version, "restored": version}
        )

    @contextlib.asynccontextmanager
    async def own_change(self) -> AsyncIterator[None]:
        self.submitting = True
        try:
            yield
        finally:
            self.submitting = False
            # What the fan-out passed by meanwhile (also when the change was refused).
            await self.deliver_through(self.live.version)

    async def on_cursor(self, message: dict[str, Any]) -> None:
        anchor = require_int(message, "anchor")
        head = require_int(message, "head")
        version = require_int(message, "version", optional=True)
        publishing = self.cursor.set(
            await document.cursor_at_head(self.live, anchor=anchor, head=head, version=version)
        )
        if publishing is not None:
            await publishing

    async def on_typing(self, message: dict[str, Any]) -> None:
        typing = message.get("typing")
        if not isinstance(typing, bool):
            raise ProtocolError(BAD_MESSAGE, "'typing' must be true or false")
        await self.typing.set(typing)

    async def on_complete(self, message: dict[str, Any]) -> None:
        request_id = require_int(message, "id")
        line = require_int(message, "line")
        column = require_int(message, "column")
        code, version = self.live.text, self.live.version
        try:
            completion.locate(code, line, column)
        except completion.BadPosition as error:
            raise ProtocolError(BAD_MESSAGE, str(error)) from None
        # Jedi may take up to its budget: answer on the side, so this client's own edits and
        # deliveries never wait behind a completion.
        self.start_side_task(self.send_completions(request_id, code, version, line, column))

    def start_side_task(self, awaitable: Awaitable[None]) -> asyncio.Future:
        """Run beside this connection's messages; cancelled when it disconnects."""
        task = asyncio.ensure_future(awaitable)
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)
        return task

    def close_idle(self) -> None:
        if self.joined:
            self.start_side_task(self.close(CLOSE_IDLE))

    async def send_completions(
        self, request_id: int, code: str, version: int, line: int, column: int
    ) -> None:
        result = await completion.complete_in_code(
            cache_key=(self.live.room_id, version, line, column),
            code=code,
            line=line,
            column=column,
        )
        reply = {"type": "completions", "id": request_id, "items": result["items"]}
        if result["incomplete"]:
            reply["incomplete"] = True
        if self.joined:
            await self.send_json(reply)

    async def on_ping(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def on_leave(self, message: dict[str, Any]) -> None:
        await self.close(CLOSE_NORMAL)

    # -- access ------------------------------------------------------------------------------

    async def access_now(self) -> access.Access | None:
        """What this connection may do in its room now (rooms/access.py decides)."""
        role = None
        if self.account is not None and self.live.private:
            role = await self.live.role_of(self.account.pk)
        return access.room_access(self.live, role=role, token=self.token)

    def access_recheck(self) -> None:
        """Who may enter the room changed (rooms/live.py): decide again, in this connection's
        turn, so no message of it is handled under half-changed access."""

        async def recheck() -> None:
            async with self.turn:
                await self.access_apply()

        self.start_side_task(recheck())

    async def access_apply(self) -> None:
        """A connection that lost its access gets error `forbidden` and close 4403; one whose
        access changed gets an `access` message (docs/protocol.md)."""
        if not self.joined or self.access is None:
            return
        now = await self.access_now()
        if now == self.access:
            return
        self.access = now
        if now is None:
            await self.send_error(ProtocolError(FORBIDDEN, "your access to this room was removed"))
            await self.close(CLOSE_FORBIDDEN)
        else:
            await self.send_json({"type": "access", "access": now})

    HANDLERS = {
        "join": on_join,
        "sync_code": on_sync_code,
        "op": on_op,
        "cursor": on_cursor,
        "typing": on_typing,
        "complete": on_complete,
        "history": on_history,
        "restore": on_restore,
        "ping": on_ping,
        "leave": on_leave,
    }

    # -- delivering --------------------------------------------------------------------------

    async def room_join(self, event: dict[str, Any]) -> None:
        await self.tell_presence("join", event)

    async def room_leave(self, event: dict[str, Any]) -> None:
        await self.tell_presence("leave", event)

    async def tell_presence(self, kind: str, event: dict[str, Any]) -> None:
        if (
            event["sender"] == self.channel_name
            or not self.joined
            or not presence.presence_news(event.get("seq"), seen_seq=self.presence_seq)
        ):
            return
        # The list is read now, not taken from the event: across processes an announcement can
        # arrive after later arrivals (this user included) entered, and its list would miss them.
        users = await presence.presence.users(self.live.room_id)
        await self.send_json({"type": kind, "user": event["user"], "users": users})

    async def room_presence(self, event: dict[str, Any]) -> None:
        if self.joined:
            delta = presence.presence_delta(event, seen_seq=self.presence_seq, user_id=self.user_id)
            if delta is not None:
                await self.send_json(delta)

    async def room_cursor(self, event: dict[str, Any]) -> None:
        if event["sender"] == self.channel_name or not self.joined:
            return
        # A cursor is sent at this connection's version: deliver the changes it refers to
        # first, or move it through the ones this connection has that it predates.
        await self.live.reach(event["version"])
        await self.deliver_through(event["version"])
        while True:
            # The room's fan-out may deliver more while positions are moved (if that reads the
            # op log): move them again, so the cursor is sent at the version the client has.
            version = self.delivered
            anchor, head = await self.live.position_moved(
                [event["anchor"], event["head"]], event["version"], version
            )
            if version == self.delivered:
                break
        await self.send_json(
            {
                "type": "cursor",
                "user": event["user"],
                "anchor": anchor,
                "head": head,
                "version": version,
            }
        )

    async def room_typing(self, event: dict[str, Any]) -> None:
        if event["sender"] != self.channel_name and self.joined:
            await self.send_json(
                {"type": "typing", "user": event["user"], "typing": event["typing"]}
            )

    async def cursors_at(self, version: int) -> list[dict[str, Any]]:
        """Every connected user's last cursor, moved to `version` (for init)."""
        cursors = []
        for cursor in await presence.presence.cursors(self.live.room_id):
            if cursor["version"] > version:
                continue  # set on a newer version than ours: its next move reaches us anyway
            anchor, head = await self.live.position_moved(
                [cursor["anchor"], cursor["head"]], cursor["version"], version
            )
            cursors.append(
                {"user": cursor["user"], "anchor": anchor, "head": head, "version": version}
            )
        return cursors

    def deliver_now(self) -> None:
        """The room's fan-out (rooms/live.py): send what this connection lacks, in order,
        without waiting. A busy connection is passed by; it catches up when it is free, unless
        it falls too far behind (`fall_behind`)."""
        live = self.live
        if live is None or self.behind or live.version <= self.delivered:
            return
        if self.submitting or self.blocked_send is not None:
            if self.owed_too_much(live, waiting_on_socket=self.blocked_send is not None):
                self.fall_behind()
            return
        if live.version == self.delivered + 1:
            changes = (live.recent[-1],)  # the usual case: one change behind
        else:
            changes = live.recent_between(self.delivered, live.version)
            if changes is None or self.owed_too_much(live, waiting_on_socket=True):
                self.fall_behind()
                return
        for change in changes:
            message = self.message_for(change)
            self.delivered = change.version
            try:
                pending = sockets.send_now(self.asgi_send, message)
            except GONE:
                return
            if pending is not None:
                self.blocked_send = self.start_side_task(pending)
                pending.add_done_callback(self.send_drained)
                return

    def owed_too_much(self, live: LiveRoom, *, waiting_on_socket: bool) -> bool:
        """Whether catching this connection up would cost more than the budgets allow.

        Text mode sends the whole text for every version, so what a text socket is owed is
        bounded in bytes (COLLAB_SEND_BACKLOG_BYTES). A socket that stopped taking writes must
        also catch up from the room's recent changes in memory: once they no longer reach back
        to it, it would need the op log read for it alone, so it resumes instead.
        """
        if self.mode == "text":
            backlog = live.text_backlog(self.delivered)
            if backlog is not None and backlog > settings.COLLAB_SEND_BACKLOG_BYTES:
                return True
            return backlog is None and waiting_on_socket
        return waiting_on_socket and live.change_at(self.delivered + 1) is None

    def layer_overflowed(self) -> None:
        """The channel layer dropped a room message for us (our queue of them was full): this
        connection missed presence it cannot get back, so it resumes on a new one."""
        if self.live is not None and self.joined and not self.behind:
            self.fall_behind()

    def fall_behind(self) -> None:
        """Stop delivering to this connection and close it with 4413: it resumes on a new one.
        The frames already on their way go first, so what it got is complete and in order."""
        self.behind = True
        self.live.members.discard(self)
        metrics.connection_behind()
        self.start_side_task(self.close_behind(self.blocked_send))

    async def close_behind(self, blocked_send: asyncio.Future | None) -> None:
        if blocked_send is not None:
            await asyncio.wait([blocked_send])
        await self.close(CLOSE_TOO_FAR_BEHIND)

    def send_drained(self, send: asyncio.Future) -> None:
        self.blocked_send = None
        if send.cancelled() or isinstance(send.exception(), GONE):
            return  # the connection is closing
        if send.exception() is not None:
            logger.warning("room send failed: %r", send.exception())
        self.deliver_now()

    async def deliver_through(self, version: int) -> None:
        """Send every change after the last delivered one up to `version`, in order."""
        if version <= self.delivered:
            return
        for change in await self.live.changes_between(self.delivered, version):
            if self.behind:
                return
            if change.version <= self.delivered:
                continue  # the fan-out sent it while the log was being read
            message = self.message_for(change)
            self.delivered = change.version
            await self.base_send(message)

    def message_for(self, change: Change) -> dict[str, str]:
        """The change as this connection's next frame (call in version order: text mode keeps
        the text at the last delivered version)."""
        if self.mode == "ops":
            return change.op_message()
        if change.version == self.live.version:
            self.text = self.live.text
            frame = self.live.text_frame(change.user)
        else:
            self.text = ot.apply(self.text, change.op)
            frame = encode_frame(
                {
                    "type": "sync_code",
                    "code": self.text,
                    "version": change.version,
                    "user": change.user,
                }
            )
        return {"type": "websocket.send", "text": frame}

    async def send_ack(self, result: document.CommitResult, ack: dict[str, Any]) -> None:
        if result.duplicate:
            # The first commit may not have reached this connection yet (it came from an
            # earlier connection of the same client): deliver it first, as any other change,
            # so the stream stays gap-free and the client sees its op before this ack.
            await self.deliver_through(result.version)
            ack["duplicate"] = True
            await self.send_json(ack)
            metrics.ack_sent(asyncio.get_running_loop().time() - self.last_heard)
            return
        # Every change committed before ours reaches this socket before our ack.
        await self.deliver_through(result.version - 1)
        await self.send_json(ack)
        metrics.ack_sent(asyncio.get_running_loop().time() - self.last_heard)
        self.delivered = result.version
        self.text = result.text

    async def publish_cursor(self, cursor: tuple[int, int, int]) -> None:
        if not self.joined:
            return  # the throttle fired after this connection closed
        anchor, head, version = cursor
        await presence.presence.set_cursor(
            self.live.room_id, user_id=self.user_id, anchor=anchor, head=head, version=version
        )
        await self.group_event(
            {
                "type": "room.cursor",
                "user": self.user_id,
                "anchor": anchor,
                "head": head,
                "version": version,
            }
        )

    async def publish_typing(self, typing: bool) -> None:
        await self.group_event({"type": "room.typing", "user": self.user_id, "typing": typing})

    async def group_event(self, event: dict[str, Any]) -> None:
        event["sender"] = self.channel_name
        await self.channel_layer.group_send(group_name(self.live.room_id), event)

    async def announce(self, kind: str, change: presence.PresenceChange) -> None:
        await presence.presence_announce(
            self.live.room_id,
            kind=kind,
            user={"id": self.user_id, "name": self.name, "color": self.color},
            change=change,
            sender=self.channel_name,
        )

    async def send_error(self, error: ProtocolError) -> None:
        await self.send_json(error_message(error.code, error.message))

    async def send_json(self, content: dict[str, Any], close: bool = False) -> None:
        # Channels' version goes through three more coroutines to the same call.
        await self.base_send({"type": "websocket.send", "text": encode_frame(content)})
        if close:
            await self.close()
