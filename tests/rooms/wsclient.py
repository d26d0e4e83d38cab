"""A small test client over Channels' WebsocketCommunicator, reading messages by type."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from collabsite.asgi import application

TIMEOUT_S = 3


class Client:
    def __init__(self, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.communicator = WebsocketCommunicator(application, path, headers=headers or [])
        self.init: dict[str, Any] | None = None

    async def connect(self) -> dict[str, Any]:
        connected, _ = await self.communicator.connect(timeout=TIMEOUT_S)
        assert connected
        self.init = await self.receive()
        assert self.init["type"] == "init", self.init
        return self.init

    async def send(self, message: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(message))

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.communicator.send_to(text_data=text, bytes_data=data)

    async def receive(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        message = await self.communicator.receive_output(timeout=timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def receive_type(self, *types: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """The next message of one of `types`, skipping presence chatter in between; `timeout`
        bounds the wait for each message."""
        for _ in range(50):
            message = await self.receive(timeout)
            if message["type"] in types:
                return message
            assert message["type"] in {"join", "leave", "typing", "cursor"}, message
        raise AssertionError(f"no {types} message")

    async def request(
        self, message: dict[str, Any], *types: str, timeout: float = TIMEOUT_S
    ) -> dict[str, Any]:
        await self.send(message)
        return await self.receive_type(*types, timeout=timeout)

    async def submit(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a change and return its ack (or error), passing over earlier changes' broadcasts."""
        await self.send(message)
        for _ in range(1000):
            reply = await self.receive_type("ack", "error", "op", "sync_code")
            if reply["type"] in {"ack", "error"}:
                return reply
        raise AssertionError("no ack")

    async def closed_with(self) -> int:
        message = await self.communicator.receive_output(timeout=TIMEOUT_S)
        while message["type"] == "websocket.send":
            message = await self.communicator.receive_output(timeout=TIMEOUT_S)
        assert message["type"] == "websocket.close", message
        return message.get("code", 1000)

    async def next_is_pong(self) -> None:
        """Proves no change or error was queued for us: the server answers in order."""
        await self.send({"type": "ping"})
        assert (await self.receive_type("pong"))["type"] == "pong"

    async def close(self) -> None:
        await self.communicator.disconnect()
