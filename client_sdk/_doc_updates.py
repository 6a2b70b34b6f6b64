"""The UpdateSender: our local document updates on their way to the server.

Local transactions are sent as ``doc.update`` (batched while one is in flight) while joined;
while not, nothing is queued: the next join's handshake carries them. A retryable refusal
is repaired with ``doc.sync`` (take what we lack, send what the server lacks), then with a
new join; a final one is reported on the document, never retried.
"""

from __future__ import annotations

import asyncio
import logging

from pycrdt import merge_updates

from client_sdk._connection import Connection
from client_sdk._doc_seams import SessionOwner, SessionSide
from client_sdk._doc_wire import EMPTY_UPDATE, binary
from client_sdk._errors import ConnectionLost, NotFound, TandemError

log = logging.getLogger("client_sdk")

MAX_REPAIRS = 4  # doc.sync attempts after a failed update before joining again


class UpdateSender:
    def __init__(self, side: SessionSide, owner: SessionOwner) -> None:
        self._side = side
        self._owner = owner
        self._outgoing: list[bytes] = []
        self._sender: asyncio.Task[None] | None = None

    def enqueue(self, update: bytes) -> None:
        if self._side.connection is None or not self._side.active:
            return  # not joined: the next join sends it
        self._outgoing.append(update)
        if self._sender is None or self._sender.done():
            self._sender = self._side.task(self._send_updates(), "send")

    def clear(self) -> None:
        """Forget what is waiting: the next join sends what the server lacks."""
        self._outgoing.clear()

    async def finish(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the updates under way; False if some are unsent."""
        sender = self._sender
        if sender is None or sender.done():
            return True
        await asyncio.wait({sender}, timeout=within)
        return sender.done()

    async def _send_updates(self) -> None:
        side = self._side
        while self._outgoing and side.active:
            conn = side.connection
            if conn is None or not conn.connected:
                self._outgoing.clear()
                return
            batch, self._outgoing = self._outgoing, []
            update = batch[0] if len(batch) == 1 else merge_updates(*batch)
            try:
                await self._owner._request(
                    conn, "doc.update", {"doc": side.doc_id, "update": update}
                )
            except ConnectionLost:
                return  # the next join sends what the server lacks
            except NotFound:
                side.schedule_join()  # the server does not have us as a member: join again
                return
            except TandemError as exc:
                if exc.retryable:
                    log.info("document %s: update failed (%s); syncing", side.doc_id, exc)
                    await self.repair(conn)
                else:
                    side.report(exc)

    async def repair(self, conn: Connection) -> None:
        """Anti-entropy after a failed update: take what we lack, send what the server lacks."""
        side = self._side
        for attempt in range(MAX_REPAIRS):
            await self._owner._backoff(attempt)
            if side.connection is not conn or not conn.connected or not side.active:
                return
            try:
                ack = await self._owner._request(
                    conn, "doc.sync", {"doc": side.doc_id, "sv": side.doc.get_state()}
                )
                side.apply_remote(binary(ack["update"]))
                missing = side.doc.get_update(binary(ack["sv"]))
                if missing != EMPTY_UPDATE:
                    await self._owner._request(
                        conn, "doc.update", {"doc": side.doc_id, "update": missing}
                    )
                return
            except ConnectionLost:
                return
            except NotFound:
                break
            except TandemError as exc:
                if not exc.retryable:
                    side.report(exc)
                    return
                log.info("document %s: sync failed (%s)", side.doc_id, exc)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("document %s: malformed doc.sync ack (%r)", side.doc_id, exc)
        side.schedule_join()  # a join is a full repair too
