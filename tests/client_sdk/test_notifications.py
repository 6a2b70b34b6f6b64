"""Notifications through the SDK: `api.notifications` sends, `client.notifications` follows."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from client_sdk import InvalidPayload, NotFound, PermissionDenied, ServerAPI
from client_sdk._notifications import _subject
from tests.client_sdk.helpers import fast_client
from tests.support.live import API_KEY, LiveServer

WITHIN = 10.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_the_inbox_starts_from_state_and_follows_created_and_read(
    server: LiveServer,
) -> None:
    user = new_id("inbox")
    token = server.token(user)
    async with ServerAPI(server.url, API_KEY) as api:
        early = await api.notifications.send(user, "While you were away", type="warning")
        async with (
            fast_client(server.url, token) as client,
            client.notifications.inbox() as inbox,  # the user comes from the token
        ):
            assert inbox.user == user
            assert inbox.unread == 1 and [n.id for n in inbox.latest] == [early[0].id]
            assert (await anext(inbox)).kind == "state"
            sent = await api.notifications.send(
                [user, new_id("other")], "Approve 7", type="action", link="/o/7", data={"o": 7}
            )
            created = await inbox.wait_for(lambda box: box.unread == 2, WITHIN)
            assert created.kind == "created" and created.notification is not None
            assert created.notification.id == sent[0].id and created.notification.data == {"o": 7}
            assert [n.id for n in inbox.latest] == [sent[0].id, early[0].id]
            assert await inbox.mark_read([early[0].id]) == 1
            read = await inbox.wait_for(lambda box: box.unread == 1, WITHIN)
            assert read.kind == "read" and read.read_ids == (early[0].id,)
            assert not inbox.latest[1].unread and inbox.latest[0].unread
            assert await inbox.mark_read() == 0
            await inbox.wait_for(lambda box: box.unread == 0, WITHIN)
            with pytest.raises(NotFound):
                await inbox.mark_read(["no-such-notification"])
        page = await api.notifications.list(user)
        assert page.unread == 0 and [n.id for n in page.notifications] == [
            sent[0].id,
            early[0].id,
        ]
        assert all(n.read_at is not None for n in page.notifications)


async def test_send_is_idempotent_and_validated(server: LiveServer) -> None:
    user = new_id("idem")
    async with ServerAPI(server.url, API_KEY, max_attempts=1) as api:
        first = await api.notifications.send(user, "Once", idempotency_key="k-" + user)
        again = await api.notifications.send(user, "Once", idempotency_key="k-" + user)
        assert [n.id for n in again] == [n.id for n in first]
        with pytest.raises(InvalidPayload):
            await api.notifications.send(user, "")
        with pytest.raises(InvalidPayload):
            await api.notifications.send(user, "x", type="shout")
        with pytest.raises(PermissionDenied):
            await api.notifications.mark_read()  # an API key has no inbox
    async with ServerAPI(server.url, server.token(user), max_attempts=1) as me:
        with pytest.raises(PermissionDenied):
            await me.notifications.send(user, "users cannot notify")
        assert (await me.notifications.list(unread=True)).unread == 1


def test_the_inbox_user_comes_from_the_token_or_must_be_given(server: LiveServer) -> None:
    assert _subject(server.token("zoe")) == "zoe"
    for token in (None, "not-a-jwt", "a.b.c"):
        with pytest.raises(ValueError, match="pass inbox"):
            _subject(token)


async def test_inbox_of_another_user_is_refused(server: LiveServer) -> None:
    async with fast_client(server.url, server.token(new_id("me"))) as client:
        with pytest.raises(PermissionDenied):
            async with asyncio.timeout(WITHIN), client.notifications.inbox(new_id("someone")):
                pass
