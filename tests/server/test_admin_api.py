"""The admin API on one node with the memory broker: the node answers alone, and the API is
described in the OpenAPI document with its models."""

from __future__ import annotations

import httpx

from tests.support.live import API_KEY, LiveServer
from tests.support.sio import connected

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


async def test_one_node_answers_alone(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as http:
        listed = (await http.get("/api/admin/nodes")).json()
        assert [n["node"] for n in listed["nodes"]] == [listed["node"]]
        token = server.token("solo", channels=["room:solo"])
        async with connected(server.url, token) as client:
            assert (await client.call("subscribe", {"channel": "room:solo"}))["ok"]
            found = (await http.get("/api/admin/users/solo/connections")).json()
            assert found["nodes"] == [listed["node"]] and found["missing"] == []
            assert [c["channels"] for c in found["connections"]] == [["room:solo"]]
            ended = await http.post(
                "/api/admin/users/solo/unsubscribe", json={"channel": "room:solo"}
            )
            assert ended.json()["unsubscribed"] == 1
            event, notice = await client.next()
            assert event == "server.notice" and notice["channel"] == "room:solo"
            found = (await http.get("/api/admin/users/solo/connections")).json()
            assert [c["channels"] for c in found["connections"]] == [[]]


async def test_the_admin_api_is_in_the_openapi_document(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    for path, method in [
        ("/api/admin/nodes", "get"),
        ("/api/admin/stats", "get"),
        ("/api/admin/channels", "get"),
        ("/api/admin/connections", "get"),
        ("/api/admin/users/{user}/connections", "get"),
        ("/api/admin/users/{user}/disconnect", "post"),
        ("/api/admin/connections/{connection}/disconnect", "post"),
        ("/api/admin/users/{user}/unsubscribe", "post"),
        ("/api/admin/users/{user}/revoke-tokens", "post"),
    ]:
        operation = paths[path][method]
        assert "admin" in operation["tags"], path
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].startswith("#/components/schemas/"), path
    for model in ("ConnectionsResponse", "RevokeRequest", "NodesResponse", "StatsResponse"):
        assert model in document["components"]["schemas"]
    assert "/admin" not in paths  # the console page is not an API
