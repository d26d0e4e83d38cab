"""The transport ceiling: the floor's relay as a bare ASGI app, served by uvicorn exactly as
`manage.py serve` serves ours (uvloop, httptools, websockets' sans-I/O protocol, no
permessage-deflate).

Same messages and the same (lack of) work as `bench/floor_server.py`: no Django, no Channels, no
database, no OT. So it measures what uvicorn's ASGI WebSocket path alone costs: no application on
uvicorn can do better than this, and the gap between it and ours is the price of Django,
Channels, the durable commit and the protocol's guarantees.

Run: `python bench/asgi_floor.py --port 8765`; uvicorn prints `Uvicorn running on` when ready.
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import secrets
from urllib.parse import parse_qs

# Run as a script, like the floor: its directory (bench/) is on sys.path.
from floor_server import MAX_SIZE, apply_op, diff_op, encode

READY_LINE = "Uvicorn running on"


class Room:
    __slots__ = ("members", "text", "version")

    def __init__(self) -> None:
        self.text = ""
        self.version = 0
        self.members: dict = {}  # ASGI send -> (user_id, name, mode)

    def users(self) -> list[dict]:
        return [{"id": uid, "name": name} for uid, name, _ in self.members.values()]

    async def broadcast(self, sockets: list, text: str) -> None:
        message = {"type": "websocket.send", "text": text}  # one message for every socket
        for send in sockets:
            await send(message)

    async def commit(self, sender, user: str, op: list | None, seq, new_text: str) -> int:
        old_text, self.text = self.text, new_text
        self.version += 1
        others = [(send, m[2]) for send, m in self.members.items() if send is not sender]
        text_socks = [send for send, mode in others if mode == "text"]
        if text_socks:
            frame = {"type": "sync_code", "code": new_text, "version": self.version, "user": user}
            await self.broadcast(text_socks, encode(frame))
        ops_socks = [send for send, mode in others if mode == "ops"]
        if ops_socks:
            if op is None:
                op = diff_op(old_text, new_text)
            frame = {"type": "op", "version": self.version, "op": op, "user": user}
            frame |= {"client": user, "seq": seq}
            await self.broadcast(ops_socks, encode(frame))
        return self.version


rooms: dict[str, Room] = {}


async def app(scope, receive, send) -> None:
    if scope["type"] == "http":
        await http(scope, send)
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)


async def http(scope, send) -> None:
    if scope["path"].rstrip("/") == "/rooms/create":
        room_id = secrets.token_urlsafe(16)
        rooms[room_id] = Room()
        status, body = 200, {"room_id": room_id, "ws_url": f"/ws/{room_id}"}
    else:
        status, body = 404, {"error": "not found"}
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def websocket(scope, receive, send) -> None:
    path = scope["path"].rstrip("/")
    if not path.startswith("/ws/"):
        await send({"type": "websocket.close", "code": 4404})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    room_id = path[len("/ws/") :]
    params = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    mode = params.get("mode", "text")
    room = rooms.setdefault(room_id, Room())
    user_id = secrets.token_urlsafe(9)
    name = params.get("name") or f"guest-{user_id[:5]}"
    room.members[send] = (user_id, name, mode)
    users = room.users()
    init = {"type": "init", "room_id": room_id, "user_id": user_id, "name": name}
    init |= {"code": room.text, "version": room.version, "users": users, "cursors": []}
    await send({"type": "websocket.send", "text": encode(init)})
    joined = encode({"type": "join", "user": {"id": user_id, "name": name}, "users": users})
    await room.broadcast([other for other in room.members if other is not send], joined)
    try:
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                break
            try:
                message = json.loads(event.get("text") or event.get("bytes") or "")
                kind = message["type"]
            except (ValueError, TypeError, KeyError):
                error = {"type": "error", "code": "bad_json", "message": "bad"}
                await send({"type": "websocket.send", "text": encode(error)})
                continue
            if kind == "op":
                op, seq = message["op"], message.get("seq")
                version = await room.commit(send, user_id, op, seq, apply_op(room.text, op))
                reply = {"type": "ack", "version": version, "seq": seq}
            elif kind == "sync_code":
                version = await room.commit(send, user_id, None, None, message["code"])
                reply = {"type": "ack", "version": version}
            elif kind == "ping":
                reply = {"type": "pong"}
            elif kind == "leave":
                break
            else:
                reply = {"type": "error", "code": "unknown_type", "message": kind}
            await send({"type": "websocket.send", "text": encode(reply)})
    finally:
        room.members.pop(send, None)
        if room.members:
            left = {"type": "leave", "user": {"id": user_id, "name": name}, "users": room.users()}
            await room.broadcast(list(room.members), encode(left))


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=parser.parse_args().port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=MAX_SIZE,
        ws_per_message_deflate=False,
        lifespan="off",
        access_log=False,
        log_level="info",  # for READY_LINE
    )


if __name__ == "__main__":
    main()
