"""One open document: the join handshake, local and remote updates, awareness and re-joins.

The wire contract (``doc.join``, ``doc.update``, ``doc.sync``, ``doc.awareness``,
``doc.leave``; the server pushes ``doc.update``, ``doc.awareness`` and ``doc.closed``):

- Join: send our state vector, the epoch we last synced under and our awareness; apply the
  ack's ``update``, then send what the server lacks (our state relative to the ack's ``sv``).
  A ``reset`` ack (a new epoch) closes the document with `DocumentReset`.
- Local transactions are sent as ``doc.update`` while joined; while not, nothing is queued:
  the next join's handshake carries them. A retryable refusal (or no ack) is repaired with
  ``doc.sync``; a final one is reported on the document, never retried.
- After a reconnect the `Client` has every open document join again. Remote awareness states
  are dropped the moment the connection goes (the server drops ours).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from pycrdt import TransactionEvent, merge_updates

from client_sdk._connection import Connection
from client_sdk._errors import (
    ClientClosed,
    ConnectionLost,
    DocumentReset,
    NotFound,
    PermissionDenied,
    RateLimited,
    TandemError,
    error_class,
    error_from_body,
)
from client_sdk._live_doc import LiveDoc
from client_sdk._subscription import is_transient

log = logging.getLogger("client_sdk")

EMPTY_UPDATE = b"\x00\x00"  # a Yjs update that carries nothing
AWARENESS_THROTTLE = 0.05  # seconds between two awareness updates of ours
AWARENESS_RENEW = 15.0  # renew our state at least this often (y-protocols does the same)
AWARENESS_OUTDATED = 30.0  # drop a remote state not renewed for this long
AWARENESS_CHECK = 3.0
MAX_REPAIRS = 4  # doc.sync attempts after a failed update before joining again


class RemoteOrigin:
    """The transaction origin of every change that came from the server."""

    def __repr__(self) -> str:
        return "<tandem remote>"


REMOTE = RemoteOrigin()


class SessionOwner(Protocol):
    _request_timeout: float

    async def _wait_connection(self) -> Connection: ...

    async def _request(
        self, conn: Connection, event: str, payload: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...

    async def _backoff(self, attempt: int) -> None: ...


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
        self._inbox: list[bytes] = []  # remote updates waiting for a user transaction to end
        self._outgoing: list[bytes] = []
        self._needs_join = False
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._left = False
        self._remote = False  # applying a server change: its transaction is not ours to send
        self._bumping = False
        self._awareness_dirty = False
        self._awareness_sent = float("-inf")
        self._changed = asyncio.Event()
        self._joiner: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._farewell: asyncio.Task[None] | None = None  # a doc.leave nothing should cancel
        self._doc_subscription = self.doc.observe(self._on_local_update)
        self._awareness_subscription = self.doc.awareness.observe(self._on_awareness)
        self._task(self._keep_awareness(), "awareness")

    @property
    def active(self) -> bool:
        return not self._left and self.closed is None

    @property
    def joined(self) -> bool:
        return self._conn is not None and self._conn.connected

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
            self._joiner = self._task(self._join_worker(), "join")

    def on_disconnect(self) -> None:
        self._conn = None
        self._outgoing.clear()  # the next join sends what the server lacks
        self._drop_remote_awareness()
        self._notify()

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
        self._outgoing.clear()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.doc.awareness.unobserve(self._awareness_subscription)
        self._drop_remote_awareness()
        if not self._ready.done():
            self._ready.set_exception(error)
        self._on_gone(self)
        self._notify()
        if was_open and not isinstance(error, ClientClosed):
            log.warning("document %s closed: %s", self.doc_id, error)

    async def leave(self) -> None:
        if self._left:
            return
        if self.active and self.joined:
            await asyncio.sleep(0)  # edits made just before leaving are queued now
            sender = self._sender
            if sender is not None and not sender.done():
                await asyncio.wait({sender}, timeout=self._owner._request_timeout)
                if not sender.done():
                    log.warning("document %s: left with updates unsent", self.doc_id)
        was_active = self.active
        self._left = True
        conn, self._conn = self._conn, None
        await self._cancel_tasks()
        self.doc.unobserve(self._doc_subscription)
        if was_active:
            self.doc.awareness.unobserve(self._awareness_subscription)
            self._on_gone(self)
        self._drop_remote_awareness()
        if not self._ready.done():
            self._ready.cancel()
        self._notify()
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

    def _notify(self) -> None:
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
        awareness = self.doc.awareness
        payload: dict[str, Any] = {"doc": self.doc_id, "sv": self.doc.get_state()}
        if self.epoch is not None:
            payload["epoch"] = self.epoch
        state = awareness.get_local_state()
        if state is not None:
            # A new clock: the others saw our state removed at the old one when we went.
            self._bumping = True
            try:
                awareness.set_local_state(state)
            finally:
                self._bumping = False
            self._awareness_dirty = False
            payload["awareness"] = awareness.encode_awareness_update([awareness.client_id])
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
        update, server_sv = _binary(ack["update"]), _binary(ack["sv"])
        awareness_update = _binary(ack["awareness"]) if ack.get("awareness") else b""
        self.epoch, self.role, self.format = epoch, role, fmt
        self._apply_remote(update)
        if awareness_update:
            self._apply_awareness(awareness_update)
        self._conn = conn
        for event, data in held:
            self._handle(event, data)
        missing = self.doc.get_update(server_sv)
        if not self._ready.done():
            self._ready.set_result(None)
        if not conn.connected:
            self.on_disconnect()  # it went while we answered: the client joins again
            return
        self._notify()
        if missing != EMPTY_UPDATE and role == "editor":
            self._enqueue(missing)

    async def _leave_quietly(self, conn: Connection) -> None:
        try:
            await self._owner._request(conn, "doc.leave", {"doc": self.doc_id})
        except TandemError as exc:
            log.debug("doc.leave %s: %s", self.doc_id, exc)

    # -- incoming ---------------------------------------------------------------------------

    def _handle(self, event: str, payload: Mapping[str, Any]) -> None:
        try:
            if event == "doc.update":
                self._apply_remote(_binary(payload["update"]))
            elif event == "doc.awareness":
                self._apply_awareness(_binary(payload["update"]))
            elif event == "doc.closed":
                self.close(error_from_body(payload, default_code="not_found"))
        except (KeyError, TypeError):
            log.warning("document %s: ignoring a malformed %r event", self.doc_id, event)

    def _apply_remote(self, update: bytes) -> None:
        try:
            transaction = self.doc.transaction(origin=REMOTE)
        except RuntimeError:
            # A user transaction is open across an await: apply once it has ended.
            self._inbox.append(update)
            if len(self._inbox) == 1:
                self._loop.call_later(0.01, self._drain_inbox)
            return
        self._remote = True
        try:
            with transaction:
                self.doc.apply_update(update)
        except ValueError:
            log.warning("document %s: the server sent an invalid update; resyncing", self.doc_id)
            if self._conn is not None:
                self._task(self._repair(self._conn), "repair")
        except Exception:
            log.exception("document %s: an observer failed on a remote change", self.doc_id)
        finally:
            self._remote = False
        self._notify()

    def _drain_inbox(self) -> None:
        updates, self._inbox = self._inbox, []
        if self.active:
            for update in updates:
                self._apply_remote(update)

    def _apply_awareness(self, update: bytes) -> None:
        try:
            self.doc.awareness.apply_awareness_update(update, "remote")
        except Exception:
            log.warning("document %s: ignoring a malformed awareness update", self.doc_id)

    # -- outgoing ---------------------------------------------------------------------------

    def _on_local_update(self, event: TransactionEvent) -> None:
        # Runs inside the committing transaction: what it raises, pycrdt raises to the editor.
        if self._remote or self._left:
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
            self._loop.call_soon_threadsafe(self._enqueue, event.update)

    def _enqueue(self, update: bytes) -> None:
        if self._conn is None or not self.active:
            return  # not joined: the next join sends it
        self._outgoing.append(update)
        if self._sender is None or self._sender.done():
            self._sender = self._task(self._send_updates(), "send")

    async def _send_updates(self) -> None:
        while self._outgoing and self.active:
            conn = self._conn
            if conn is None or not conn.connected:
                self._outgoing.clear()
                return
            batch, self._outgoing = self._outgoing, []
            update = batch[0] if len(batch) == 1 else merge_updates(*batch)
            try:
                await self._owner._request(
                    conn, "doc.update", {"doc": self.doc_id, "update": update}
                )
            except ConnectionLost:
                return  # the next join sends what the server lacks
            except NotFound:
                self.schedule_join()  # the server does not have us as a member: join again
                return
            except TandemError as exc:
                if exc.retryable:
                    log.info("document %s: update failed (%s); syncing", self.doc_id, exc)
                    await self._repair(conn)
                else:
                    self._report(exc)

    async def _repair(self, conn: Connection) -> None:
        """Anti-entropy after a failed update: take what we lack, send what the server lacks."""
        for attempt in range(MAX_REPAIRS):
            await self._owner._backoff(attempt)
            if self._conn is not conn or not conn.connected or not self.active:
                return
            try:
                ack = await self._owner._request(
                    conn, "doc.sync", {"doc": self.doc_id, "sv": self.doc.get_state()}
                )
                self._apply_remote(_binary(ack["update"]))
                missing = self.doc.get_update(_binary(ack["sv"]))
                if missing != EMPTY_UPDATE:
                    await self._owner._request(
                        conn, "doc.update", {"doc": self.doc_id, "update": missing}
                    )
                return
            except ConnectionLost:
                return
            except NotFound:
                break
            except TandemError as exc:
                if not exc.retryable:
                    self._report(exc)
                    return
                log.info("document %s: sync failed (%s)", self.doc_id, exc)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("document %s: malformed doc.sync ack (%r)", self.doc_id, exc)
        self.schedule_join()  # a join is a full repair too

    def _report(self, error: TandemError) -> None:
        self.error = error
        log.warning("document %s: the server refused a change: %s", self.doc_id, error)
        self._notify()

    # -- awareness --------------------------------------------------------------------------

    def _on_awareness(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        origin = change[1]
        if origin == "local":
            if topic == "update" and not self._bumping:
                self._loop.call_soon_threadsafe(self._announce)
        elif topic == "change":
            self._notify()

    def _announce(self) -> None:
        self._awareness_dirty = True
        if self.active and (self._announcer is None or self._announcer.done()):
            self._announcer = self._task(self._send_awareness(), "awareness-send")

    async def _send_awareness(self) -> None:
        awareness = self.doc.awareness
        while self._awareness_dirty and self.active:
            delay = self._awareness_sent + AWARENESS_THROTTLE - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = self._conn
            if conn is None or not conn.connected:
                return  # the next join carries our state
            self._awareness_dirty = False
            update = awareness.encode_awareness_update([awareness.client_id])
            self._awareness_sent = self._loop.time()
            try:
                await self._owner._request(
                    conn, "doc.awareness", {"doc": self.doc_id, "update": update}
                )
            except ConnectionLost:
                return
            except TandemError as exc:
                if exc.retryable:
                    self._awareness_dirty = True
                    await self._owner._backoff(1)
                else:
                    self._report(exc)

    async def _keep_awareness(self) -> None:
        """Renew our state before the others time it out; time out theirs (y-protocols)."""
        awareness = self.doc.awareness
        while True:
            await asyncio.sleep(AWARENESS_CHECK)
            now = time.time() * 1000
            state = awareness.get_local_state()
            meta = awareness.meta.get(awareness.client_id)
            if self.joined and state is not None and meta is not None:
                if now - meta["lastUpdated"] >= AWARENESS_RENEW * 1000:
                    awareness.set_local_state(state)
            outdated = [
                client
                for client, info in awareness.meta.items()
                if client != awareness.client_id
                and client in awareness.states
                and now - info["lastUpdated"] >= AWARENESS_OUTDATED * 1000
            ]
            if outdated:
                awareness.remove_awareness_states(outdated, "timeout")

    def _drop_remote_awareness(self) -> None:
        awareness = self.doc.awareness
        others = [client for client in awareness.states if client != awareness.client_id]
        if others:
            awareness.remove_awareness_states(others, "disconnect")
        for client in [client for client in awareness.meta if client != awareness.client_id]:
            # Forget their clocks too: the next join's states come with the same ones.
            del awareness.meta[client]

    # -- tasks ------------------------------------------------------------------------------

    def _task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
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


def _binary(value: object) -> bytes:
    """Binary fields arrive as bytes (attachments, msgpack); accept the other buffer types."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes, got {type(value).__name__}")


def _fresh(error: TandemError) -> TandemError:
    """A new instance of ``error`` to raise (one raised object per raise keeps tracebacks)."""
    return type(error)(error.message, code=error.code, retryable=error.retryable)
