"""ServerAPI.publish_batch against a real node: order, results, safe retries."""

from __future__ import annotations

import pytest

from client_sdk import InvalidPayload, ServerAPI
from tests.client_sdk.test_jobs import LoseReplies
from tests.support.live import API_KEY, LiveServer


async def test_publish_batch_returns_results_in_order(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        results = await api.publish_batch(
            [
                ("room:sdk-b1", "chat.message", {"n": 0}),
                {"channel": "room:sdk-b2", "event": "chat.message", "data": 1},
                ("room:sdk-b1", "chat.message", 2, "sdk-fixed-id"),
                {"channel": "room:sdk-b1", "event": "chat.message"},
            ]
        )
        assert [(r.offset, r.duplicate) for r in results] == [
            (1, False),
            (1, False),
            (2, False),
            (3, False),
        ]
        history = await api.history("room:sdk-b1")
        assert [m.data for m in history.publications] == [{"n": 0}, 2, None]
        again = await api.publish_batch([("room:sdk-b1", "chat.message", 2, "sdk-fixed-id")])
        assert again[0].duplicate and again[0].offset == 2
        assert await api.publish_batch([("room:sdk-b3", "chat.message", 1)], durable=True) == []
        with pytest.raises(ValueError):
            await api.publish_batch([])
        with pytest.raises(ValueError):
            await api.publish_batch([("room:sdk-b1", "a.b", i) for i in range(101)])
        with pytest.raises(InvalidPayload, match=r"publications\.1"):
            await api.publish_batch([("room:sdk-b4", "a.b", 1), ("room:sdk-b4", "bad event")])
        assert (await api.history("room:sdk-b4")).publications == []


@pytest.mark.parametrize("refuse", [False, True], ids=["reply-lost", "503"])
async def test_a_retried_batch_publishes_each_item_once(server: LiveServer, refuse: bool) -> None:
    channel = f"room:sdk-retry-{refuse}"
    lossy = LoseReplies("/api/publish/batch", refuse=refuse)
    async with ServerAPI(
        server.url, API_KEY, transport=lossy, backoff=0.01, backoff_max=0.05
    ) as api:
        results = await api.publish_batch([(channel, "chat.message", i) for i in range(5)])
        assert lossy.tripped == 1
        # The lost first attempt went through: the retry's answers are its duplicates.
        assert [r.offset for r in results] == [1, 2, 3, 4, 5]
        assert [r.duplicate for r in results] == [not refuse] * 5
        history = await api.history(channel)
        assert [m.data for m in history.publications] == [0, 1, 2, 3, 4]
