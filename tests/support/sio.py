"""A plain python-socketio client for server tests, recording every event it receives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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

    async def quiet_until(
        self, barrier: Callable[[str, Any], bool] | Awaitable[object], timeout: float = 5.0
    ) -> None:
        """Assert that nothing arrived before ``barrier``, which proves that anything unwanted
        would have arrived by now.

        ``barrier`` is either a predicate for a sentinel event the test caused after the action
        under test, on the same channel (a channel's publications arrive in order, so anything
        the action caused comes first): the next event must be that sentinel, and is consumed.
        Or an awaitable that proves the same some other way, e.g. ``round_trip()``: once it is
        done, no event may be waiting.
        """
        if callable(barrier):
            event = await self.next(timeout)
            assert barrier(*event), f"unexpected event before the barrier: {event}"
            return
        async with asyncio.timeout(timeout):
            await barrier
        assert self.events.empty(), f"unexpected event: {self.events.get_nowait()}"

    async def round_trip(self) -> None:
        """A request answered on this connection (a no-op unsubscribe): every event the node
        had queued for this connection before it is received before the answer."""
        ack = await self.call("unsubscribe", {"channel": "room:round-trip"})
        assert ack == {"ok": True}, ack


def sentinel(event: str) -> Callable[[str, Any], bool]:
    """A ``quiet_until`` barrier: the next event is ``event``."""
    return lambda name, _envelope: name == event


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
