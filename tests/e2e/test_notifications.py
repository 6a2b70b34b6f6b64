"""Notifications end to end on a real node: HTTP in, sockets out, the inbox as state."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from client_sdk import Client, Message
from tests.support.live import API_KEY, LiveServer

WITHIN = 10.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def http(node: LiveServer, token: str | None = API_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=node.url, headers=headers, timeout=WITHIN)


def client(node: LiveServer, token: str) -> Client:
    return Client(node.url, token=token, reconnect_delay=0.05, reconnect_delay_max=0.3)


async def notify(api: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await api.post("/api/notifications", json={"type": "info", **body})
    assert response.status_code == 201, response.text
    created: list[dict[str, Any]] = response.json()["notifications"]
    return created


async def next_message(sub: Any, event: str) -> Message:
    async with asyncio.timeout(WITHIN):
        while True:
            item = await anext(sub)
            if isinstance(item, Message) and item.type == event:
                return item


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    code: str = response.json()["error"]["code"]
    return code


async def test_offline_notifications_are_all_there_on_subscribe(server: LiveServer) -> None:
    user = new_id("away")
    async with http(server) as api:
        made = [(await notify(api, user=user, title=f"n{i}"))[0] for i in range(25)]
        await notify(api, user=new_id("someone-else"), title="not yours")
    async with http(server, server.token(user)) as me:
        read = await me.post("/api/notifications/read", json={"ids": [made[0]["id"]]})
        assert read.status_code == 200 and read.json() == {"unread": 24}
    async with client(server, server.token(user)) as page, page.subscribe(f"user:{user}") as sub:
        assert sub.state["unread"] == 24
        latest = sub.state["latest"]
        assert [n["id"] for n in latest] == [n["id"] for n in reversed(made)][:20]
        assert {n["user"] for n in latest} == {user}


async def test_read_on_one_tab_updates_the_other(server: LiveServer) -> None:
    user = new_id("tabs")
    token = server.token(user)
    async with (
        http(server) as api,
        client(server, token) as tab1,
        client(server, token) as tab2,
        tab1.subscribe(f"user:{user}") as sub1,
        tab2.subscribe(f"user:{user}") as sub2,
        http(server, token) as me,
    ):
        assert sub1.state == {"unread": 0, "latest": []}
        created = await notify(api, user=user, title="Approve order", type="action", link="/o/1")
        pushed = await next_message(sub2, "notification.created")
        assert pushed.data["id"] == created[0]["id"] and pushed.data["unread"] == 1
        await notify(api, user=user, title="second")
        assert (await next_message(sub2, "notification.created")).data["unread"] == 2
        # Tab 1 reads one; tab 2 is told which and the new count.
        response = await me.post("/api/notifications/read", json={"ids": [created[0]["id"]]})
        assert response.json() == {"unread": 1}
        read = await next_message(sub2, "notification.read")
        assert read.data == {"ids": [created[0]["id"]], "unread": 1}
        assert (await next_message(sub1, "notification.read")).data["unread"] == 1
        assert (await me.post("/api/notifications/read", json={"all": True})).json() == {
            "unread": 0
        }
        assert (await next_message(sub2, "notification.read")).data["unread"] == 0


async def test_delivery_is_recorded_once_delivered_live(server: LiveServer) -> None:
    user = new_id("live")
    token = server.token(user)
    async with http(server) as api, http(server, token) as me:
        offline = (await notify(api, user=user, title="while away"))[0]
        async with client(server, token) as page, page.subscribe(f"user:{user}") as sub:
            live = (await notify(api, user=user, title="live"))[0]
            # The relay publishes a few ms after the HTTP call: the first notification's event
            # may still come after the subscribe, and is then delivered (and recorded) too.
            pushed = {(await next_message(sub, "notification.created")).data["id"]}
            while live["id"] not in pushed:
                pushed.add((await next_message(sub, "notification.created")).data["id"])
            async with asyncio.timeout(WITHIN):
                while True:
                    listed = (await me.get("/api/notifications")).json()["notifications"]
                    by_id = {n["id"]: n for n in listed}
                    if by_id[live["id"]]["delivered_at"] is not None:
                        break
                    await asyncio.sleep(0.05)
        if offline["id"] not in pushed:
            assert by_id[offline["id"]]["delivered_at"] is None
        assert live["delivered_at"] is None


async def test_pagination_idempotency_and_delete(server: LiveServer) -> None:
    user, other = new_id("pager"), new_id("other")
    async with http(server) as api, http(server, server.token(user)) as me:
        key = {"Idempotency-Key": new_id("key")}
        body = {"users": [user, other], "type": "success", "title": "Shipped", "data": {"n": 1}}
        first = await api.post("/api/notifications", json=body, headers=key)
        again = await api.post("/api/notifications", json=body, headers=key)
        assert first.status_code == again.status_code == 201
        ids = [n["id"] for n in first.json()["notifications"]]
        assert [n["id"] for n in again.json()["notifications"]] == ids and len(ids) == 2
        for i in range(4):
            await notify(api, user=user, title=f"more {i}")
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await me.get("/api/notifications", params=params)).json()
            assert page["unread"] == 5
            seen += [n["id"] for n in page["notifications"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert len(seen) == len(set(seen)) == 5
        mine = next(i for i in ids if i in seen)
        theirs = next(i for i in ids if i not in seen)
        # Another user's notifications are invisible: not listed, not readable, not deletable.
        assert error_code(await me.delete(f"/api/notifications/{theirs}"), 404) == "not_found"
        read = await me.post("/api/notifications/read", json={"ids": [theirs]})
        assert error_code(read, 404) == "not_found"
        assert (await me.delete(f"/api/notifications/{mine}")).status_code == 204
        assert error_code(await me.delete(f"/api/notifications/{mine}"), 404) == "not_found"
        unread = (await me.get("/api/notifications", params={"unread": "true"})).json()
        assert len(unread["notifications"]) == 4 and unread["unread"] == 4


async def test_invalid_requests_are_refused(server: LiveServer) -> None:
    user = new_id("strict")
    async with (
        http(server) as api,
        http(server, server.token(user)) as me,
        http(server, None) as anonymous,
    ):
        for body in (
            {"type": "info", "title": "no user"},
            {"user": user, "users": [user], "type": "info", "title": "both"},
            {"user": user, "type": "shout", "title": "bad type"},
            {"user": user, "type": "info", "title": ""},
            {"user": user, "type": "info", "title": "x" * 201},
            {"user": user, "type": "info", "title": "x", "body": "b" * 2001},
            {"users": [], "type": "info", "title": "nobody"},
            {"user": "bad user!", "type": "info", "title": "bad id"},
            {"user": user, "type": "info", "title": "x", "extra": 1},
        ):
            response = await api.post("/api/notifications", json=body)
            assert error_code(response, 422) == "invalid_payload", body
        forbidden = await me.post(
            "/api/notifications", json={"user": user, "type": "info", "title": "hi"}
        )
        assert error_code(forbidden, 403) == "permission_denied"
        assert error_code(await anonymous.get("/api/notifications"), 401) == "unauthorized"
        bad_reads: list[dict[str, Any]] = [{}, {"ids": []}, {"ids": ["a"], "all": True}]
        for read in [*bad_reads, {"all": False}]:
            response = await me.post("/api/notifications/read", json=read)
            assert error_code(response, 422) == "invalid_payload", read
        bad_cursor = await me.get("/api/notifications", params={"cursor": "nope"})
        assert error_code(bad_cursor, 422) == "invalid_payload"
        assert error_code(await me.get("/api/notifications", params={"limit": 0}), 422)
        other = await me.get("/api/notifications", params={"user": new_id("x")})
        assert error_code(other, 403) == "permission_denied"
        assert (await me.get("/api/notifications")).json()["notifications"] == []
