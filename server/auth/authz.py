"""Who may do what on which channel and document. Default deny.

A channel's namespace says who may subscribe (``Access``) and whether clients may publish;
the built-in namespaces add what their names mean (a job's owner, a document's roles)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from domain.documents import Document, Role, strongest
from realtime.channels import Access, Channel, doc_channel, grant_matches
from server.auth.tokens import Principal

# The owner of the aggregate behind a channel (a job's owner), or None when there is none.
OwnerLookup = Callable[[Channel], Awaitable[str | None]]
# A document's members (None when there is no such document).
DocumentLookup = Callable[[str], Awaitable[Document | None]]


def _granted(principal: Principal, channel: Channel) -> bool:
    if principal.admin:
        return True
    name = str(channel)
    return any(grant_matches(grant, name) for grant in principal.grants)


def granted_doc_role(principal: Principal, doc_id: str) -> Role | None:
    """The role a token gives on a document by itself: the admin scope and channel grants
    (``doc:<id>``, ``doc:*``) edit; the ``docs`` claim names a role per id or ``prefix*``."""
    if principal.admin or any(
        grant_matches(grant, doc_channel(doc_id)) for grant in principal.grants
    ):
        return Role.EDITOR
    roles = {
        Role(role)
        for pattern, role in principal.doc_grants
        if pattern == doc_id
        or (len(pattern) > 1 and pattern.endswith("*") and doc_id.startswith(pattern[:-1]))
    }
    return strongest(*roles)


def doc_role(principal: Principal, doc_id: str, document: Document | None) -> Role | None:
    """The caller's role on a document: what the token grants or the membership gives."""
    member = document.role_of(principal.sub) if document is not None else None
    return strongest(granted_doc_role(principal, doc_id), member)


class Authorizer:
    def __init__(
        self, owners: dict[str, OwnerLookup], documents: DocumentLookup | None = None
    ) -> None:
        # Namespaces whose channels' owner is not simply the user of that id (job: its owner).
        self._owners = owners
        self._documents = documents

    async def can_subscribe(self, principal: Principal, channel: Channel) -> bool:
        if channel.policy.subscribe is Access.ADMIN:
            return principal.admin  # a channel grant is not enough
        return _granted(principal, channel) or await self._admits(principal, channel)

    async def can_publish(self, principal: Principal, channel: Channel) -> bool:
        """Clients publish where the namespace allows it, and only where they may subscribe
        (on a document's channel: as an editor)."""
        if not channel.policy.client_publish:
            return False
        if channel.policy.subscribe is Access.ADMIN:
            return principal.admin
        if _granted(principal, channel):
            return True
        if channel.policy.subscribe is Access.MEMBER:
            return await self.role_on(principal, channel.id) is Role.EDITOR
        return await self._admits(principal, channel)

    async def _admits(self, principal: Principal, channel: Channel) -> bool:
        """Whether the namespace's rule lets ``principal`` in without a grant."""
        match channel.policy.subscribe:
            case Access.ANY:
                return True
            case Access.OWNER:
                lookup = self._owners.get(channel.kind)
                if lookup is None:
                    return channel.id == principal.sub
                # Unknown aggregates and other people's are denied alike: existence does not
                # leak.
                return await lookup(channel) == principal.sub
            case Access.MEMBER:
                return await self.role_on(principal, channel.id) is not None
        return False

    async def role_on(self, principal: Principal, doc_id: str) -> Role | None:
        granted = granted_doc_role(principal, doc_id)
        if granted is Role.EDITOR or self._documents is None:
            return granted
        return strongest(granted, doc_role(principal, doc_id, await self._documents(doc_id)))
