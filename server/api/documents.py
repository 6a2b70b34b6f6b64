"""The documents HTTP API: create documents and manage who may edit them, read their content,
edit them from a backend, and keep named versions to restore.

Edits and restores go through the document engine exactly as a client's update does: every
connected editor sees them at once, on every node, and they are logged like any other.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from pycrdt import Text as PyText
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.documents import DocFormat, Document, Role, Version, doc_id_of
from domain.errors import Conflict, InvalidPayload, NotFound, PayloadTooLarge, PermissionDenied
from realtime.collab import crdt
from realtime.collab.room import Room
from server.api.callers import ERRORS, RuntimeDep, needs
from server.auth.authz import doc_role
from server.auth.tokens import Principal
from server.runtime import Runtime
from server.socket.documents import new_epoch

router = APIRouter(prefix="/api/docs", tags=["documents"], responses=ERRORS)  # type: ignore[arg-type]
DocsCaller = Annotated[Principal, needs("docs")]

UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
RoleName = Literal["editor", "viewer"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberIn(Body):
    user: UserId
    role: RoleName = "editor"


class CreateDocument(Body):
    id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Letters, digits and _.@=+-; generated when absent."
    )
    format: Literal["text", "rich"] = Field(
        default="text",
        description="text: the content is the Y.Text 'content'; rich: the Y.XmlFragment "
        "'content' (ProseMirror/Tiptap with field 'content').",
    )
    content: str | None = Field(default=None, description="Initial text content.")
    members: Annotated[list[MemberIn], Field(max_length=1000)] = Field(default_factory=list)


class MemberOut(BaseModel):
    user: str
    role: RoleName


class DocumentOut(BaseModel):
    id: str
    format: str
    epoch: str = Field(description="Changes only when the document is deleted and re-created.")
    owner: str | None
    created_at: datetime
    members: list[MemberOut]


class DocumentContent(DocumentOut):
    content: str = Field(description="The text, or the XML of a rich document's fragment.")
    size: int = Field(description="Bytes of the document's Yjs state.")


class SetRole(Body):
    role: RoleName


class Insert(Body):
    insert: str
    at: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Default: the end.")


class Delete(Body):
    delete: Annotated[int, Field(ge=1)]
    at: Annotated[int, Field(ge=0)]


class Append(Body):
    append: str


class Replace(Body):
    replace: str = Field(description="The whole new text; only what differs is changed.")


class Edit(Body):
    ops: Annotated[list[Insert | Delete | Append | Replace], Field(min_length=1, max_length=1000)]


class Edited(BaseModel):
    ok: bool = True
    size: int


class NameVersion(Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class VersionOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    created_by: str | None
    size: int


class VersionList(BaseModel):
    versions: list[VersionOut]


class VersionContent(VersionOut):
    content: str


# -- documents --------------------------------------------------------------------------------


@router.post("", status_code=201, response_model=DocumentOut)
async def create_document(body: CreateDocument, caller: DocsCaller, runtime: RuntimeDep) -> Any:
    """Create a document. A user creating it becomes its owner (an editor who manages its
    members); with an API key it has no owner. 409 when the id is taken."""
    doc_id = doc_id_of(body.id) if body.id is not None else uuid.uuid4().hex[:16]
    fmt = DocFormat(body.format)
    document = Document(
        id=doc_id,
        format=fmt,
        epoch=new_epoch(),
        owner=None if caller.is_service else caller.sub,
        created_at=datetime.now(UTC),
        members={m.user: Role(m.role) for m in body.members},
    )
    if body.content and len(body.content.encode()) > runtime.settings.doc_max_bytes:
        raise PayloadTooLarge(f"content is over the {runtime.settings.doc_max_bytes}-byte limit")
    await runtime.collab.create(document, body.content)
    return _document_out(document)


@router.get("/{doc_id}", response_model=DocumentContent)
async def get_document(doc_id: str, caller: DocsCaller, runtime: RuntimeDep) -> Any:
    """The document with its current content (as the live document holds it, on any node)."""
    document, _ = await _authorized(runtime, caller, doc_id, Role.VIEWER)
    content, size = await runtime.collab.read(document.id, _content_and_size)
    return DocumentContent(**_document_out(document).model_dump(), content=content, size=size)


@router.delete("/{doc_id}", status_code=204)
async def delete_document(doc_id: str, caller: DocsCaller, runtime: RuntimeDep) -> Response:
    """Delete the document, its history and versions; its connected editors are told
    (``doc.closed``, ``not_found``). The owner or an API key."""
    document = await _managed(runtime, caller, doc_id)
    await runtime.documents.delete(document.id)
    await runtime.collab.deleted(document.id)
    return Response(status_code=204)


@router.put("/{doc_id}/members/{user}", response_model=DocumentOut)
async def set_member(
    doc_id: str, user: str, body: SetRole, caller: DocsCaller, runtime: RuntimeDep
) -> Any:
    """Give ``user`` a role; their open sessions take it at once (unless their token grants
    more: a lowered editor's next update is refused with ``permission_denied``)."""
    document = await _managed(runtime, caller, doc_id)
    role = Role(body.role)
    await runtime.documents.set_member(document.id, user, role)
    await runtime.collab.access_changed(document.id, user, role)
    return _document_out(await _require(runtime, document.id))


@router.delete("/{doc_id}/members/{user}", response_model=DocumentOut)
async def remove_member(doc_id: str, user: str, caller: DocsCaller, runtime: RuntimeDep) -> Any:
    """Take ``user``'s membership away; their open sessions are closed (``doc.closed``,
    ``permission_denied``) unless their token grants the document by itself."""
    document = await _managed(runtime, caller, doc_id)
    if await runtime.documents.remove_member(document.id, user):
        await runtime.collab.access_changed(document.id, user, None)
    return _document_out(await _require(runtime, document.id))


@router.post("/{doc_id}/edit", response_model=Edited)
async def edit_document(doc_id: str, body: Edit, caller: DocsCaller, runtime: RuntimeDep) -> Edited:
    """Edit a text document from a backend, in one transaction, through the same path as a
    client's update. Indexes count Unicode code points of the current text."""
    document, _ = await _authorized(runtime, caller, doc_id, Role.EDITOR)
    if document.format is not DocFormat.TEXT:
        raise Conflict("server-side edits apply to text documents; edit rich ones from a client")

    def apply(room: Room, copy: Any) -> None:
        text = crdt.content_root(copy, room.format)
        assert isinstance(text, PyText)  # the format was checked above
        for op in body.ops:
            length = len(text)
            match op:
                case Insert(insert=value, at=at):
                    text.insert(_index(length if at is None else at, length), value)
                case Delete(delete=count, at=at):
                    end = _index(at + count, length)
                    del text[_index(at, length) : end]
                case Append(append=value):
                    text.insert(length, value)
                case Replace(replace=value):
                    crdt.set_text(text, value)

    size = await runtime.collab.edit(document.id, apply)
    return Edited(size=size)


# -- versions ---------------------------------------------------------------------------------


@router.post("/{doc_id}/versions", status_code=201, response_model=VersionOut)
async def name_version(
    doc_id: str, body: NameVersion, caller: DocsCaller, runtime: RuntimeDep
) -> Any:
    """Keep the document's current state under a name (editors)."""
    document, _ = await _authorized(runtime, caller, doc_id, Role.EDITOR)
    state = await runtime.collab.read(document.id, lambda room: room.doc.get_update())
    author = None if caller.is_service else caller.sub
    return _version_out(await runtime.documents.save_version(document.id, body.name, state, author))


@router.get("/{doc_id}/versions", response_model=VersionList)
async def list_versions(doc_id: str, caller: DocsCaller, runtime: RuntimeDep) -> VersionList:
    document, _ = await _authorized(runtime, caller, doc_id, Role.VIEWER)
    versions = await runtime.documents.versions(document.id)
    return VersionList(versions=[_version_out(v) for v in versions])


@router.get("/{doc_id}/versions/{version_id}", response_model=VersionContent)
async def read_version(
    doc_id: str, version_id: int, caller: DocsCaller, runtime: RuntimeDep
) -> VersionContent:
    document, _ = await _authorized(runtime, caller, doc_id, Role.VIEWER)
    version, state = await _version(runtime, document.id, version_id)
    content = await asyncio.to_thread(crdt.text_of, state, document.format)
    return VersionContent(**_version_out(version).model_dump(), content=content)


@router.post("/{doc_id}/versions/{version_id}/restore", response_model=Edited)
async def restore_version(
    doc_id: str, version_id: int, caller: DocsCaller, runtime: RuntimeDep
) -> Edited:
    """Make the document's content the version's again, as a new edit on top of the current
    state: every client converges to it (offline ones when they come back), nothing is
    doubled, and the history before the restore stays (it can be restored in turn)."""
    document, _ = await _authorized(runtime, caller, doc_id, Role.EDITOR)
    _, state = await _version(runtime, document.id, version_id)
    source = await asyncio.to_thread(crdt.doc_from, state, threads=True)
    size = await runtime.collab.edit(
        document.id, lambda room, copy: crdt.replace_content(copy, source, room.format)
    )
    return Edited(size=size)


# -- helpers ----------------------------------------------------------------------------------


async def _require(runtime: Runtime, doc_id: str) -> Document:
    document = await runtime.documents.get(doc_id_of(doc_id))
    if document is None:
        raise NotFound(f"no document {doc_id!r}")
    return document


async def _authorized(
    runtime: Runtime, caller: Principal, doc_id: str, needed: Role
) -> tuple[Document, Role]:
    """The document, if ``caller`` holds at least ``needed`` on it; a caller with no role at
    all is told ``permission_denied`` whether or not it exists."""
    document = await runtime.documents.get(doc_id_of(doc_id))
    role = Role.EDITOR if caller.is_service else doc_role(caller, doc_id_of(doc_id), document)
    if role is None:
        raise PermissionDenied(f"not allowed to open document {doc_id!r}")
    if document is None:
        raise NotFound(f"no document {doc_id!r}")
    if needed is Role.EDITOR and not role.can_edit:
        raise PermissionDenied(f"you may read document {doc_id!r} but not change it")
    return document, role


async def _managed(runtime: Runtime, caller: Principal, doc_id: str) -> Document:
    """The document, if ``caller`` may manage it: an API key, an admin, or its owner."""
    document = await runtime.documents.get(doc_id_of(doc_id))
    allowed = (
        caller.is_service or caller.admin or (document is not None and document.owner == caller.sub)
    )
    if not allowed:
        raise PermissionDenied(f"only the owner of document {doc_id!r} may manage it")
    if document is None:
        raise NotFound(f"no document {doc_id!r}")
    return document


async def _version(runtime: Runtime, doc_id: str, version_id: int) -> tuple[Version, bytes]:
    found = await runtime.documents.version(doc_id, version_id)
    if found is None:
        raise NotFound(f"document {doc_id!r} has no version {version_id}")
    return found


def _content_and_size(room: Room) -> tuple[str, int]:
    return str(crdt.content_root(room.doc, room.format)), room.exact_size()


def _index(index: int, length: int) -> int:
    if index > length:
        raise InvalidPayload(f"index {index} is past the end of the text ({length} characters)")
    return index


def _document_out(document: Document) -> DocumentOut:
    return DocumentOut(
        id=document.id,
        format=document.format.value,
        epoch=document.epoch,
        owner=document.owner,
        created_at=document.created_at,
        members=[MemberOut(user=u, role=r.value) for u, r in sorted(document.members.items())],
    )


def _version_out(version: Version) -> VersionOut:
    return VersionOut(
        id=version.id,
        name=version.name,
        created_at=version.created_at,
        created_by=version.created_by,
        size=version.size,
    )
