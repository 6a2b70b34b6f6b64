"""Collaborative documents on a `Client` (``client.docs``): open one, get a live pycrdt Doc."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

from client_sdk._doc_session import DocSession, SessionOwner
from client_sdk._errors import RequestTimeout, TandemError
from client_sdk._live_doc import LiveDoc
from client_sdk._models import bare_doc_id

log = logging.getLogger("client_sdk")

# What the server pushes about documents (never channel publications: "doc." is reserved).
DOC_EVENTS = frozenset({"doc.update", "doc.awareness", "doc.closed"})


class _Client(SessionOwner, Protocol):
    def _check_usable(self) -> None: ...


class DocsWatcher:
    """Live collaborative documents for a `Client` (``client.docs``).

    Example:
        >>> async with client.docs.open("doc:notes-1") as doc:
        ...     doc.text.insert(0, "Hello")
    """

    def __init__(self, client: _Client) -> None:
        self._client = client
        self._sessions: dict[str, DocSession] = {}

    def open(self, doc: str, *, awareness: Mapping[str, Any] | None = None) -> OpenDoc:
        """A document to enter (``async with``): it joins, then yields the `LiveDoc`.

        Args:
            doc: The document id, ``"notes-1"`` or channel-style ``"doc:notes-1"``.
            awareness: This client's initial awareness state, sent with the join (for
                example ``{"user": {"id": ..., "name": ..., "color": ...}, "cursor": None}``);
                change it later with ``doc.awareness.set_local_state``.

        Returns:
            An `OpenDoc`. Entering it raises the join's refusal: `PermissionDenied` (no access),
            `NotFound` (no such document and no right to create it), `InvalidPayload` (a bad
            id), or `RequestTimeout`. A document opens once per client at a time
            (`ValueError` otherwise).
        """
        return OpenDoc(self, bare_doc_id(doc), awareness)

    @property
    def open_documents(self) -> list[str]:
        """Ids of the documents open on this client."""
        return sorted(self._sessions)

    async def _open(self, doc_id: str, awareness: Mapping[str, Any] | None) -> DocSession:
        self._client._check_usable()
        if doc_id in self._sessions:
            raise ValueError(f"document {doc_id!r} is already open on this client")
        session = DocSession(self._client, doc_id, awareness=awareness, on_gone=self._forget)
        self._sessions[doc_id] = session
        ready = session.start()
        timeout = self._client._request_timeout
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(ready)
        except TimeoutError:
            await session.leave()
            raise RequestTimeout(f"no doc.join reply for {doc_id!r} within {timeout}s") from None
        except BaseException:
            await session.leave()
            raise
        return session

    def _forget(self, session: DocSession) -> None:
        if self._sessions.get(session.doc_id) is session:
            del self._sessions[session.doc_id]

    # -- driven by the client ---------------------------------------------------------------

    def _on_event(self, event: str, payload: Mapping[str, Any]) -> None:
        session = self._sessions.get(str(payload.get("doc")))
        if session is not None:
            session.on_event(event, payload)

    def _on_disconnect(self) -> None:
        for session in list(self._sessions.values()):
            session.on_disconnect()

    def _on_reconnect(self) -> None:
        for session in list(self._sessions.values()):
            session.schedule_join()

    def _fail(self, error: TandemError) -> None:
        for session in list(self._sessions.values()):
            session.close(error)

    async def _close(self, error: TandemError) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(session.shutdown(error) for session in sessions))
        self._sessions.clear()


class OpenDoc:
    """``async with client.docs.open(doc) as live:`` joins, yields the `LiveDoc`, and leaves
    (sending what is pending first) at the end."""

    def __init__(self, docs: DocsWatcher, doc_id: str, awareness: Mapping[str, Any] | None) -> None:
        self.doc_id = doc_id
        self._docs = docs
        self._awareness = awareness
        self._session: DocSession | None = None

    async def __aenter__(self) -> LiveDoc:
        if self._session is not None:
            raise RuntimeError("this OpenDoc was already entered; call client.docs.open again")
        self._session = await self._docs._open(self.doc_id, self._awareness)
        return self._session.doc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.leave()
