"""The seams of a document session: what a `DocSession` needs from its client
(`SessionOwner`) and what the session's parts (sending updates, applying the server's,
awareness) need from the session (`SessionSide`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from client_sdk._connection import Connection
from client_sdk._errors import TandemError

if TYPE_CHECKING:
    from client_sdk._live_doc import LiveDoc


class SessionOwner(Protocol):
    _request_timeout: float

    async def _wait_connection(self) -> Connection: ...

    async def _request(
        self, conn: Connection, event: str, payload: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...

    async def _backoff(self, attempt: int) -> None: ...


class SessionSide(Protocol):
    doc_id: str
    doc: LiveDoc

    @property
    def active(self) -> bool: ...

    @property
    def joined(self) -> bool: ...

    @property
    def connection(self) -> Connection | None:
        """The connection the document is joined on (None while not joined)."""
        ...

    def notify(self) -> None: ...

    def report(self, error: TandemError) -> None: ...

    def apply_remote(self, update: bytes) -> None: ...

    def schedule_join(self) -> None: ...

    def task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...
