"""subscribe_many: many channels in one request and one ack, over real connections.

Each item is answered exactly as a `subscribe` of its own would be (authorization, recovery,
errors); malformed batches and batches past the subscription budget change nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.protocol.raw import RawClient
from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.sio import Recorder, connected

ROOMS = ["room:*"]


async def publish(server: LiveServer, channel: str, *values: int) -> list[int]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    offsets = []
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        for value in values:
            body = {"channel": channel, "event": "chat.message", "data": {"i": value}}
            response = await http.post("/api/publish", json=body)
            assert response.status_code == 200, response.text
            offsets.append(response.json()["offset"])
    return offsets


async def many(client: Recorder, *items: dict[str, Any] | str) -> Any:
    subscriptions = [{"channel": item} if isinstance(item, str) else item for item in items]
    return await client.call("subscribe_many", {"subscriptions": subscriptions}, timeout=10)


async def test_each_item_is_answered_like_its_own_subscribe_in_request_order(
    server: LiveServer,
) -> None:
    token = server.token("alice", channels=["room:*", "job:granted"])
    await publish(server, "room:order-b", 1, 2)
    async with connected(server.url, token) as client:
        ack = await many(
            client,
            "room:order-a",
            "job:not-granted",
            "room:order-b",
            {"channel": "flight:NO1", "presence": True},  # flights keep no presence
            {"channel": "room:order-c", "presence": True},
        )
        assert ack["ok"] is True
        results = ack["results"]
        assert [r.get("channel") for r in results] == [
            "room:order-a",
            None,
            "room:order-b",
            None,
            "room:order-c",
        ]
        assert results[1] == {
            "ok": False,
            "error": {
                "code": "permission_denied",
                "message": "not allowed to subscribe to job:not-granted",
                "retryable": False,
            },
        }
        assert results[3]["ok"] is False and results[3]["error"]["code"] == "bad_request"
        assert results[2]["offset"] == 2 and results[2]["recovered"] is False
        # The same keys and values a single subscribe answers.
        single = await client.call("subscribe", {"channel": "room:order-b"})
        assert single.keys() == results[2].keys()
        assert {k: single[k] for k in ("epoch", "offset", "state")} == {
            k: results[2][k] for k in ("epoch", "offset", "state")
        }
        # The subscribed ones are live; the refused ones are not.
        await publish(server, "room:order-a", 7)
        event, envelope = await client.next()
        if event == "presence.join":  # its own, on room:order-c
            event, envelope = await client.next()
        assert (event, envelope["channel"], envelope["data"]) == (
            "chat.message",
            "room:order-a",
            {"i": 7},
        )
        presence = await client.call("presence", {"channel": "room:order-c"})
        assert [m["user"] for m in presence["members"]] == ["alice"]


async def test_positions_recover_per_channel_as_with_subscribe(server: LiveServer) -> None:
    token = server.token("bob", channels=ROOMS)
    channels = ["room:rec-1", "room:rec-2", "room:rec-3"]
    async with connected(server.url, token) as client:
        ack = await many(client, *channels)
        positions = {
            r["channel"]: {"epoch": r["epoch"], "offset": r["offset"]} for r in ack["results"]
        }
        await publish(server, "room:rec-1", 0)
        _, envelope = await client.next()
        positions["room:rec-1"]["offset"] = envelope["offset"]
    missed = {
        "room:rec-1": await publish(server, "room:rec-1", 1, 2, 3),
        "room:rec-2": await publish(server, "room:rec-2", 10),
    }
    async with connected(server.url, token) as client:
        ack = await many(
            client,
            *({"channel": name, "since": positions[name]} for name in channels),
            {"channel": "room:rec-4", "since": {"epoch": "gone", "offset": 5}},
        )
        one, two, three, four = ack["results"]
        assert one["recovered"] is True
        assert [p["offset"] for p in one["publications"]] == missed["room:rec-1"]
        assert [p["data"]["i"] for p in one["publications"]] == [1, 2, 3]
        assert two["recovered"] is True and [p["data"]["i"] for p in two["publications"]] == [10]
        assert three["recovered"] is True and three["publications"] == []
        assert four["recovered"] is False and four["offset"] == 0  # an epoch it never had
        await publish(server, "room:rec-3", 99)
        _, live = await client.next()
        assert live["channel"] == "room:rec-3" and live["offset"] == 1


def batch(*items: Any) -> dict[str, Any]:
    return {"subscriptions": [{"channel": i} if isinstance(i, str) else i for i in items]}


async def nothing_reaches(server: LiveServer, client: Recorder, *channels: str) -> None:
    """Publish on ``channels`` and show that ``client`` got none of it: a watcher on the same
    node receives each publication (so the node has fanned it out), then a request answered
    on ``client``'s connection comes back with nothing before it."""
    async with connected(server.url, server.token("watcher", channels=ROOMS)) as watcher:
        for channel in channels:
            assert (await watcher.call("subscribe", {"channel": channel}))["ok"]
            await publish(server, channel, 1)
            name, envelope = await watcher.next()
            assert envelope["channel"] == channel, (name, envelope)
    await client.quiet_until(client.round_trip())


