"""The notifications HTTP API: backends notify users, users read their own inbox."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain.errors import InvalidPayload, PermissionDenied
from domain.notifications import MAX_BODY, MAX_KEY, MAX_LINK, MAX_PAGE, MAX_TITLE
from realtime.channels import InvalidChannel, check_id
from server.api.callers import ERRORS, Caller, RuntimeDep, needs
from server.auth.tokens import Principal
from server.payloads import JsonData

router = APIRouter(
    prefix="/api/notifications",
    tags=["notifications"],
    responses=ERRORS,  # type: ignore[arg-type]
)
NotifyService = Annotated[Principal, needs("notifications", service=True)]

UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
NotificationId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_RECIPIENTS = 1000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateNotification(Body):
    user: UserId | None = None
    users: Annotated[list[UserId], Field(min_length=1, max_length=MAX_RECIPIENTS)] | None = None
    type: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    title: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE)]
    body: Annotated[str, StringConstraints(max_length=MAX_BODY)] = ""
    link: Annotated[str, StringConstraints(min_length=1, max_length=MAX_LINK)] | None = None
    data: JsonData = None

    @model_validator(mode="after")
    def one_audience(self) -> CreateNotification:
        if (self.user is None) == (self.users is None):
            raise ValueError("give either 'user' or 'users'")
        return self

    def recipients(self) -> list[str]:
        return [self.user] if self.user is not None else list(self.users or [])


class MarkRead(Body):
    ids: Annotated[list[NotificationId], Field(min_length=1, max_length=MAX_PAGE)] | None = None
    all: bool = False

    @model_validator(mode="after")
    def ids_or_all(self) -> MarkRead:
        if (self.ids is None) == (not self.all):
            raise ValueError("give either 'ids' or 'all: true'")
        return self


class NotificationList(BaseModel):
    notifications: list[dict[str, Any]]


class NotificationPage(NotificationList):
    next_cursor: str | None
    unread: int


class UnreadCount(BaseModel):
    unread: int


@router.post("", status_code=201, response_model=NotificationList)
async def create_notifications(
    body: CreateNotification,
    _: NotifyService,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY)] = None,
) -> NotificationList:
    """Notify one user or several; a retry with the same ``Idempotency-Key`` returns the
    notifications the first request created and creates nothing."""
    recipients = body.recipients()
    for user in recipients:
        try:
            check_id(user)
        except InvalidChannel as exc:
            raise InvalidPayload(f"user: {exc}") from None
    created = await runtime.notifications.create(
        recipients,
        type=body.type,
        title=body.title,
        body=body.body,
        link=body.link,
        data=body.data,
        idempotency_key=idempotency_key,
    )
    return NotificationList(notifications=[n.snapshot() for n in created])


@router.get("", response_model=NotificationPage)
async def list_notifications(
    caller: Caller,
    runtime: RuntimeDep,
    unread: bool = False,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    user: Annotated[str | None, Query(max_length=128)] = None,
) -> NotificationPage:
    """The caller's inbox, newest first (API keys name the ``user``)."""
    page = await runtime.notifications.list(
        _inbox_of(caller, user), unread_only=unread, cursor=cursor, limit=limit
    )
    return NotificationPage(
        notifications=[n.snapshot() for n in page.notifications],
        next_cursor=page.next_cursor,
        unread=page.unread,
    )


@router.post("/read", response_model=UnreadCount)
async def mark_read(body: MarkRead, caller: Caller, runtime: RuntimeDep) -> UnreadCount:
    """Mark some (``ids``) or all of the caller's notifications read; the new unread count."""
    unread = await runtime.notifications.mark_read(_inbox_of(caller, None), body.ids)
    return UnreadCount(unread=unread)


@router.delete("/{notification_id}", status_code=204)
async def delete_notification(
    notification_id: str, caller: Caller, runtime: RuntimeDep
) -> Response:
    await runtime.notifications.delete(_inbox_of(caller, None), notification_id)
    return Response(status_code=204)


def _inbox_of(caller: Principal, user: str | None) -> str:
    if caller.is_service:
        if user is None:
            raise PermissionDenied("API keys must name the user; this endpoint is for users")
        return user
    if user is not None and user != caller.sub:
        raise PermissionDenied("users may read only their own notifications")
    return caller.sub
