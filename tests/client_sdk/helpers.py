"""Small helpers for SDK tests: bounded waits and stream checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from client_sdk import Client, Message, Resync, Subscription


def fast_client(url: str, token: Any, **options: Any) -> Client:
    """A client that reconnects quickly, so tests stay short."""
    options = {
        "reconnect_delay": 0.05,
        "reconnect_delay_max": 0.3,
        "request_timeout": 5.0,
    } | options
    return Client(url, token=token, **options)


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s")


async def take(sub: Subscription, count: int, within: float = 10.0) -> list[Message | Resync]:
    items: list[Message | Resync] = []
    async with asyncio.timeout(within):
        while len(items) < count:
            items.append(await anext(sub))
    return items


SENTINEL = "test.sentinel"


async def nothing_before(
    sub: Subscription, sentinel: Awaitable[object], within: float = 10.0
) -> Message:
    """Assert that the next item of ``sub`` is the sentinel that awaiting ``sentinel``
    publishes (event type ``SENTINEL``, on ``sub``'s channel, after the action under test).

    A channel's publications reach a subscriber in order, so anything the action caused
    would arrive before the sentinel: nothing arriving first means nothing came of it.
    Returns the sentinel's message (it moves the subscription's position).
    """
    await sentinel
    async with asyncio.timeout(within):
        item = await anext(sub)
    assert isinstance(item, Message) and item.type == SENTINEL, f"unexpected item {item!r}"
    return item


def messages(items: Sequence[Message | Resync]) -> list[Message]:
    assert all(isinstance(item, Message) for item in items), items
    return [item for item in items if isinstance(item, Message)]


def assert_contiguous(items: Sequence[Message | Resync]) -> None:
    """Every message follows its predecessor by exactly one offset, unless a Resync intervenes."""
    previous: Message | Resync | None = None
    for item in items:
        if isinstance(item, Message) and previous is not None:
            assert item.epoch == previous.epoch, (previous, item)
            assert item.offset == previous.offset + 1, (previous, item)
        previous = item


async def wait_disconnected(client: Client) -> None:
    await eventually(lambda: not client.connected)