@pytest.mark.parametrize(
    ("payload", "code", "says"),
    [
        ({"subscriptions": "room:bad-1"}, "invalid_payload", "valid list"),
        (batch(), "invalid_payload", "at least 1"),
        (batch(*(f"room:bad-{i}" for i in range(101))), "invalid_payload", "at most 100"),
        (
            batch("room:bad-1", "room:bad-1"),
            "invalid_payload",
            "subscriptions.1.channel: room:bad-1 is subscriptions.0 again",
        ),
        (
            batch("room:bad-1", "nope:bad-2"),
            "unknown_channel",
            "subscriptions.1.channel: unknown channel kind 'nope'",
        ),
        (batch("room:bad-1", "room:bad 2"), "invalid_payload", "subscriptions.1.channel"),
        (batch("room:bad-1", {"channel": 42}), "invalid_payload", "subscriptions.1.channel"),
        (
            batch({"channel": "room:bad-1", "since": {"epoch": "e"}}),
            "invalid_payload",
            "subscriptions.0.since.offset",
        ),
        (batch({"channel": "room:bad-1", "x": 1}), "invalid_payload", "subscriptions.0.x"),
        ({"channels": ["room:bad-1"]}, "invalid_payload", "subscriptions"),
    ],
)
async def test_malformed_batches_are_refused_whole_and_change_nothing(
    server: LiveServer, payload: dict[str, Any], code: str, says: str
) -> None:
    async with connected(server.url, server.token("carol", channels=ROOMS)) as client:
        ack = await client.call("subscribe_many", payload)
        assert ack["ok"] is False, ack
        assert ack["error"]["code"] == code and ack["error"]["retryable"] is False
        assert says in ack["error"]["message"], ack
        await nothing_reaches(server, client, "room:bad-1")  # subscribed to nothing
        not_an_object = await client.call("subscribe_many", ["room:bad-1"])
        assert not_an_object["error"]["code"] == "invalid_payload"


async def test_a_new_connection_restores_a_full_channel_load_at_once_but_no_more(
    tmp_path: Path,
) -> None:
    # The budget holds a connection's channel limit (128) and refills at the request rate.
    with live_server(tmp_path, {"TANDEM_CLIENT_RATE_PER_S": "0.5"}) as server:
        async with connected(server.url, server.token("dave", channels=ROOMS)) as client:
            first = await many(client, *(f"room:full-{i}" for i in range(100)))
            second = await many(client, *(f"room:full-{i}" for i in range(100, 128)))
            assert all(r["ok"] for r in first["results"] + second["results"])
            # Spent: the next batch is refused whole, a single subscribe too.
            await client.call("unsubscribe", {"channel": "room:full-0"})
            refused = await many(client, "room:full-0", "room:more-1")
            assert refused["ok"] is False and refused["error"]["code"] == "rate_limited"
            assert refused["error"]["retryable"] is True
            assert "would pass in" in refused["error"]["message"]
            single = await client.call("subscribe", {"channel": "room:full-0"})
            assert single["error"]["code"] == "rate_limited"
            await nothing_reaches(server, client, "room:full-0", "room:more-1")
            # It refills at the rate, whichever form asks.
            await asyncio.sleep(2.2)
            again = await many(client, "room:full-0")
            assert again["ok"] is True and again["results"][0]["ok"] is True
        counts = server.subscribe_counts()
        # The client's three batches, and the two single subscribes of the watcher that
        # showed the client got nothing.
        assert (counts["batch"], counts["single"]) == (3, 2)


