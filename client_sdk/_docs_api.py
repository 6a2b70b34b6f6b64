"""Collaborative documents over HTTP (``api.docs``): create, read, edit, members, versions."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from client_sdk._errors import Conflict, TandemError
from client_sdk._models import bare_doc_id

if TYPE_CHECKING:
    from client_sdk._http import ServerAPI

DocFormat = Literal["text", "rich"]
DocRole = Literal["editor", "viewer"]


@dataclass(frozen=True, slots=True)
class DocMember:
    """A user's membership: ``role`` is ``"editor"`` or ``"viewer"``."""

    user: str
    role: str


@dataclass(frozen=True, slots=True)
class Document:
    """A document's metadata.

    Attributes:
        id: The bare document id.
        format: ``"text"`` (the content is the Y.Text ``content``) or ``"rich"`` (the
            Y.XmlFragment ``content``).
        epoch: Changes only when the document is deleted and created again.
        owner: The user who created it (``None`` when created with an API key).
        created_at: When it was created.
        members: Its members, by user id.
    """

    id: str
    format: str
    epoch: str
    owner: str | None
    created_at: datetime
    members: list[DocMember]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> Document:
        """Parse ``{id, format, epoch, owner, created_at, members}``."""
        return cls(**_document_fields(body))


@dataclass(frozen=True, slots=True)
class DocumentContent(Document):
    """A document with its current content.

    Attributes:
        content: The text, or the XML of a rich document's fragment.
        size: Bytes of the document's Yjs state.
    """

    content: str
    size: int

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> DocumentContent:
        """Parse a document with ``content`` and ``size``."""
        return cls(**_document_fields(body), content=str(body["content"]), size=int(body["size"]))


@dataclass(frozen=True, slots=True)
class DocVersion:
    """A named version (a saved state that can be read or restored).

    Attributes:
        id: The version id.
        name: Its name.
        created_at: When it was saved.
        created_by: Who saved it (``None`` for an API key).
        size: Bytes of the saved Yjs state.
    """

    id: int
    name: str
    created_at: datetime
    created_by: str | None
    size: int

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> DocVersion:
        """Parse ``{id, name, created_at, created_by, size}``."""
        return cls(**_version_fields(body))


@dataclass(frozen=True, slots=True)
class DocVersionContent(DocVersion):
    """A version with its content (the text, or XML for a rich document)."""

    content: str

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> DocVersionContent:
        """Parse a version with ``content``."""
        return cls(**_version_fields(body), content=str(body["content"]))


