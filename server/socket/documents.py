"""The Socket.IO side of collaborative documents: ``doc.join``, ``doc.update``, ``doc.sync``,
``doc.awareness`` and ``doc.leave`` (the contract is in the README).

Handlers are thin: parse, decide the caller's role, call the engine. They have limits of
their own: typing sends about ten updates a second and a moving cursor as many awareness
updates, far above what the general per-connection limit allows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from domain.documents import DocFormat, Document, DocumentStore, Role, doc_id_of
from domain.errors import Conflict, NotFound, PermissionDenied
from realtime.collab.engine import CollabEngine
from realtime.ratelimit import TokenBucket
from server.auth.authz import doc_role, granted_doc_role
from server.auth.tokens import Principal
from server.config import Settings
from server.payloads import (
    DocAwarenessRequest,
    DocJoinRequest,
    DocLeaveRequest,
    DocSyncRequest,
    DocUpdateRequest,
)
from server.socket.connections import Connection
from server.socket.gateway import SocketGateway
from server.transport.sockets import SocketServer

Ack = dict[str, Any]
# Events that may carry a whole document (a client's first sync after working offline).
LARGE_EVENTS = ("doc.join", "doc.update")


def new_epoch() -> str:
    return uuid.uuid4().hex


class DocGateway:
    def __init__(self, *, engine: CollabEngine, store: DocumentStore, settings: Settings) -> None:
        self._engine = engine
        self._store = store
        self._settings = settings

    def register(self, sio: SocketServer, gateway: SocketGateway) -> None:
        docs, awareness = self._doc_bucket, self._awareness_bucket
        for event, model, handler, limit in (
            ("doc.join", DocJoinRequest, self.join, docs),
            ("doc.update", DocUpdateRequest, self.update, docs),
            ("doc.sync", DocSyncRequest, self.sync, docs),
            ("doc.awareness", DocAwarenessRequest, self.awareness, awareness),
            ("doc.leave", DocLeaveRequest, self.leave, docs),
        ):
            sio.on(event, gateway.request(model, handler, limit=limit, general=False))  # type: ignore[arg-type]
        gateway.on_gone = self._engine.leave_all

    async def join(self, conn: Connection, req: DocJoinRequest) -> Ack:
        doc_id = doc_id_of(req.doc)
        role = await self.access(conn.principal, doc_id)
        answer = await self._engine.join(
            conn.sid,
            conn.principal.sub,
            doc_id,
            role,
            sv=req.sv,
            epoch=req.epoch,
            awareness=req.awareness,
            granted=granted_doc_role(conn.principal, doc_id),
        )
        return {
            "ok": True,
            "doc": doc_id,
            "epoch": answer.epoch,
            "reset": answer.reset,
            "role": answer.role.value,
            "format": answer.format,
            "update": answer.update,
            "sv": answer.sv,
            "awareness": answer.awareness,
        }

    async def update(self, conn: Connection, req: DocUpdateRequest) -> Ack:
        await self._engine.update(conn.sid, doc_id_of(req.doc), req.update)
        return {"ok": True}

    async def sync(self, conn: Connection, req: DocSyncRequest) -> Ack:
        update, sv = await self._engine.sync(conn.sid, doc_id_of(req.doc), req.sv)
        return {"ok": True, "update": update, "sv": sv}

    async def awareness(self, conn: Connection, req: DocAwarenessRequest) -> Ack:
        await self._engine.awareness(conn.sid, doc_id_of(req.doc), req.update)
        return {"ok": True}

    async def leave(self, conn: Connection, req: DocLeaveRequest) -> Ack:
        await self._engine.leave(conn.sid, doc_id_of(req.doc))
        return {"ok": True}

    async def access(self, principal: Principal, doc_id: str) -> Role:
        """The caller's role on the document, creating it when a token grants editing a
        document that does not exist yet. Callers without any right are told
        ``permission_denied`` whether or not it exists: existence does not leak."""
        document = await self._store.get(doc_id)
        role = doc_role(principal, doc_id, document)
        if role is None:
            raise PermissionDenied(f"not allowed to open document {doc_id!r}")
        if document is None:
            if role is not Role.EDITOR:
                raise NotFound(f"no document {doc_id!r}")
            created = Document(
                id=doc_id,
                format=DocFormat.TEXT,
                epoch=new_epoch(),
                owner=None,
                created_at=datetime.now(UTC),
            )
            try:
                await self._engine.create(created, None)
            except Conflict:
                pass  # created by someone else at the same moment
        return role

    def _doc_bucket(self, conn: Connection) -> TokenBucket:
        if conn.doc_bucket is None:
            s = self._settings
            conn.doc_bucket = TokenBucket(s.doc_rate_per_s, s.doc_burst)
        return conn.doc_bucket

    def _awareness_bucket(self, conn: Connection) -> TokenBucket:
        if conn.awareness_bucket is None:
            s = self._settings
            conn.awareness_bucket = TokenBucket(s.awareness_rate_per_s, s.awareness_burst)
        return conn.awareness_bucket
