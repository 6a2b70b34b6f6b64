"""Flights end to end on a real node: signed webhooks and PUT in, ``flight:<id>`` out."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from client_sdk import Client, Message, TandemError
from server.api.flights import sign
from tests.support.live import API_KEY, LiveServer, live_server

WITHIN = 10.0
SECRET = b"flights-test-secret"
BASE = {"number": "TD200", "date": "2026-11-23", "origin": "AMS", "destination": "JFK"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("flights"), {"TANDEM_FLIGHTS_WEBHOOK_SECRET": SECRET.decode()}
    ) as server:
        yield server


def new_id() -> str:
    return f"fl-{uuid.uuid4().hex[:12]}"


def http(node: LiveServer, token: str | None = API_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=node.url, headers=headers, timeout=WITHIN)


def ts(minute: int) -> str:
    return f"2026-11-23T08:{minute:02d}:00+00:00"


async def put(api: httpx.AsyncClient, flight: str, **body: Any) -> dict[str, Any]:
    response = await api.put(f"/api/flights/{flight}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def deliver(
    api: httpx.AsyncClient,
    body: Any,
    *,
    secret: bytes = SECRET,
    at: float | None = None,
    tamper: bool = False,
    signature: str | None = None,
) -> httpx.Response:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time() if at is None else at))
    headers = {
        "X-Tandem-Timestamp": stamp,
        "X-Tandem-Signature": signature or sign(secret, stamp, raw),
        "Content-Type": "application/json",
    }
    sent = raw.replace(b"TD200", b"TD666") if tamper else raw
    return await api.post("/api/webhooks/flights", content=sent, headers=headers)


async def next_message(sub: Any) -> Message:
    async with asyncio.timeout(WITHIN):
        while True:
            item = await anext(sub)
            if isinstance(item, Message) and item.type == "flight.updated":
                return item


async def test_webhook_signature_matrix(node: LiveServer) -> None:
    flight = new_id()
    body = {"id": flight, "provider_ts": ts(0), **BASE}
    async with http(node, None) as hook, http(node) as api:
        for bad in (
            await deliver(hook, body, tamper=True),
            await deliver(hook, body, secret=b"wrong-secret"),
            await deliver(hook, body, at=time.time() - 301),
            await deliver(hook, body, at=time.time() + 301),
            await deliver(hook, body, signature="sha256=" + "0" * 64),
            await hook.post("/api/webhooks/flights", json=body),
        ):
            assert bad.status_code == 401, bad.text
            assert bad.json()["error"]["code"] == "unauthorized"
        assert (await api.get(f"/api/flights/{flight}")).status_code == 404
        now = int(time.time())
        accepted = await deliver(hook, body, at=now)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["duplicate"] is False
        assert accepted.json()["results"][0]["flight"]["version"] == 1
        replay = await deliver(hook, body, at=now)
        assert replay.status_code == 200 and replay.json() == {"duplicate": True, "results": []}
        # The same content signed at another time is a new delivery (and changes nothing).
        again = await deliver(hook, body, at=now - 1)
        assert again.json()["duplicate"] is False
        assert again.json()["results"][0]["changed"] is False
        stored = (await api.get(f"/api/flights/{flight}")).json()
        assert stored["version"] == 1 and stored["number"] == "TD200"
        batch = {
            "updates": [
                {"id": flight, "provider_ts": ts(1), "gate": "C4"},
                {"id": new_id(), "provider_ts": ts(1), **BASE},
            ]
        }
        applied = (await deliver(hook, batch)).json()
        assert [r["changed"] for r in applied["results"]] == [True, True]
        assert applied["results"][0]["changes"] == {"gate": [None, "C4"]}
        invalid = await deliver(hook, {"id": flight, "provider_ts": ts(2), "colour": "red"})
        assert invalid.status_code == 422


async def test_unchanged_update_publishes_nothing(node: LiveServer) -> None:
    flight = new_id()
    async with http(node) as api:
        created = await put(api, flight, provider_ts=ts(0), gate="A1", **BASE)
        assert created["changed"] is True
        viewer = Client(node.url, token=node.token(new_id()), reconnect_delay=0.05)
        async with viewer, viewer.subscribe(f"flight:{flight}") as sub:
            assert sub.state == created["flight"]
            same = await put(api, flight, provider_ts=ts(1), gate="A1", number="TD200")
            assert same["changed"] is False and same["changes"] == {}
            stale = await put(api, flight, provider_ts=ts(0), gate="Z9")
            assert stale["changed"] is False and stale["flight"]["gate"] == "A1"
            moved = await put(api, flight, provider_ts=ts(2), gate="B2", status="boarding")
            assert moved["changes"] == {"gate": ["A1", "B2"], "status": ["scheduled", "boarding"]}
            # The first event the subscriber sees is the real change: nothing came before it
            # but, possibly, the creation's own event, when the relay published it after the
            # subscribe read its position (the state already shows it; clients skip versions
            # they already have). An event for the unchanged update would differ.
            message = await next_message(sub)
            if message.data["version"] == 1 and message.data["changes"] == created["changes"]:
                message = await next_message(sub)
            assert message.data["version"] == 2
            assert message.data["changes"] == moved["changes"]
            assert message.data["gate"] == "B2"


async def test_out_of_order_updates_do_not_go_backwards(node: LiveServer) -> None:
    flight = new_id()
    async with http(node) as api, http(node, node.token(new_id())) as reader:
        await put(api, flight, provider_ts=ts(5), status="landed", **BASE)
        late = await put(api, flight, provider_ts=ts(3), status="departed")
        assert late["changed"] is False
        snapshot = (await reader.get(f"/api/flights/{flight}")).json()
        assert snapshot["status"] == "landed" and snapshot["version"] == 1
        assert (await reader.get(f"/api/flights/{new_id()}")).status_code == 404


async def test_put_validates_and_needs_an_api_key(node: LiveServer) -> None:
    flight = new_id()
    async with http(node) as api, http(node, node.token("someone")) as user:
        denied = await user.put(f"/api/flights/{flight}", json={"provider_ts": ts(0), **BASE})
        assert denied.status_code == 403
        for body in (
            {**BASE, "provider_ts": ts(0), "wings": 2},
            {**BASE, "provider_ts": ts(0), "status": "teleported"},
            {**BASE, "provider_ts": "2026-11-23T08:00:00"},
            {**BASE},
            {**BASE, "provider_ts": ts(0), "position": {"lat": 100, "lon": 0}},
            {"provider_ts": ts(0), "gate": "A1"},
        ):
            response = await api.put(f"/api/flights/{flight}", json=body)
            assert response.status_code == 422, (body, response.text)
        assert (await api.get(f"/api/flights/{flight}")).status_code == 404


async def test_position_only_updates_are_flight_position_events(node: LiveServer) -> None:
    flight = new_id()
    async with http(node) as api:
        await put(api, flight, provider_ts=ts(0), status="departed", **BASE)
        viewer = Client(node.url, token=node.token(new_id()), reconnect_delay=0.05)
        async with viewer, viewer.subscribe(f"flight:{flight}") as sub:
            for minute in (1, 2):
                position = {"lat": 52 + minute / 10, "lon": 4.5, "altitude": 9000, "heading": 270}
                await put(api, flight, provider_ts=ts(minute), position=position)
            await put(api, flight, provider_ts=ts(3), gate="D4", position={"lat": 53, "lon": 4})
            received: list[Message] = []
            async with asyncio.timeout(WITHIN):
                while len(received) < 3:
                    item = await anext(sub)
                    # Not the creation's own event, if it came after the snapshot showing it
                    # (clients skip versions they already have).
                    if isinstance(item, Message) and item.data["version"] > sub.state["version"]:
                        received.append(item)
    assert [m.type for m in received] == ["flight.position", "flight.position", "flight.updated"]
    first = received[0].data
    assert first["id"] == flight and first["version"] == 2
    assert first["position"] == {"lat": 52.1, "lon": 4.5, "altitude": 9000.0, "heading": 270.0}
    assert "changes" not in first and "status" not in first
    assert received[2].data["changes"]["gate"] == [None, "D4"]
    assert received[2].data["version"] == 4


async def test_the_board_list_is_in_departure_order_and_validated(node: LiveServer) -> None:
    origin = uuid.uuid4().hex[:6].upper()
    ids = [new_id() for _ in range(3)]
    async with http(node) as api, http(node, node.token(new_id())) as reader:
        for i, minute in enumerate((30, 10, 20)):
            fields = {**BASE, "origin": origin, "scheduled_departure": ts(minute)}
            await put(api, ids[i], provider_ts=ts(0), **fields)
        listed = (await reader.get("/api/flights", params={"origin": origin})).json()
        assert [f["id"] for f in listed["flights"]] == [ids[1], ids[2], ids[0]]
        window: dict[str, str | int] = {"origin": origin, "departs_after": ts(15), "limit": 1}
        later = (await reader.get("/api/flights", params=window)).json()["flights"]
        assert [f["id"] for f in later] == [ids[2]]
        bad_queries: list[dict[str, str | int]] = [
            {"limit": 0},
            {"limit": 201},
            {"departs_after": "2026-11-23T08:00:00"},
            {"departs_after": "soon"},
            {"origin": "X" * 9},
        ]
        for params in bad_queries:
            response = await reader.get("/api/flights", params=params)
            assert response.status_code == 422, (params, response.text)
        async with http(node, None) as anonymous:
            assert (await anonymous.get("/api/flights")).status_code == 401


async def test_an_airport_channel_carries_its_departures_but_not_positions(
    node: LiveServer,
) -> None:
    home, away = (uuid.uuid4().hex[:6].upper() for _ in range(2))
    flight, elsewhere = new_id(), new_id()
    async with http(node) as api:
        viewer = Client(node.url, token=node.token(new_id()), reconnect_delay=0.05)
        async with (
            viewer,
            viewer.subscribe(f"airport:{home}") as board,
            viewer.subscribe(f"airport:{away}") as other,
        ):
            assert board.state is None
            await put(api, elsewhere, provider_ts=ts(0), **{**BASE, "origin": away})
            await put(api, flight, provider_ts=ts(0), **{**BASE, "origin": home})
            await put(api, flight, provider_ts=ts(1), position={"lat": 52, "lon": 4})
            await put(api, flight, provider_ts=ts(2), gate="C7")
            await put(api, flight, provider_ts=ts(3), origin=away.lower())
            seen = [await next_message(board) for _ in range(3)]
            # The other airport's flight and the position never came; the move did, to both.
            assert [(m.data["id"], m.data["version"]) for m in seen] == [
                (flight, 1),
                (flight, 3),
                (flight, 4),
            ]
            assert seen[2].data["changes"]["origin"] == [home, away]
            assert [(await next_message(other)).data["id"] for _ in range(2)] == [elsewhere, flight]
        refused = Client(node.url, token=node.token(new_id()), reconnect_delay=0.05)
        async with refused:
            for name in ("airport:", "airport:A M S"):
                with pytest.raises(TandemError) as error:
                    async with refused.subscribe(name):
                        pass
                assert error.value.code == "invalid_payload"
