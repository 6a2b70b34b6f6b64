"""The admin API on two nodes sharing Redis and PostgreSQL: whichever node is asked acts on
connections held by the other."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk import DisconnectedByAdmin, TandemError
from tests.client_sdk.helpers import eventually, fast_client
from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.sio import Recorder, connect_error, connected

# Fast heartbeats: the nodes know each other within a second of starting.
FAST = {"TANDEM_ADMIN_HEARTBEAT_S": "0.3", "TANDEM_ADMIN_REQUEST_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("admin-cluster")
    with shared_stores(tmp) as env:
        yield tmp, {**env, **FAST}


@pytest.fixture(scope="module")
def nodes(stores: tuple[Path, dict[str, str]]) -> Iterator[tuple[LiveServer, LiveServer]]:
    tmp, env = stores
    with live_server(tmp / "a", env) as a, live_server(tmp / "b", env) as b:
        yield a, b


@asynccontextmanager
async def admin(node: LiveServer, key: str = API_KEY) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=10) as http:
        yield http


async def node_ids(*nodes: LiveServer, within: float = 10.0) -> list[str]:
    """Each node's id, once the first node sees every one of them alive."""
    ids = []
    for node in nodes:
        async with admin(node) as http:
            ids.append((await http.get("/api/admin/nodes")).json()["node"])
    async with admin(nodes[0]) as http:

        async def all_alive() -> bool:
            listed = (await http.get("/api/admin/nodes")).json()["nodes"]
            return set(ids) <= {n["node"] for n in listed if n["alive"]}

        await until(all_alive, within)
    return ids