class DocsAPI:
    """Documents over HTTP (``ServerAPI.docs``).

    With an API key every call is allowed. With a user token: reading needs a role on the
    document, editing and versions the editor role, and deleting or managing members its
    owner (or an admin). Edits go through the same path as a client's update: open
    `LiveDoc`s see them at once. Document ids may carry the ``doc:`` prefix.
    """

    def __init__(self, api: ServerAPI) -> None:
        self._api = api

    async def create(
        self,
        id: str | None = None,
        format: DocFormat = "text",
        content: str | None = None,
        members: Mapping[str, DocRole] | None = None,
    ) -> Document:
        """Create a document; a user token's holder becomes its owner.

        Without ``id``, one is chosen here, so the call is retried safely (an attempt whose
        reply was lost is found again, not created twice). With your own ``id`` it is only
        retried when the server surely did not create it.

        Args:
            id: Letters, digits and ``_.@=+-`` (1 to 128); a random one when ``None``.
            format: ``"text"`` or ``"rich"``, fixed for the document's life.
            content: Its initial text.
            members: ``{user: "editor" | "viewer"}``.

        Raises:
            Conflict: The id is taken.
            ConnectionLost: No reply (with your own ``id`` it may have been created).
            InvalidPayload: A bad id, format or role.
            PayloadTooLarge: ``content`` is over the document size limit.
        """
        generated = id is None
        doc_id = uuid.uuid4().hex[:16] if id is None else bare_doc_id(id)
        body: dict[str, Any] = {"id": doc_id, "format": format}
        if content is not None:
            body["content"] = content
        if members:
            body["members"] = [{"user": user, "role": role} for user, role in members.items()]
        retried: list[TandemError] = []
        try:
            # A generated id is ours alone: a retry's 409 means an earlier attempt made it.
            data = await self._api._request(
                "POST", "/api/docs", json=body, idempotent=generated, on_retry=retried.append
            )
        except Conflict:
            if not (generated and retried):
                raise
            return await self.get(doc_id)
        return Document.from_wire(data)

    async def get(self, id: str) -> DocumentContent:
        """The document with its current content (as live clients hold it).

        Raises:
            NotFound: No such document.
            PermissionDenied: The caller has no role on it.
        """
        return DocumentContent.from_wire(await self._api._request("GET", _path(id)))

    async def delete(self, id: str) -> None:
        """Delete the document, its history and versions; open `LiveDoc`s are closed with
        `NotFound` (``doc.closed``).

        Raises:
            NotFound: No such document.
            PermissionDenied: Not its owner (nor an API key or admin).
        """
        await self._api._request("DELETE", _path(id))

    async def set_member(self, id: str, user: str, role: DocRole) -> Document:
        """Give ``user`` a role. An editor lowered to viewer has their open documents closed
        (`PermissionDenied`) and may open them again read-only."""
        data = await self._api._request(
            "PUT", f"{_path(id)}/members/{quote(user, safe='')}", json={"role": role}
        )
        return Document.from_wire(data)

    async def remove_member(self, id: str, user: str) -> Document:
        """Take ``user``'s membership away; their open documents are closed
        (`PermissionDenied`)."""
        data = await self._api._request("DELETE", f"{_path(id)}/members/{quote(user, safe='')}")
        return Document.from_wire(data)

    async def edit(self, id: str, ops: Sequence[Mapping[str, Any]]) -> int:
        """Apply ``ops`` to a text document in one transaction; returns its size afterwards.

        Ops (indexes count Unicode code points of the current text): ``{"insert": "abc",
        "at": 3}`` (``at`` omitted: the end), ``{"delete": 2, "at": 0}``, ``{"append":
        "abc"}``, ``{"replace": "whole new text"}`` (only what differs changes).

        Only a call made of ``replace`` ops is retried after a lost reply (the others
        would apply twice); the rest are retried only when the server surely did not
        apply them.

        Raises:
            InvalidPayload: A bad op, or an index past the end (nothing changes then).
            Conflict: A rich document (edit those from a client).
            PermissionDenied: The caller may not edit it.
        """
        op_list = [dict(op) for op in ops]
        idempotent = all(set(op) == {"replace"} for op in op_list)
        data = await self._api._request(
            "POST", f"{_path(id)}/edit", json={"ops": op_list}, idempotent=idempotent
        )
        return int(data["size"])

    async def insert(self, id: str, text: str, at: int | None = None) -> int:
        """Insert ``text`` at code point ``at`` (``None``: at the end); the size after."""
        op: dict[str, Any] = {"insert": text}
        if at is not None:
            op["at"] = at
        return await self.edit(id, [op])

    async def delete_text(self, id: str, at: int, count: int) -> int:
        """Delete ``count`` code points from ``at``; the size after."""
        return await self.edit(id, [{"delete": count, "at": at}])

    async def append(self, id: str, text: str) -> int:
        """Append ``text``; the size after."""
        return await self.edit(id, [{"append": text}])

    async def replace(self, id: str, text: str) -> int:
        """Make the whole text ``text`` (changing only what differs); the size after."""
        return await self.edit(id, [{"replace": text}])

    async def save_version(self, id: str, name: str) -> DocVersion:
        """Keep the document's current state as a named version (editors)."""
        data = await self._api._request(
            "POST", f"{_path(id)}/versions", json={"name": name}, idempotent=False
        )
        return DocVersion.from_wire(data)

    async def versions(self, id: str) -> builtins.list[DocVersion]:
        """The document's named versions."""
        data = await self._api._request("GET", f"{_path(id)}/versions")
        return [DocVersion.from_wire(v) for v in data["versions"]]

    async def version(self, id: str, version_id: int) -> DocVersionContent:
        """One version with its content.

        Raises:
            NotFound: No such document or version.
        """
        data = await self._api._request("GET", f"{_path(id)}/versions/{int(version_id)}")
        return DocVersionContent.from_wire(data)

    async def restore(self, id: str, version_id: int) -> int:
        """Make the content the version's again, as a new edit every client converges to
        (the history before stays); the size after."""
        data = await self._api._request("POST", f"{_path(id)}/versions/{int(version_id)}/restore")
        return int(data["size"])


def _path(doc_id: str) -> str:
    return f"/api/docs/{quote(bare_doc_id(doc_id), safe='')}"


def _document_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {
            "id": str(body["id"]),
            "format": str(body["format"]),
            "epoch": str(body["epoch"]),
            "owner": body.get("owner"),
            "created_at": datetime.fromisoformat(body["created_at"]),
            "members": [DocMember(str(m["user"]), str(m["role"])) for m in body["members"]],
        }
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed document: {body!r}") from exc


def _version_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {
            "id": int(body["id"]),
            "name": str(body["name"]),
            "created_at": datetime.fromisoformat(body["created_at"]),
            "created_by": body.get("created_by"),
            "size": int(body["size"]),
        }
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed version: {body!r}") from exc
