import json

import httpx
import pytest
import websockets

pytestmark = pytest.mark.e2e


async def test_two_clients_edit_one_room_and_the_text_survives_a_restart(server):
    room = httpx.get(f"{server.http_url}/rooms/create", timeout=5).json()
    url = f"{server.ws_base}{room['ws_url']}"
    async with websockets.connect(url) as alice, websockets.connect(url) as bob:
        await json_next(alice, "init")
        await json_next(bob, "init")
        await alice.send(json.dumps({"type": "sync_code", "code": "print(1)\n"}))
        assert (await json_next(alice, "ack"))["version"] == 1
        update = await json_next(bob, "sync_code")
        assert update["code"] == "print(1)\n"
    server.restart()
    joined = httpx.get(f"{server.http_url}/rooms/join", params={"id": room["room_id"]}, timeout=5)
    assert joined.json()["code"] == "print(1)\n" and joined.json()["version"] == 1


async def json_next(socket, message_type: str, timeout: float = 5) -> dict:
    async with asyncio_timeout(timeout):
        while True:
            message = json.loads(await socket.recv())
            if message["type"] == message_type:
                return message


def asyncio_timeout(seconds: float):
    import asyncio

    return asyncio.timeout(seconds)