async def until(check: Callable[[], Any], within: float = 10.0) -> None:
    """Poll an async condition (an HTTP view of the cluster) until it holds, or fail."""
    for _ in range(int(within / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {within}s")


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


async def notice_then_disconnect(client: Recorder, code: str) -> dict[str, Any]:
    event, notice = await client.next(timeout=5)
    assert event == "server.notice", (event, notice)
    assert notice["code"] == code, notice
    async with asyncio.timeout(5):
        await client.disconnected.wait()
    return dict(notice)


async def test_lists_a_users_connections_on_both_nodes(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    id_a, id_b = await node_ids(a, b)
    alice = user()
    token = a.token(alice, channels=["room:*"])
    async with (
        connected(a.url, token) as on_a,
        connected(b.url, token, transport="polling") as on_b,
    ):
        assert (await on_a.call("subscribe", {"channel": "room:list"}))["ok"]
        async with admin(b) as http:
            response = await http.get(f"/api/admin/users/{alice}/connections")
        sid_a, sid_b = on_a.client.get_sid(), on_b.client.get_sid()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == alice
    assert sorted(body["nodes"]) == sorted([id_a, id_b]) and body["missing"] == []
    by_node = {c["node"]: c for c in body["connections"]}
    assert set(by_node) == {id_a, id_b}
    assert by_node[id_a]["connection"] == sid_a
    assert by_node[id_a]["channels"] == ["room:list"]
    assert by_node[id_a]["transport"] == "websocket"
    assert by_node[id_b]["connection"] == sid_b
    assert by_node[id_b]["transport"] == "polling" and by_node[id_b]["channels"] == []
    for conn in body["connections"]:
        assert conn["user"] == alice and conn["address"] == "127.0.0.1"
        assert "python" in conn["user_agent"].lower() or conn["user_agent"]
        assert abs(time.time() - _seconds(conn["connected_since"])) < 60


async def test_disconnecting_a_user_reaches_their_connections_on_the_other_node(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    await node_ids(a, b)
    bob = user()
    token = a.token(bob)
    notices: list[Any] = []
    async with connected(b.url, token) as raw, fast_client(b.url, token) as sdk:
        sdk.on_notice(notices.append)
        async with admin(a) as http:
            response = await http.post(f"/api/admin/users/{bob}/disconnect", json={})
        assert response.status_code == 200, response.text
        assert response.json()["disconnected"] == 2
        notice = await notice_then_disconnect(raw, "disconnected_by_admin")
        assert notice["reconnect"] is False
        await eventually(lambda: isinstance(sdk.error, DisconnectedByAdmin))
        assert not sdk.connected
        assert [n.code for n in notices] == ["disconnected_by_admin"]
        async with admin(a) as http:
            left = (await http.get(f"/api/admin/users/{bob}/connections")).json()
        assert left["connections"] == []


async def test_disconnecting_one_connection_leaves_the_others(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    await node_ids(a, b)
    carol = user()
    token = a.token(carol)
    async with connected(b.url, token) as first, connected(a.url, token) as second:
        async with admin(a) as http:
            sid = first.client.get_sid()
            response = await http.post(
                f"/api/admin/connections/{sid}/disconnect", json={"reconnect": True}
            )
            assert response.json()["disconnected"] == 1, response.text
            notice = await notice_then_disconnect(first, "disconnected_by_admin")
            assert notice["reconnect"] is True
            left = (await http.get(f"/api/admin/users/{carol}/connections")).json()
        assert [c["connection"] for c in left["connections"]] == [second.client.get_sid()]
        assert second.client.connected and second.events.empty()


async def test_unsubscribing_a_user_on_the_other_node(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    await node_ids(a, b)
    dave, erin = user(), user()
    grants = ["room:u-*"]
    room, other = f"room:u-{uuid.uuid4().hex[:8]}", f"room:u-{uuid.uuid4().hex[:8]}"
    async with (
        connected(b.url, a.token(dave, channels=grants)) as d,
        fast_client(b.url, a.token(dave, channels=grants)) as d_sdk,
        connected(b.url, a.token(erin, channels=grants)) as e,
    ):
        for client in (d, e):
            assert (await client.call("subscribe", {"channel": room}))["ok"]
        assert (await d.call("subscribe", {"channel": other}))["ok"]
        sub = await d_sdk.subscribe(room).__aenter__()  # ended by the server, not by us
        async with admin(a) as http:
            response = await http.post(
                f"/api/admin/users/{dave}/unsubscribe", json={"channel": room}
            )
            assert response.status_code == 200, response.text
            assert response.json()["unsubscribed"] == 2
            event, notice = await d.next()
            assert event == "server.notice"
            assert notice["code"] == "unsubscribed_by_admin" and notice["channel"] == room
            with pytest.raises(TandemError) as ended:
                async with asyncio.timeout(5):
                    async for _ in sub:
                        pass
            assert ended.value.code == "unsubscribed_by_admin"
            for channel in (room, other):
                published = await http.post(
                    "/api/publish", json={"channel": channel, "event": "chat.message", "data": 1}
                )
                assert published.status_code == 200
        # Erin still gets the room; Dave only the other channel, and stays connected.
        assert (await e.next())[1]["channel"] == room
        assert (await d.next())[1]["channel"] == other
        # Erin, on Dave's node, has the room's publication: the node has fanned it out, and
        # what it had queued for Dave arrives before the answer to a later request.
        await d.quiet_until(d.round_trip())
        assert d.client.connected and d_sdk.connected


async def test_revoked_tokens_are_refused_and_their_connections_cut(
    nodes: tuple[LiveServer, LiveServer], stores: tuple[Path, dict[str, str]]
) -> None:
    a, b = nodes
    await node_ids(a, b)
    frank = user()
    now = int(time.time())
    old = a.token(frank, iat=now - 60)
    async with connected(a.url, old) as on_a, connected(b.url, old) as on_b:
        async with admin(b) as http:
            before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5))
            response = await http.post(
                f"/api/admin/users/{frank}/revoke-tokens", json={"before": before}
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["disconnected"] == 2 and _seconds(body["revoked_before"]) == now - 5
        for client in (on_a, on_b):
            notice = await notice_then_disconnect(client, "token_revoked")
            assert notice["reconnect"] is False
    for node in (a, b):
        refused = await connect_error(node.url, {"token": old})
        assert refused["data"]["code"] == "token_revoked"
        async with connected(node.url, a.token(frank, iat=now)) as fresh:
            assert fresh.client.connected
    # Durable: a node started afterwards (a restart) refuses it too, from the database.
    tmp, env = stores
    with live_server(tmp / "c", env) as c:
        assert (await connect_error(c.url, {"token": old}))["data"]["code"] == "token_revoked"
        async with connected(c.url, a.token(frank, iat=now)) as fresh:
            assert fresh.client.connected
        # A user JWT issued before it is refused on the HTTP API as well.
        async with admin(c, key=old) as http:
            refused_http = await http.get("/api/channels/room:x/history")
        assert refused_http.status_code == 401
        assert refused_http.json()["error"]["code"] == "token_revoked"


async def test_bad_input_is_refused_and_changes_nothing(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    await node_ids(a, b)
    nobody = user()
    unsubscribe = f"/api/admin/users/{nobody}/unsubscribe"
    revoke = f"/api/admin/users/{nobody}/revoke-tokens"
    async with admin(a) as http:
        empty = await http.get(f"/api/admin/users/{nobody}/connections")
        assert empty.status_code == 200 and empty.json()["connections"] == []
        for channel in ("nope", "bogus:1", "room:", "room:a b", 7, "x" * 300):
            bad = await http.post(unsubscribe, json={"channel": channel})
            assert bad.status_code == 422, (channel, bad.text)
            assert bad.json()["error"]["code"] in ("invalid_payload", "unknown_channel")
        for before in ("yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00", 12.5, "9999"):
            bad = await http.post(revoke, json={"before": before})
            assert bad.status_code == 422, (before, bad.text)
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        bad = await http.post(revoke, json={"before": future})
        assert bad.status_code == 422 and "future" in bad.text
        bad = await http.post("/api/admin/connections/not%20an%20id/disconnect", json={})
        assert bad.status_code == 422
        bad = await http.post(f"/api/admin/users/{nobody}/disconnect", json={"reconnect": "x"})
        assert bad.status_code == 422
    # Nothing was revoked by the refused requests.
    async with connected(b.url, a.token(nobody, iat=int(time.time()) - 3600)) as client:
        assert client.client.connected
    async with admin(a, key=a.token("mallory", scope="admin")) as http:
        assert (await http.get("/api/admin/nodes")).status_code == 403
    async with admin(a, key=a.token("mallory")) as http:
        assert (
            await http.post(f"/api/admin/users/{nobody}/disconnect", json={})
        ).status_code == 403
    async with httpx.AsyncClient(base_url=a.url) as anonymous:
        assert (await anonymous.get("/api/admin/nodes")).status_code == 401
        wrong = {"Authorization": "Bearer not-the-key"}
        assert (await anonymous.get("/api/admin/nodes", headers=wrong)).status_code == 401


async def test_stats_channels_and_connections_of_every_node(
    nodes: tuple[LiveServer, LiveServer],
) -> None:
    a, b = nodes
    id_a, id_b = await node_ids(a, b)
    room = f"room:stats-{uuid.uuid4().hex[:8]}"
    token = a.token(user(), channels=[room])
    async with connected(a.url, token) as on_a, connected(b.url, token) as on_b:
        for client in (on_a, on_b):
            assert (await client.call("subscribe", {"channel": room}))["ok"]
        async with admin(a) as http:
            stats = (await http.get("/api/admin/stats")).json()
            channels = (await http.get("/api/admin/channels")).json()
            listed = (await http.get("/api/admin/connections")).json()
            too_many = await http.get("/api/admin/channels?limit=0")
        sids = {on_a.client.get_sid(), on_b.client.get_sid()}
    assert [s["node"] for s in stats["stats"]] == sorted([id_a, id_b]) and stats["missing"] == []
    assert all(s["connections"] >= 1 and s["subscriptions"] >= 1 for s in stats["stats"])
    lobby = next(c for c in channels["channels"] if c["channel"] == room)
    assert lobby["subscribers"] == 2 and lobby["nodes"] == {id_a: 1, id_b: 1}
    assert sids <= {c["connection"] for c in listed["connections"]}
    assert listed["total"] >= 2
    assert too_many.status_code == 422


async def test_only_admins_follow_the_stats_channel(nodes: tuple[LiveServer, LiveServer]) -> None:
    a, b = nodes
    id_a, id_b = await node_ids(a, b)
    granted = a.token(user(), channels=["admin:*", "admin:stats"])
    async with connected(a.url, granted) as client:
        refused = await client.call("subscribe", {"channel": "admin:stats"})
        assert refused["error"]["code"] == "permission_denied"
        published = await client.call(
            "publish", {"channel": "admin:stats", "event": "admin.stats", "data": {}}
        )
        assert published["error"]["code"] == "permission_denied"
    async with connected(b.url, a.token("ops", scope="admin")) as console:
        assert (await console.call("subscribe", {"channel": "admin:stats"}))["ok"]
        seen: set[str] = set()
        async with asyncio.timeout(10):
            while seen != {id_a, id_b}:
                event, snapshot = await console.next(timeout=10)
                assert event == "admin.stats"
                seen.add(snapshot["data"]["node"])
    for name in ("_control:requests", "_control:heartbeat"):
        async with connected(a.url, a.token("ops", scope="admin")) as console:
            ack = await console.call("subscribe", {"channel": name})
            assert ack["error"]["code"] == "unknown_channel"
        async with admin(a) as http:
            body: dict[str, Any] = {"channel": name, "event": "control.request", "data": {}}
            assert (await http.post("/api/publish", json=body)).status_code == 422


async def test_a_node_that_is_down_is_reported_missing(
    nodes: tuple[LiveServer, LiveServer], stores: tuple[Path, dict[str, str]]
) -> None:
    a, b = nodes
    tmp, env = stores
    with live_server(tmp / "d", env) as d:
        id_a, id_b, id_d = await node_ids(a, b, d)
        d.process.kill()  # SIGKILL: no goodbye
        d.process.wait(5)
        started = time.monotonic()
        async with admin(a) as http:
            body = (await http.get(f"/api/admin/users/{user()}/connections")).json()
            took = time.monotonic() - started
            assert body["missing"] == [id_d]
            assert sorted(body["nodes"]) == sorted([id_a, id_b])
            assert took < 5, f"the request waited {took:.1f}s"

            async def reported_down() -> bool:
                listed = (await http.get("/api/admin/nodes")).json()["nodes"]
                return any(n["node"] == id_d and not n["alive"] for n in listed)

            await until(reported_down)
            # Known to be down: no longer waited for at all.
            started = time.monotonic()
            body = (await http.get(f"/api/admin/users/{user()}/connections")).json()
            assert body["missing"] == [id_d] and time.monotonic() - started < 1.5


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()
