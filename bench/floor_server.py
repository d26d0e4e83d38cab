"""The floor: a minimal broadcast server on the bare `websockets` library.

It speaks the subset of the wire contract (docs/protocol.md, section 4) that the
benchmarks use, with none of the real server's work: no database, no OT, no validation beyond
JSON parsing, no rate limiting. Whatever our server costs above this is the price of Django,
Channels, daphne/uvicorn, persistence and the protocol's guarantees.

- `GET /rooms/create` -> 200 `{"room_id", "ws_url"}`; rooms are also created implicitly by a
  WebSocket connection to an unknown id (POST is impossible: websockets' HTTP parser only takes
  GET, so the bench sets a room's initial text with one `sync_code`).
- `ws://HOST:PORT/ws/<id>?mode=ops|text`: `init`, then
  `sync_code` -> `ack` + `sync_code` (full text) to other text sockets / `op` (one-hunk diff) to
  other ops sockets; `op` -> `ack` + the op relayed to other ops sockets (applied to the text, not
  transformed) / full text to other text sockets; `ping` -> `pong`; `join`/`leave` broadcasts.

Run: `python bench/floor_server.py --port 8765`; prints `floor listening on 127.0.0.1:PORT` when
ready. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

READY_LINE = "floor listening on"
MAX_SIZE = 4 * 1024 * 1024


def encode(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def apply_op(text: str, op: list) -> str:
    """Apply an ot-text-unicode op; the floor trusts its clients (no checks, no transform)."""
    out = []
    pos = 0
    for part in op:
        if type(part) is int:
            out.append(text[pos : pos + part])
            pos += part
        elif type(part) is str:
            out.append(part)
        else:
            pos += part["d"]
    out.append(text[pos:])
    return "".join(out)


def diff_op(old: str, new: str) -> list:
    """One-hunk diff (common prefix, then common suffix), like the real server's."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    op: list = []
    if start:
        op.append(start)
    if len(old) - start - end:
        op.append({"d": len(old) - start - end})
    if len(new) - start - end:
        op.append(new[start : len(new) - end])
    return op


class Room:
    __slots__ = ("members", "room_id", "text", "version")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.text = ""
        self.version = 0
        # connection -> (user_id, name, mode)
        self.members: dict[ServerConnection, tuple[str, str, str]] = {}

    def users(self) -> list[dict]:
        return [{"id": uid, "name": name} for uid, name, _ in self.members.values()]

    def others(self, sender: ServerConnection, mode: str) -> list[ServerConnection]:
        return [ws for ws, member in self.members.items() if ws is not sender and member[2] == mode]

    def commit(self, sender: ServerConnection, user: str, op: list, seq: int | None, new_text: str):
        old_text = self.text
        self.text = new_text
        self.version += 1
        text_socks = self.others(sender, "text")
        if text_socks:
            broadcast(
                text_socks,
                encode(
                    {"type": "sync_code", "code": new_text, "version": self.version, "user": user}
                ),
            )
        ops_socks = self.others(sender, "ops")
        if ops_socks:
            if op is None:
                op = diff_op(old_text, new_text)
            broadcast(
                ops_socks,
                encode(
                    {
                        "type": "op",
                        "version": self.version,
                        "op": op,
                        "user": user,
                        "client": user,
                        "seq": seq,
                    }
                ),
            )
        return self.version


rooms: dict[str, Room] = {}


def http_json(status: int, body: dict) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status, "OK" if status < 400 else "Error", headers, data)


def process_request(connection: ServerConnection, request):
    path = urlsplit(request.path).path.rstrip("/")
    if path == "/rooms/create":
        room_id = secrets.token_urlsafe(16)
        rooms[room_id] = Room(room_id)
        return http_json(200, {"room_id": room_id, "ws_url": f"/ws/{room_id}"})
    if not path.startswith("/ws/"):
        return http_json(404, {"error": "not found"})
    return None


async def handler(ws: ServerConnection) -> None:
    url = urlsplit(ws.request.path)
    room_id = url.path.rstrip("/")[len("/ws/") :]
    params = {k: v[-1] for k, v in parse_qs(url.query).items()}
    mode = params.get("mode", "text")
    room = rooms.get(room_id)
    if room is None:
        room = rooms[room_id] = Room(room_id)
    user_id = secrets.token_urlsafe(9)
    name = params.get("name") or f"guest-{user_id[:5]}"
    room.members[ws] = (user_id, name, mode)
    users = room.users()
    await ws.send(
        encode(
            {
                "type": "init",
                "room_id": room_id,
                "user_id": user_id,
                "name": name,
                "code": room.text,
                "version": room.version,
                "users": users,
                "cursors": [],
            }
        )
    )
    others = [other for other in room.members if other is not ws]
    if others:
        broadcast(
            others, encode({"type": "join", "user": {"id": user_id, "name": name}, "users": users})
        )
    try:
        async for frame in ws:
            try:
                message = json.loads(frame)
                kind = message["type"]
            except (ValueError, TypeError, KeyError):
                await ws.send(encode({"type": "error", "code": "bad_json", "message": "bad"}))
                continue
            if kind == "op":
                op = message["op"]
                seq = message.get("seq")
                version = room.commit(ws, user_id, op, seq, apply_op(room.text, op))
                await ws.send(encode({"type": "ack", "version": version, "seq": seq}))
            elif kind == "sync_code":
                version = room.commit(ws, user_id, None, None, message["code"])
                await ws.send(encode({"type": "ack", "version": version}))
            elif kind == "ping":
                await ws.send('{"type":"pong"}')
            elif kind == "leave":
                break
            else:
                await ws.send(encode({"type": "error", "code": "unknown_type", "message": kind}))
    finally:
        room.members.pop(ws, None)
        if room.members:
            broadcast(
                list(room.members),
                encode(
                    {"type": "leave", "user": {"id": user_id, "name": name}, "users": room.users()}
                ),
            )


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        "127.0.0.1",
        port,
        process_request=process_request,
        compression=None,
        max_size=MAX_SIZE,
        ping_interval=20,  # the same keepalive daphne and uvicorn use
        ping_timeout=20,
    ):
        print(f"{READY_LINE} 127.0.0.1:{port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
