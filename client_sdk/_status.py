"""Status and typing: what a client tells the others on its channels about its user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, get_args

from client_sdk._errors import TandemError

log = logging.getLogger("client_sdk")

Status = Literal["online", "away", "busy"]
_STATUSES: tuple[str, ...] = get_args(Status)
Call = Callable[[str, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


class StatusReporter:
    """Reports this client's status and typing; ``status`` is what a reconnect starts with."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self.status: Status = "online"

    async def set_status(self, status: Status) -> str:
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        self.status = status
        ack = await self._call("status", {"status": status})
        return str(ack.get("status", status))

    async def typing(self, channel: str, typing: bool) -> None:
        await self._call("typing", {"channel": channel, "typing": typing})

    @contextlib.asynccontextmanager
    async def keep_typing(self, channel: str, every: float) -> AsyncIterator[None]:
        if every <= 0:
            raise ValueError("every must be positive: the server clears typing after 5 s")
        await self.typing(channel, True)
        renewals = asyncio.create_task(self._renew(channel, every), name=f"typing-{channel}")
        try:
            yield
        finally:
            renewals.cancel()
            await asyncio.gather(renewals, return_exceptions=True)
            try:
                await self.typing(channel, False)
            except TandemError as exc:  # it expires on the server by itself
                log.debug("typing false on %s: %s", channel, exc)

    async def _renew(self, channel: str, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.typing(channel, True)
            except TandemError as exc:  # e.g. reconnecting: the next renewal may get through
                log.debug("typing renewal on %s: %s", channel, exc)
