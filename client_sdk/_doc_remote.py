"""RemoteChanges: the server's document updates, applied to the local `LiveDoc`.

Each is applied in a transaction of its own origin (`REMOTE`), so it is never sent back.
One arriving while a user transaction is open (across an await) waits until it has ended.
An update the document refuses starts a repair (``doc.sync``).
"""

from __future__ import annotations

import asyncio
import logging

from client_sdk._doc_seams import SessionSide
from client_sdk._doc_updates import UpdateSender

log = logging.getLogger("client_sdk")


class RemoteOrigin:
    """The transaction origin of every change that came from the server."""

    def __repr__(self) -> str:
        return "<tandem remote>"


REMOTE = RemoteOrigin()


class RemoteChanges:
    def __init__(self, side: SessionSide, updates: UpdateSender) -> None:
        self._side = side
        self._updates = updates
        self._loop = asyncio.get_running_loop()
        self._inbox: list[bytes] = []  # remote updates waiting for a user transaction to end
        # True while a server change is applied: its transaction is not ours to send.
        self.applying = False

    def apply(self, update: bytes) -> None:
        side = self._side
        try:
            transaction = side.doc.transaction(origin=REMOTE)
        except RuntimeError:
            # A user transaction is open across an await: apply once it has ended.
            self._inbox.append(update)
            if len(self._inbox) == 1:
                self._loop.call_later(0.01, self._drain_inbox)
            return
        self.applying = True
        try:
            with transaction:
                side.doc.apply_update(update)
        except ValueError:
            log.warning("document %s: the server sent an invalid update; resyncing", side.doc_id)
            conn = side.connection
            if conn is not None:
                side.task(self._updates.repair(conn), "repair")
        except Exception:
            log.exception("document %s: an observer failed on a remote change", side.doc_id)
        finally:
            self.applying = False
        side.notify()

    def _drain_inbox(self) -> None:
        updates, self._inbox = self._inbox, []
        if self._side.active:
            for update in updates:
                self._side.apply_remote(update)
