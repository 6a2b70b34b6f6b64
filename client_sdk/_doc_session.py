"""One open document: the join handshake, the server's pushes, and the parts that sync it.

The wire contract (``doc.join``, ``doc.update``, ``doc.sync``, ``doc.awareness``,
``doc.leave``; the server pushes ``doc.update``, ``doc.awareness`` and ``doc.closed``):

- Join: send our state vector, the epoch we last synced under and our awareness; apply the
  ack's ``update``, then send what the server lacks (our state relative to the ack's ``sv``).
  A ``reset`` ack (a new epoch) closes the document with `DocumentReset`.
- Local transactions are sent as ``doc.update`` while joined; while not, nothing is queued:
  the next join's handshake carries them. A retryable refusal (or no ack) is repaired with
  ``doc.sync``; a final one is reported on the document, never retried (`_doc_updates`).
- After a reconnect the `Client` has every open document join again. Remote awareness states
  are dropped the moment the connection goes (the server drops ours) (`_doc_awareness`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from pycrdt import TransactionEvent

from client_sdk._connection import Connection
from client_sdk._doc_awareness import AwarenessSync
from client_sdk._doc_remote import REMOTE, RemoteChanges, RemoteOrigin
from client_sdk._doc_seams import SessionOwner
from client_sdk._doc_updates import UpdateSender
from client_sdk._doc_wire import EMPTY_UPDATE, binary
from client_sdk._errors import (
    ClientClosed,
    ConnectionLost,
    DocumentReset,
    PermissionDenied,
    RateLimited,
    TandemError,
    error_class,
    error_from_body,
)
from client_sdk._live_doc import LiveDoc
from client_sdk._subscription import is_transient

# These were defined here before the session's parts had modules of their own.
__all__ = ["REMOTE", "DocSession", "RemoteOrigin", "SessionOwner"]

log = logging.getLogger("client_sdk")


class DocSession:
    """Drives one `LiveDoc`; every method runs on the client's event loop."""

    def __init__(
        self,
        owner: SessionOwner,
        doc_id: str,
        *,
        awareness: Mapping[str, Any] | None,
        on_gone: Callable[[DocSession], None],
    ) -> None:
        self.doc_id = doc_id
        self.role: str | None = None
        self.epoch: str | None = None
        self.format: str | None = None
        self.closed: TandemError | None = None
        self.error: TandemError | None = None
        self.doc = LiveDoc(doc_id, self)
        if awareness is not None:
            self.doc.awareness.set_local_state(dict(awareness))
        self._owner = owner
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        self._conn: Connection | None = None  # the connection the document is joined on
        self._joining = False
        self._held: list[tuple[str, Mapping[str, Any]]] = []  # pushed while a join is under way
        self._needs_join = False
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._left = False
        self._changed = asyncio.Event()
        self._joiner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._farewell: asyncio.Task[None] | None = None  # a doc.leave nothing should cancel
        self._updates = UpdateSender(self, owner)
        self._remote = RemoteChanges(self, self._updates)
        self._doc_subscription = self.doc.observe(self._on_local_update)
        self._awareness = AwarenessSync(self, owner)

    @property
    def active(self) -> bool:
        return not self._left and self.closed is None

    @property
    def joined(self) -> bool:
        return self._conn is not None and self._conn.connected

    @property
    def connection(self) -> Connection | None:
        return self._conn

    # -- driven by the client ---------------------------------------------------------------

    def start(self) -> asyncio.Future[None]:
        """Join; the future resolves after the first join (or fails with its refusal)."""
        self.schedule_join()
        return self._ready

    def schedule_join(self) -> None:
        if not self.active:
            return
        self._needs_join = True
        if self._joiner is None or self._joiner.done():
            self._joiner = self.task(self._join_worker(), "join")

    def on_disconnect(self) -> None:
        self._conn = None
        self._updates.clear()  # the next join sends what the server lacks
        self._awareness.drop_remote()
        self.notify()

    def on_event(self, event: str, payload: Mapping[str, Any]) -> None:
        if not self.active:
            return
        if self._joining:
            # Until the join's answer is in, we cannot tell which epoch these belong to.
            self._held.append((event, payload))
            return
        self._handle(event, payload)

    def close(self, error: TandemError) -> None:
        """Stop syncing for good: the document was deleted, reset, revoked, or the client
        gave up. Local edits raise ``error`` from now on."""
        if not self.active:
            return
        was_open = self._ready.done()
        self.closed = error
        self._conn = None
        self._updates.clear()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._awareness.stop_observing()
        self._awareness.drop_remote()
        if not self._ready.done():
            self._ready.set_exception(error)
        self._on_gone(self)
        self.notify()
        if was_open and not isinstance(error, ClientClosed):
            log.warning("document %s closed: %s", self.doc_id, error)

    async def leave(self) -> None:
        if self._left:
            return
        if self.active and self.joined:
            await asyncio.sleep(0)  # edits made just before leaving are queued now
            if not await self._updates.finish(self._owner._request_timeout):
                log.warning("document %s: left with updates unsent", self.doc_id)
        was_active = self.active
        self._left = True
        conn, self._conn = self._conn, None
        await self._cancel_tasks()
        self.doc.unobserve(self._doc_subscription)
        if was_active:
            self._awareness.stop_observing()
            self._on_gone(self)
        self._awareness.drop_remote()
        if not self._ready.done():
            self._ready.cancel()
        self.notify()
        if was_active and conn is not None and conn.connected:
            try:
                await self._owner._request(conn, "doc.leave", {"doc": self.doc_id})
            except TandemError as exc:
                log.debug("doc.leave %s: %s", self.doc_id, exc)

    async def shutdown(self, error: TandemError) -> None:
        self.close(error)
        await self._cancel_tasks()

    # -- waiting ----------------------------------------------------------------------------

    async def synced(self, within: float | None) -> None:
        await self.wait_for(lambda: self.joined, within, what="synced")

    async def wait_for(
        self, check: Callable[[], bool], within: float | None, *, what: str = "condition met"
    ) -> None:
        try:
            async with asyncio.timeout(within):
                while True:
                    self._raise_if_gone()
                    if check():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"document {self.doc_id!r}: not {what} within {within}s") from None

    def _raise_if_gone(self) -> None:
        if self.closed is not None:
            raise _fresh(self.closed)
        if self._left:
            raise ClientClosed(f"document {self.doc_id!r} was left")

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- joining ----------------------------------------------------------------------------

    async def _join_worker(self) -> None:
        attempt = 0
        while self._needs_join and self.active:
            self._needs_join = False
            try:
                conn = await self._owner._wait_connection()
                await self._join(conn)
            except ConnectionLost:
                pass  # the client reconnects, then has every document join again
            except TandemError as exc:
                first = not self._ready.done()
                retry = isinstance(exc, RateLimited) if first else is_transient(exc)
                if not retry:
                    self.close(exc)
                    return
                log.info("joining document %s failed (%s); retrying", self.doc_id, exc)
                self._needs_join = True
                await self._owner._backoff(attempt)
                attempt += 1
            except (KeyError, TypeError, ValueError) as exc:
                self.close(error_class("internal")(f"malformed doc.join ack: {exc!r}"))
                return
            else:
                attempt = 0

    async def _join(self, conn: Connection) -> None:
        payload: dict[str, Any] = {"doc": self.doc_id, "sv": self.doc.get_state()}
        if self.epoch is not None:
            payload["epoch"] = self.epoch
        awareness = self._awareness.join_payload()
        if awareness is not None:
            payload["awareness"] = awareness
        self._conn = None
        self._joining = True
        try:
            ack = await self._owner._request(conn, "doc.join", payload)
        finally:
            self._joining = False
            held, self._held = self._held, []
        if ack.get("reset") is True:
            self.close(
                DocumentReset(
                    f"document {self.doc_id!r} was deleted and created again; "
                    "open it again (client.docs.open) to get the new one"
                )
            )
            # The join made us a member of the new document (our awareness shows there).
            self._farewell = asyncio.create_task(self._leave_quietly(conn))
            return
        epoch, role, fmt = str(ack["epoch"]), str(ack["role"]), str(ack["format"])
        update, server_sv = binary(ack["update"]), binary(ack["sv"])
        awareness_update = binary(ack["awareness"]) if ack.get("awareness") else b""
        self.epoch, self.role, self.format = epoch, role, fmt
        self.apply_remote(update)
        if awareness_update:
            self._awareness.apply(awareness_update)
        self._conn = conn
        for event, data in held:
            self._handle(event, data)
        missing = self.doc.get_update(server_sv)
        if not self._ready.done():
            self._ready.set_result(None)
        if not conn.connected:
            self.on_disconnect()  # it went while we answered: the client joins again
            return
        self.notify()
        if missing != EMPTY_UPDATE and role == "editor":
            self._updates.enqueue(missing)

    async def _leave_quietly(self, conn: Connection) -> None:
        try:
            await self._owner._request(conn, "doc.leave", {"doc": self.doc_id})
        except TandemError as exc:
            log.debug("doc.leave %s: %s", self.doc_id, exc)

    # -- incoming ---------------------------------------------------------------------------

    def _handle(self, event: str, payload: Mapping[str, Any]) -> None:
        try:
            if event == "doc.update":
                self.apply_remote(binary(payload["update"]))
            elif event == "doc.awareness":
                self._awareness.apply(binary(payload["update"]))
            elif event == "doc.closed":
                self.close(error_from_body(payload, default_code="not_found"))
        except (KeyError, TypeError):
            log.warning("document %s: ignoring a malformed %r event", self.doc_id, event)

    def apply_remote(self, update: bytes) -> None:
        self._remote.apply(update)

    # -- outgoing ---------------------------------------------------------------------------

    def _on_local_update(self, event: TransactionEvent) -> None:
        # Runs inside the committing transaction: what it raises, pycrdt raises to the editor.
        if self._remote.applying or self._left:
            return
        if self.closed is not None:
            raise _fresh(self.closed)
        if self.role == "viewer":
            error = PermissionDenied(
                f"document {self.doc_id!r} is read-only for this user (viewer): "
                "the edit stays local and is not sent"
            )
            self.error = error
            log.warning("%s", error)
            raise error
        if self._conn is not None:
            self._loop.call_soon_threadsafe(self._updates.enqueue, event.update)

    def report(self, error: TandemError) -> None:
        self.error = error
        log.warning("document %s: the server refused a change: %s", self.doc_id, error)
        self.notify()

    # -- tasks ------------------------------------------------------------------------------

    def task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"tandem-doc-{name}-{self.doc_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fresh(error: TandemError) -> TandemError:
    """A new instance of ``error`` to raise (one raised object per raise keeps tracebacks)."""
    return type(error)(error.message, code=error.code, retryable=error.retryable)