async def test_batches_subscribe_no_faster_over_time_than_the_rate(tmp_path: Path) -> None:
    rate = 50
    settings = {"TANDEM_CLIENT_RATE_PER_S": str(rate), "TANDEM_CLIENT_BURST": "100000"}
    with live_server(tmp_path, settings) as server:
        async with connected(server.url, server.token("erin", channels=ROOMS)) as client:
            admitted = refused = 0
            began = time.monotonic()
            for round_ in range(40):  # batches of 20 new channels, for a second or two
                names = [f"room:r{round_}-{i}" for i in range(20)]
                ack = await many(client, *names)
                if not ack["ok"]:
                    assert ack["error"]["code"] == "rate_limited", ack
                    refused += 1
                    continue
                assert all(r["ok"] for r in ack["results"]), ack
                admitted += len(names)
                for name in names:  # under the channel limit again
                    assert (await client.call("unsubscribe", {"channel": name}))["ok"]
                await asyncio.sleep(0.02)
            elapsed = time.monotonic() - began
    # The budget (128 channels) plus what the rate added meanwhile; never more.
    assert refused > 0
    assert 120 <= admitted <= 128 + rate * elapsed, (admitted, elapsed)


async def test_a_board_of_61_channels_comes_back_in_one_request_none_refused(
    server: LiveServer,
) -> None:
    token = server.token("frank", scope="admin")
    flights = [f"flight:B{i}" for i in range(61)]
    async with connected(server.url, token) as client:
        ack = await many(client, *flights)
        positions = [{"epoch": r["epoch"], "offset": r["offset"]} for r in ack["results"]]
    for name in flights[:5]:
        await publish(server, name, 1)
    refused = server.subscribe_counts()["rate_limited"]
    async with connected(server.url, token) as client:  # the board after a reconnect
        ack = await many(
            client,
            *(
                {"channel": name, "since": since}
                for name, since in zip(flights, positions, strict=True)
            ),
        )
        assert [r["ok"] for r in ack["results"]] == [True] * 61
        assert all(r["recovered"] for r in ack["results"])
        assert [len(r["publications"]) for r in ack["results"][:6]] == [1, 1, 1, 1, 1, 0]
    assert server.subscribe_counts()["rate_limited"] == refused


def test_live_publications_come_after_the_batch_ack_then_without_gaps(server: LiveServer) -> None:
    """Publications keep coming on the batch's first channel while the node joins the other
    99 (each a flight: its state is read from the database): none may reach the client before
    the ack that gives that channel's position."""
    names = ["room:live-0", *(f"flight:LIVE{i}" for i in range(99))]
    stop = threading.Event()

    def publisher() -> None:
        with server.api() as api:
            i = 0
            while not stop.is_set():
                body = {"channel": names[0], "event": "chat.message", "data": {"i": i}}
                assert api.post("/api/publish", json=body).status_code == 200
                i += 1

    with RawClient(server.port) as raw:
        raw.connect_namespace(server.token("gina", scope="admin"))
        threads = [threading.Thread(target=publisher) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.2)  # publishing already
            ack = raw.request("subscribe_many", batch(*names), timeout=20)
            time.sleep(0.3)  # and after
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        before = [raw.decode(frame) for frame in raw.unsolicited if raw._is_message(frame)]
        assert [packet for packet in before if packet[0] == 2] == []  # no event before the ack
        first = ack["results"][0]
        offsets = [p["offset"] for p in first["publications"]] or [first["offset"]]
        raw.unsolicited.clear()
        while True:
            try:
                name, envelope = raw.next_event(timeout=0.5)
            except TimeoutError:
                break
            assert name == "chat.message" and envelope["channel"] == names[0]
            offsets.append(envelope["offset"])
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
    assert len(offsets) > 1
