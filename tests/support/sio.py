"""A plain python-socketio client for server tests, recording every event it receives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import socketio


class Recorder:
    def __init__(self, client: socketio.AsyncClient) -> None:
        self.client = client
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.arrivals: list[float] = []  # monotonic time of each event
        self.disconnected = asyncio.Event()
        self.disconnect_reason: Any = None

    async def call(self, event: str, payload: Any, timeout: float = 5.0) -> Any:
        return await self.client.call(event, payload, timeout=timeout)

    async def next(self, timeout: float = 3.0) -> tuple[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.events.get()

    async def take(self, n: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
        async with asyncio.timeout(timeout):
            return [await self.events.get() for _ in range(n)]

    async def quiet(self, wait: float = 0.3) -> None:
        await asyncio.sleep(wait)
        assert self.events.empty(), f"unexpected event: {self.events.get_nowait()}"


@asynccontextmanager
async def connected(
    url: str, token: str | None, *, transport: str = "websocket", serializer: str = "default"
) -> AsyncIterator[Recorder]:
    client = socketio.AsyncClient(reconnection=False, serializer=serializer)
    recorder = Recorder(client)

    @client.on("*")
    async def on_any(event: str, data: Any) -> None:
        recorder.arrivals.append(time.monotonic())
        await recorder.events.put((event, data))

    @client.event
    async def disconnect(reason: Any = None) -> None:
        recorder.disconnect_reason = reason
        recorder.disconnected.set()

    auth = {"token": token} if token is not None else None
    await client.connect(url, auth=auth, transports=[transport], wait_timeout=5)
    try:
        yield recorder
    finally:
        if client.connected:
            await client.disconnect()
        await client.shutdown()


async def connect_error(url: str, auth: Any) -> Any:
    """Connect with ``auth`` expecting a refusal; return the CONNECT_ERROR data."""
    client = socketio.AsyncClient(reconnection=False)
    errors: asyncio.Queue[Any] = asyncio.Queue()

    @client.event
    async def connect_error(data: Any) -> None:
        await errors.put(data)

    try:
        await client.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        pass
    else:
        await client.disconnect()
        raise AssertionError("the connection was accepted")
    finally:
        await client.shutdown()
    async with asyncio.timeout(3):
        return await errors.get()
