"""A websocket session's incoming messages: in order, and its upgrade from long-polling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from server.transport.frames import engineio_frame
from server.transport.session import NOOP, PACKET_TYPES, PING, PONG, UPGRADE, Session
from server.transport.websocket import Socket

if TYPE_CHECKING:
    from server.transport.engine import EngineServer

log = logging.getLogger(__name__)


class Reader:
    """A websocket session's messages, in order: handled in place when they need no
    awaiting, queued behind one that does."""

    __slots__ = ("_engine", "_session")

    def __init__(self, engine: EngineServer, session: Session) -> None:
        self._engine = engine
        self._session = session

    def received(self, data: str | bytes) -> None:
        session = self._session
        if session.backlog is not None:
            session.backlog.append(data)
            return
        if isinstance(data, str) and (not data or data[0] not in PACKET_TYPES):
            handled = self._engine.malformed(session, "malformed engine.io frame")
        else:
            handled = self._engine.received(session, data)
        if handled is not None:
            session.backlog = []
            self._engine.spawn(self._drain(handled))

    def lost(self) -> None:
        session = self._session
        if session.backlog is not None:
            session.backlog.append(None)
        else:
            self._engine.close(session, "transport close")

    async def _drain(self, first: Awaitable[None]) -> None:
        session = self._session
        backlog = session.backlog
        assert backlog is not None
        try:
            await first
            while backlog:
                data = backlog.pop(0)
                if data is None:
                    self._engine.close(session, "transport close")
                    continue
                if session.closed:
                    continue
                if isinstance(data, str) and (not data or data[0] not in PACKET_TYPES):
                    handled = self._engine.malformed(session, "malformed engine.io frame")
                else:
                    handled = self._engine.received(session, data)
                if handled is not None:
                    await handled
        except Exception:
            log.exception("%s: error handling a message", session.sid)
        finally:
            session.backlog = None


class Upgrade:
    """A long-polling session moving to a websocket: probe, noop, upgrade."""

    __slots__ = ("_engine", "_session", "_socket", "_probed", "timer")

    def __init__(self, engine: EngineServer, session: Session, socket: Socket) -> None:
        self._engine = engine
        self._session = session
        self._socket = socket
        self._probed = False
        self.timer: asyncio.TimerHandle | None = None

    def received(self, data: str | bytes) -> None:
        session = self._session
        if session.closed:
            self.fail()
        elif not self._probed and data == PING + "probe":
            self._probed = True
            self._socket.write(engineio_frame(PONG + "probe"))
            session.send(NOOP)  # ends the pending poll: the client stops polling
        elif self._probed and data == UPGRADE:
            self._cancel()
            session.upgrading = False
            self._engine.attach(session, self._socket)
        else:
            log.info("%s: failed websocket upgrade (%r)", session.sid, str(data)[:16])
            self.fail()

    def lost(self) -> None:
        self._cancel()
        self._session.upgrading = False

    def fail(self) -> None:
        self._cancel()
        self._session.upgrading = False
        self._socket.close()

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
