"""The second baseline: the FastAPI prototype's behaviour, as the prototype's clients know it.

A plain FastAPI app on uvicorn, written the way a first prototype is: rooms in a dict in
memory, one coroutine per WebSocket, `receive_json` / `send_json`, and a broadcast loop that
sends to each other socket in turn. Text mode only:

- `sync_code` replaces the room's text, bumps its version and is relayed to the room's other
  sockets as `{"type":"sync_code","code","version","user"}`. No ack, no persistence, no diff,
  no OT, no validation, no limits: what it does not do is why it is a baseline, not a rival.
- `init` on connect (`code`, `version`, `users`), `join` / `leave` notices to the others,
  `ping` -> `pong`; anything else is ignored.
- REST, only what the bench needs: `GET /rooms/create` and `POST /rooms` (optional `code`).

Nothing is tuned: it runs with uvicorn's defaults (`uvicorn prototype_server:app`), as the
prototype did. Run: `python bench/prototype_server.py --port 8765`; uvicorn prints
`Uvicorn running on` when ready. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import secrets

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

app = FastAPI()


class Room:
    def __init__(self, code: str = "") -> None:
        self.code = code
        self.version = 0
        self.sockets: dict[WebSocket, dict] = {}  # socket -> {"id", "name"}

    def users(self) -> list[dict]:
        return list(self.sockets.values())

    async def broadcast(self, message: dict, exclude: WebSocket | None = None) -> None:
        for socket in list(self.sockets):
            if socket is exclude:
                continue
            try:
                await socket.send_json(message)
            except Exception:
                # A socket that has just gone: its own handler removes it from the room.
                continue


rooms: dict[str, Room] = {}


class NewRoom(BaseModel):
    code: str = ""


@app.get("/rooms/create")
async def create_room() -> dict:
    room_id = secrets.token_urlsafe(16)
    rooms[room_id] = Room()
    return {"room_id": room_id, "ws_url": f"/ws/{room_id}"}


@app.post("/rooms", status_code=201)
async def create_room_with_code(body: NewRoom | None = None) -> dict:
    room_id = secrets.token_urlsafe(16)
    rooms[room_id] = Room(body.code if body else "")
    return {"room_id": room_id, "ws_url": f"/ws/{room_id}"}


@app.websocket("/ws/{room_id}")
async def room_socket(websocket: WebSocket, room_id: str, name: str | None = None) -> None:
    await websocket.accept()
    room = rooms.setdefault(room_id, Room())
    user = {"id": secrets.token_urlsafe(9), "name": name or "guest"}
    room.sockets[websocket] = user
    await websocket.send_json(
        {
            "type": "init",
            "room_id": room_id,
            "user_id": user["id"],
            "name": user["name"],
            "code": room.code,
            "version": room.version,
            "users": room.users(),
        }
    )
    await room.broadcast({"type": "join", "user": user, "users": room.users()}, websocket)
    try:
        while True:
            try:
                message = await websocket.receive_json()
            except json.JSONDecodeError:
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "sync_code":
                room.code = message.get("code", "")
                room.version += 1
                await room.broadcast(
                    {
                        "type": "sync_code",
                        "code": room.code,
                        "version": room.version,
                        "user": user["id"],
                    },
                    websocket,
                )
            elif kind == "ping":
                await websocket.send_json({"type": "pong"})
    except WebSocketDisconnect:
        pass
    finally:
        room.sockets.pop(websocket, None)
        await room.broadcast({"type": "leave", "user": user, "users": room.users()})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port)


if __name__ == "__main__":
    main()
