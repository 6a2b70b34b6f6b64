"""`LiveDoc`: a pycrdt ``Doc`` that ``client.docs.open`` keeps in sync with the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pycrdt import Awareness, Doc, Text

from client_sdk._errors import TandemError


class _Session(Protocol):
    role: str | None
    epoch: str | None
    format: str | None
    closed: TandemError | None
    error: TandemError | None

    @property
    def joined(self) -> bool: ...

    async def synced(self, within: float | None) -> None: ...

    async def wait_for(self, check: Callable[[], bool], within: float | None) -> None: ...

    async def leave(self) -> None: ...


class LiveDoc(Doc[Any]):
    """A collaborative document, edited with plain pycrdt and synced both ways.

    Every local transaction is sent to the server; every remote change is applied as it
    arrives (with a transaction origin of its own, so it is never sent back). After a
    reconnect the document joins again and both sides exchange what the other lacks, so edits
    made offline merge. For text documents the content is the Y.Text ``content``
    (`text`); rich documents hold a Y.XmlFragment ``content``.

    Local edits raise (pycrdt raises an observer's error from the transaction, in an
    ``ExceptionGroup``) when they cannot be synced: `PermissionDenied` for viewers (the edit
    stays local), or the `closed` error once the document is closed. An edit the server
    refuses later is reported in `error` and logged, never retried in a loop.

    Example:
        >>> async with client.docs.open("doc:notes-1") as doc:
        ...     doc.awareness.set_local_state({"user": {"id": "bot", "name": "Bot"}})
        ...     doc.text.insert(0, "Hello ")
        ...     await doc.wait_for(lambda d: "world" in str(d.text), timeout=5)

    Attributes:
        doc_id: The bare document id (``"notes-1"``).
        awareness: The pycrdt `Awareness` of this document. Set this client's state with
            ``awareness.set_local_state({...})`` (``None``, the default, shows nothing):
            changes are sent within about 50 ms and renewed every 15 s. ``states`` holds
            everyone's, remote ones dropped while disconnected.
    """

    def __init__(self, doc_id: str, session: _Session) -> None:
        super().__init__()
        self.doc_id = doc_id
        self.awareness = Awareness(self)
        self.awareness.set_local_state(None)
        self._live = session

    @property
    def role(self) -> str | None:
        """``"editor"`` or ``"viewer"``, from the latest join (``None`` before the first)."""
        return self._live.role

    @property
    def epoch(self) -> str | None:
        """The document's epoch: it changes only when it is deleted and created again."""
        return self._live.epoch

    @property
    def format(self) -> str | None:
        """``"text"`` or ``"rich"``, from the latest join."""
        return self._live.format

    @property
    def joined(self) -> bool:
        """True while joined on the current connection (edits are sent at once)."""
        return self._live.joined

    @property
    def closed(self) -> TandemError | None:
        """Why the document stopped syncing: `NotFound` (deleted), `PermissionDenied` (access
        revoked or lowered; open it again to read), `DocumentReset`, or the client's error."""
        return self._live.closed

    @property
    def error(self) -> TandemError | None:
        """The latest refusal of a local change or awareness update, if any."""
        return self._live.error

    @property
    def text(self) -> Text:
        """The Y.Text ``content`` of a text document (what editors bind to).

        Raises:
            TypeError: The document is a ``rich`` one (its content is a Y.XmlFragment).
        """
        if self._live.format == "rich":
            raise TypeError(
                f"document {self.doc_id!r} is rich text: use doc.get('content', type=XmlFragment)"
            )
        text: Text = self.get("content", type=Text)
        return text

    async def synced(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - a bounded wait is the point
    ) -> None:
        """Wait until the document is joined (at once if it is): after a reconnect, until the
        re-join handshake is done.

        Raises:
            TimeoutError: Not joined within ``timeout`` seconds.
            NotFound, PermissionDenied, DocumentReset, ...: The document was closed
                (see `closed`).
            ClientClosed: The document was left.
        """
        await self._live.synced(timeout)

    async def wait_for(
        self,
        predicate: Callable[[LiveDoc], object],
        timeout: float | None = 10.0,  # noqa: ASYNC109 - a bounded wait is the point
    ) -> None:
        """Wait until ``predicate(doc)`` is true, checking now and after every remote change
        (content, awareness or state).

        Raises:
            TimeoutError: Still false after ``timeout`` seconds (``None``: no limit).
            NotFound, PermissionDenied, DocumentReset, ...: The document was closed.
            ClientClosed: The document was left.
        """
        await self._live.wait_for(lambda: bool(predicate(self)), timeout)

    async def leave(self) -> None:
        """Send what is pending, then stop syncing (``doc.leave``). Leaving the
        ``async with`` block does it; the document stays readable afterwards.

        Edits made while disconnected are sent by the next join: leaving before it drops
        them (they stay in this copy only)."""
        await self._live.leave()
