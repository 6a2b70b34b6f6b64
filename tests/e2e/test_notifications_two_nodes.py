"""Notifications across two nodes sharing Redis and PostgreSQL: one user, a tab on each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from client_sdk import ServerAPI
from tests.client_sdk.helpers import fast_client
from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server

WITHIN = 10.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    tmp = tmp_path_factory.mktemp("inbox-nodes")
    with (
        shared_stores(tmp) as env,
        live_server(tmp / "a", env) as a,
        live_server(tmp / "b", env) as b,
    ):
        yield a, b


async def test_read_on_a_tab_on_one_node_updates_the_tab_on_the_other(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    user = f"two-tabs-{uuid.uuid4().hex[:12]}"
    token = a.token(user)
    async with ServerAPI(b.url, API_KEY) as backend:
        # Sent while the user has no tab open: all there, counted, on connect.
        offline = [(await backend.notifications.send(user, f"away {i}"))[0] for i in range(3)]
        async with (
            fast_client(a.url, token) as tab_a,
            fast_client(b.url, token) as tab_b,
            tab_a.notifications.inbox() as inbox_a,
            tab_b.notifications.inbox() as inbox_b,
        ):
            for inbox in (inbox_a, inbox_b):
                assert inbox.unread == 3
                assert [n.id for n in inbox.latest] == [n.id for n in reversed(offline)]
            live = (await backend.notifications.send(user, "live", type="action"))[0]
            for inbox in (inbox_a, inbox_b):
                await inbox.wait_for(lambda box: box.unread == 4, WITHIN)
                assert inbox.latest[0].id == live.id
            # Tab A (node A) reads one; tab B (node B) sees which and the new count.
            assert await inbox_a.mark_read([live.id]) == 3
            update = await inbox_b.wait_for(lambda box: box.unread == 3, WITHIN)
            assert update.kind == "read" and update.read_ids == (live.id,)
            assert not inbox_b.latest[0].unread
            # And the other way round, everything.
            assert await inbox_b.mark_read() == 0
            await inbox_a.wait_for(lambda box: box.unread == 0, WITHIN)
            assert all(not n.unread for n in inbox_a.latest)
