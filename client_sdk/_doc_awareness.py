"""The AwarenessSync: this client's awareness state kept on the server, the others' kept fresh.

Our state is sent (``doc.awareness``) at most every ``AWARENESS_THROTTLE`` seconds while
joined, and renewed at least every ``AWARENESS_RENEW``; while not joined nothing is sent (the
next join carries it, under a new clock). Remote states not renewed for
``AWARENESS_OUTDATED`` are timed out, as y-protocols does, and all of them are dropped the
moment the connection goes (the server drops ours).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from client_sdk._doc_seams import SessionOwner, SessionSide
from client_sdk._errors import ConnectionLost, TandemError

log = logging.getLogger("client_sdk")

AWARENESS_THROTTLE = 0.05  # seconds between two awareness updates of ours
AWARENESS_RENEW = 15.0  # renew our state at least this often (y-protocols does the same)
AWARENESS_OUTDATED = 30.0  # drop a remote state not renewed for this long
AWARENESS_CHECK = 3.0


class AwarenessSync:
    def __init__(self, side: SessionSide, owner: SessionOwner) -> None:
        self._side = side
        self._owner = owner
        self._awareness = side.doc.awareness
        self._loop = asyncio.get_running_loop()
        self._bumping = False
        self._dirty = False
        self._sent = float("-inf")
        self._announcer: asyncio.Task[None] | None = None
        self._subscription = self._awareness.observe(self._on_awareness)
        side.task(self._keep_awareness(), "awareness")

    def stop_observing(self) -> None:
        self._awareness.unobserve(self._subscription)

    def join_payload(self) -> bytes | None:
        """Our state for a join's ``awareness`` (None when we show nothing)."""
        awareness = self._awareness
        state = awareness.get_local_state()
        if state is None:
            return None
        # A new clock: the others saw our state removed at the old one when we went.
        self._bumping = True
        try:
            awareness.set_local_state(state)
        finally:
            self._bumping = False
        self._dirty = False
        return awareness.encode_awareness_update([awareness.client_id])

    def apply(self, update: bytes) -> None:
        """Apply a remote awareness update from the server; a malformed one is ignored."""
        try:
            self._awareness.apply_awareness_update(update, "remote")
        except Exception:
            log.warning("document %s: ignoring a malformed awareness update", self._side.doc_id)

    def drop_remote(self) -> None:
        awareness = self._awareness
        others = [client for client in awareness.states if client != awareness.client_id]
        if others:
            awareness.remove_awareness_states(others, "disconnect")
        for client in [client for client in awareness.meta if client != awareness.client_id]:
            # Forget their clocks too: the next join's states come with the same ones.
            del awareness.meta[client]

    def _on_awareness(self, topic: str, change: tuple[dict[str, Any], Any]) -> None:
        origin = change[1]
        if origin == "local":
            if topic == "update" and not self._bumping:
                self._loop.call_soon_threadsafe(self._announce)
        elif topic == "change":
            self._side.notify()

    def _announce(self) -> None:
        self._dirty = True
        if self._side.active and (self._announcer is None or self._announcer.done()):
            self._announcer = self._side.task(self._send_awareness(), "awareness-send")

    async def _send_awareness(self) -> None:
        awareness = self._awareness
        side = self._side
        while self._dirty and side.active:
            delay = self._sent + AWARENESS_THROTTLE - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = side.connection
            if conn is None or not conn.connected:
                return  # the next join carries our state
            self._dirty = False
            update = awareness.encode_awareness_update([awareness.client_id])
            self._sent = self._loop.time()
            try:
                await self._owner._request(
                    conn, "doc.awareness", {"doc": side.doc_id, "update": update}
                )
            except ConnectionLost:
                return
            except TandemError as exc:
                if exc.retryable:
                    self._dirty = True
                    await self._owner._backoff(1)
                else:
                    side.report(exc)

    async def _keep_awareness(self) -> None:
        """Renew our state before the others time it out; time out theirs (y-protocols)."""
        awareness = self._awareness
        while True:
            await asyncio.sleep(AWARENESS_CHECK)
            now = time.time() * 1000
            state = awareness.get_local_state()
            meta = awareness.meta.get(awareness.client_id)
            if self._side.joined and state is not None and meta is not None:
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
