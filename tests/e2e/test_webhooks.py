"""Outgoing webhooks end to end: a real node sends to real HTTP receivers on loopback.

The receivers are tiny HTTP/1.1 servers (``asyncio.start_server``) that answer each request
as a test scripts it: fine, an error, a redirect, HTML, bytes that are not HTTP, or nothing.
They play an application that dedupes by ``Webhook-Id``, as the README tells receivers to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from client_sdk import Client, Message
from tests.support.cluster import shared_stores
from tests.support.live import API_KEY, LiveServer, live_server

WITHIN = 10.0
# Small backoff and timeouts, so retries and dead letters happen within a test.
FAST = {
    "TANDEM_WEBHOOK_BACKOFF_BASE_S": "0.05",
    "TANDEM_WEBHOOK_BACKOFF_MAX_S": "0.2",
    "TANDEM_WEBHOOK_MAX_ATTEMPTS": "4",
    "TANDEM_WEBHOOK_TIMEOUT_S": "1",
    "TANDEM_WEBHOOK_POLL_INTERVAL_S": "0.2",
    "TANDEM_WEBHOOK_CONCURRENCY": "4",
    "TANDEM_WEBHOOK_PER_ENDPOINT": "2",
}


def verify(secret: str, headers: dict[str, str], body: bytes, *, window: int = 300) -> bool:
    """The README's verification snippet."""
    timestamp = headers["x-tandem-timestamp"]
    expected = (
        "sha256="
        + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )
    fresh = abs(time.time() - int(timestamp)) <= window
    return fresh and hmac.compare_digest(expected, headers["x-tandem-signature"])


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def status(code: int, body: bytes = b"", *extra: str) -> Answer:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = [f"HTTP/1.1 {code} X", f"Content-Length: {len(body)}", "Connection: close", *extra]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return answer


async def hang(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
    await reader.read()  # until the sender gives up and closes the connection


async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\x01 this is not HTTP\r\n\r\n")
    await writer.drain()


OK = status(200, b"ok")
ERROR = status(500, b"oops")
HTML = status(502, b"<html><body>Bad gateway</body></html>", "Content-Type: text/html")
REDIRECT = status(302, b"", "Location: http://elsewhere.test/")


@dataclass
class Receiver:
    """Answers the requests it gets with ``answers`` in turn, then with 200."""

    answers: list[Answer] = field(default_factory=list)
    # Answers marked ``processed`` are given after the application handled the event.
    processed: tuple[Answer, ...] = (OK, hang)
    hits: asyncio.Queue[Hit] = field(default_factory=asyncio.Queue)
    applied: list[str] = field(default_factory=list)  # event ids the application handled
    held: asyncio.Semaphore | None = None  # when set, each answer waits for a release
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def next(self, within: float = WITHIN) -> Hit:
        return await asyncio.wait_for(self.hits.get(), within)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            hit = Hit(headers, body)
            answer = self.answers.pop(0) if self.answers else OK
            if answer in self.processed and hit.id not in self.applied:
                self.applied.append(hit.id)
            self.hits.put_nowait(hit)
            if self.held is not None:
                await self.held.acquire()
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiving(*answers: Answer) -> AsyncIterator[Receiver]:
    receiver = Receiver(list(answers))
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await receiver.handle(reader, writer)
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def http(node: LiveServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=WITHIN
    )


@contextlib.asynccontextmanager
async def registered(
    api: httpx.AsyncClient, url: str, events: list[str], **extra: Any
) -> AsyncIterator[dict[str, Any]]:
    response = await api.post("/api/webhooks", json={"url": url, "events": events, **extra})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    try:
        yield endpoint
    finally:
        # Deliveries of other tests' events stop with it.
        await api.delete(f"/api/webhooks/{endpoint['id']}")


async def complete_job(api: httpx.AsyncClient, owner: str = "shopper") -> str:
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    created = await api.post("/api/jobs", json={"owner": owner, "kind": "checkout", "id": job_id})
    assert created.status_code == 201 or created.status_code == 200, created.text
    done = await api.post(f"/api/jobs/{job_id}/complete", json={"result": {"ok": True}})
    assert done.status_code == 200, done.text
    return job_id


async def hit_for(receiver: Receiver, job_id: str) -> Hit:
    """The next request about ``job_id`` (other tests' jobs may go to the same endpoint)."""
    async with asyncio.timeout(WITHIN):
        while True:
            hit = await receiver.next()
            if hit.json()["data"]["id"] == job_id:
                return hit


async def delivery(api: httpx.AsyncClient, delivery_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/webhooks/deliveries/{delivery_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def settled(
    api: httpx.AsyncClient, delivery_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The delivery once ``check`` holds (it is recorded just after the receiver answers)."""
    async with asyncio.timeout(WITHIN):
        for _ in range(1000):
            found = await delivery(api, delivery_id)
            if check(found):
                return found
            await asyncio.sleep(0.02)
    raise AssertionError(f"delivery {delivery_id} never settled: {found}")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("webhooks"), FAST) as server:
        yield server


# -- registration -----------------------------------------------------------------------------


async def test_registration_is_validated_and_endpoints_are_managed(node: LiveServer) -> None:
    async with http(node) as api:
        bad = [
            ({"url": "ftp://example.com/x", "events": ["job.completed"]}, "http"),
            ({"url": "/relative/path", "events": ["job.completed"]}, "http"),
            ({"url": "http:///no-host", "events": ["job.completed"]}, "host"),
            ({"url": "https://user:pw@example.com/", "events": ["job.completed"]}, "credentials"),
            ({"url": "https://example.com/" + "a" * 2000, "events": ["job.completed"]}, "url"),
            ({"url": "https://example.com:99999/", "events": ["job.completed"]}, "url"),
            ({"url": "https://example.com/", "events": ["job.exploded"]}, "job.completed"),
            ({"url": "https://example.com/", "events": []}, "at least one"),
            ({"url": "https://example.com/", "events": ["job.failed:room"]}, "namespace"),
            ({"url": "https://example.com/", "events": ["presence.join:nope"]}, "room"),
            ({"url": "https://example.com/", "events": ["job.failed"], "secret": "short"}, "16"),
            ({"url": "https://example.com/", "events": ["job.failed"], "extra": 1}, "extra"),
        ]
        for body, hint in bad:
            response = await api.post("/api/webhooks", json=body)
            assert response.status_code == 422, (body, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_payload", error
            assert hint in error["message"], (hint, error)
        assert (await api.get("/api/webhooks")).json() == {"endpoints": []}

        # Only API keys: a user's token is refused.
        user = {"Authorization": f"Bearer {node.token('alice')}"}
        refused = await api.post(
            "/api/webhooks",
            json={"url": "https://example.com/", "events": ["job.failed"]},
            headers=user,
        )
        assert refused.status_code == 403, refused.text

        async with registered(
            api, "https://example.com/hook", ["job.failed", "presence.join:room"]
        ) as hook:
            assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
            shown = (await api.get(f"/api/webhooks/{hook['id']}")).json()
            assert "secret" not in shown and shown["events"] == ["job.failed", "presence.join:room"]
            patched = await api.patch(
                f"/api/webhooks/{hook['id']}", json={"enabled": False, "events": ["job.completed"]}
            )
            assert patched.status_code == 200, patched.text
            assert patched.json()["enabled"] is False
            assert patched.json()["events"] == ["job.completed"]
            bad_patch = await api.patch(f"/api/webhooks/{hook['id']}", json={"url": "nope"})
            assert bad_patch.json()["error"]["code"] == "invalid_payload"
            listed = (await api.get("/api/webhooks")).json()["endpoints"]
            assert [e["id"] for e in listed] == [hook["id"]]
        assert (await api.get(f"/api/webhooks/{hook['id']}")).status_code == 404
        assert (await api.delete(f"/api/webhooks/{hook['id']}")).status_code == 404


# -- delivery ---------------------------------------------------------------------------------


async def test_a_completed_job_arrives_signed(node: LiveServer) -> None:
    secret = "a-receiver-chosen-secret-0123456789"
    async with (
        receiving() as receiver,
        http(node) as api,
        registered(api, receiver.url, ["job.completed"], secret=secret) as hook,
    ):
        job_id = await complete_job(api)
        hit = await hit_for(receiver, job_id)
        assert verify(secret, hit.headers, hit.body)
        assert not verify("another-secret-0123456789", hit.headers, hit.body)
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["x-tandem-event"] == "job.completed"
        body = hit.json()
        assert body["type"] == "job.completed"
        assert body["data"]["status"] == "completed" and body["data"]["result"] == {"ok": True}
        found = await settled(api, hit.id, lambda d: d["status"] == "delivered")
        assert found["endpoint_id"] == hook["id"] and found["event_id"] == body["id"]
        assert found["attempts"] == 1 and found["last_status"] == 200
        assert found["payload"] == body
        listed = await api.get(
            f"/api/webhooks/{hook['id']}/deliveries", params={"status": "delivered"}
        )
        assert hit.id in {d["id"] for d in listed.json()["deliveries"]}
        metrics = (await api.get("/metrics")).text
        assert 'tandem_webhook_deliveries_total{outcome="delivered"}' in metrics
        assert "tandem_webhook_delivery_seconds_bucket" in metrics


async def test_an_error_then_a_hang_then_success_reaches_the_application_once(
    node: LiveServer,
) -> None:
    async with (
        receiving(ERROR, hang, OK) as receiver,
        http(node) as api,
        registered(api, receiver.url, ["job.completed"]) as hook,
    ):
        job_id = await complete_job(api)
        hits = [await hit_for(receiver, job_id) for _ in range(3)]
        assert len({hit.id for hit in hits}) == 1  # one delivery, attempted three times
        assert all(verify(hook["secret"], hit.headers, hit.body) for hit in hits)
        found = await settled(api, hits[0].id, lambda d: d["status"] == "delivered")
        assert found["attempts"] == 3 and found["last_status"] == 200
        # The hang was handled but not answered in time: the retry is a duplicate.
        assert receiver.applied == [hits[0].id]


async def test_garbage_answers_are_failures_with_their_reason(node: LiveServer) -> None:
    async with (
        receiving(HTML, REDIRECT, garbage, OK) as receiver,
        http(node) as api,
        registered(api, receiver.url, ["job.completed"]),
    ):
        receiver.held = asyncio.Semaphore(0)
        job_id = await complete_job(api)
        first = await hit_for(receiver, job_id)
        expected = [
            (502, "<html><body>Bad gateway"),
            (302, "redirects are not followed"),
            (None, "RemoteProtocolError"),
        ]
        for attempts, (code, reason) in enumerate(expected, start=1):
            receiver.held.release()
            await hit_for(receiver, job_id)  # attempt n is recorded before n + 1 is made
            found = await delivery(api, first.id)
            assert (found["attempts"], found["last_status"]) == (attempts, code), found
            assert reason in found["last_error"], found
            assert found["status"] == "pending"
        receiver.held.release()
        await settled(api, first.id, lambda d: d["status"] == "delivered")


async def test_dead_letters_are_replayed(node: LiveServer) -> None:
    async with (
        receiving(*[ERROR] * 8) as receiver,
        http(node) as api,
        registered(api, receiver.url, ["job.completed"]) as hook,
    ):
        job_id = await complete_job(api)
        hits = [await hit_for(receiver, job_id) for _ in range(4)]  # the attempt limit
        dead = await settled(api, hits[0].id, lambda d: d["status"] == "dead")
        assert dead["attempts"] == 4 and dead["last_status"] == 500
        listed = await api.get(f"/api/webhooks/{hook['id']}/deliveries", params={"status": "dead"})
        assert [d["id"] for d in listed.json()["deliveries"]] == [hits[0].id]
        assert listed.json()["next_cursor"] is None
        paged = await api.get(f"/api/webhooks/{hook['id']}/deliveries", params={"limit": 1})
        assert paged.json()["next_cursor"] == hits[0].id
        after = await api.get(
            f"/api/webhooks/{hook['id']}/deliveries", params={"before": hits[0].id}
        )
        assert after.json() == {"deliveries": [], "next_cursor": None}
        metrics = (await api.get("/metrics")).text
        assert 'tandem_webhook_deliveries_total{outcome="dead"}' in metrics
        assert "tandem_webhook_dead_letters 1.0" in metrics

        # A bulk replay: four more attempts, all refused again.
        replayed = await api.post(f"/api/webhooks/{hook['id']}/deliveries/replay")
        assert replayed.json() == {"replayed": 1}
        [await hit_for(receiver, job_id) for _ in range(4)]
        await settled(api, hits[0].id, lambda d: d["status"] == "dead")
        # The receiver is fixed; one replay delivers it, with the same id.
        one = await api.post(f"/api/webhooks/deliveries/{hits[0].id}/replay")
        assert one.status_code == 200 and one.json()["status"] == "pending", one.text
        again = await hit_for(receiver, job_id)
        assert again.id == hits[0].id and again.body == hits[0].body
        done = await settled(api, hits[0].id, lambda d: d["status"] == "delivered")
        assert done["attempts"] == 1
        assert (await api.post("/api/webhooks/deliveries/nope/replay")).status_code == 404


async def test_sockets_and_other_endpoints_go_on_while_a_receiver_hangs(
    node: LiveServer,
) -> None:
    owner = f"watcher-{uuid.uuid4().hex[:8]}"
    async with (
        receiving(*[hang] * 50) as stuck,
        receiving() as healthy,
        http(node) as api,
        registered(api, stuck.url, ["job.completed"]),
        registered(api, healthy.url, ["job.completed"]),
        Client(node.url, token=node.token(owner)) as page,
        page.subscribe(f"user:{owner}") as sub,
    ):
        # Enough completions to fill every slot the hanging endpoint may take, and more.
        for _ in range(3):
            await complete_job(api, owner)
        await stuck.next()
        started = time.monotonic()
        job_id = await complete_job(api, owner)
        async with asyncio.timeout(2.0):
            while True:
                message = await anext(sub)
                if (
                    isinstance(message, Message)
                    and message.type == "job.completed"
                    and message.data["id"] == job_id
                ):
                    break
        assert time.monotonic() - started < 1.0
        # The healthy endpoint is not held up by the stuck one either.
        hit = await hit_for(healthy, job_id)
        assert hit.json()["type"] == "job.completed"


async def test_a_node_killed_after_the_commit_delivers_after_restart(
    tmp_path: Path,
) -> None:
    async with receiving(hang) as receiver:
        with live_server(tmp_path, FAST) as first:
            async with http(first) as api:
                response = await api.post(
                    "/api/webhooks", json={"url": receiver.url, "events": ["job.completed"]}
                )
                assert response.status_code == 201, response.text
                job_id = await complete_job(api)
            hit = await hit_for(receiver, job_id)  # the attempt is under way...
            first.process.kill()  # ... when the node is SIGKILLed
            first.process.wait(10)
        with live_server(tmp_path, FAST) as second:
            # Claimed again once the dead node's lease ends: the same delivery, the same id.
            again = await asyncio.wait_for(receiver.hits.get(), 3 * WITHIN)
            assert again.id == hit.id and again.body == hit.body
            async with http(second) as api:
                await settled(api, hit.id, lambda d: d["status"] == "delivered")
        assert receiver.applied == [hit.id]


CHANNEL_EVENTS = [
    f"{event}:room"
    for event in ("presence.join", "presence.leave", "channel.occupied", "channel.vacated")
]


async def next_on(receiver: Receiver, room: str, count: int) -> set[tuple[str, str | None]]:
    """The next ``count`` events on ``room``: (type, user)."""
    seen: set[tuple[str, str | None]] = set()
    async with asyncio.timeout(WITHIN):
        while len(seen) < count:
            body = (await receiver.next()).json()
            assert body["data"]["channel"].startswith("room:"), body  # the namespace filter
            if body["data"]["channel"] == room:
                seen.add((body["type"], body["data"].get("user")))
    return seen


async def test_presence_and_occupancy_of_a_namespace(node: LiveServer) -> None:
    room = f"room:lobby-{uuid.uuid4().hex[:8]}"

    def token(user: str) -> str:
        return node.token(user, channels=[room])

    async with (
        receiving() as receiver,
        http(node) as api,
        registered(api, receiver.url, CHANNEL_EVENTS),
    ):
        async with Client(node.url, token=token("alice")) as alice:
            async with alice.subscribe(room, presence=True), alice.subscribe("user:alice"):
                assert await next_on(receiver, room, 2) == {
                    ("channel.occupied", None),
                    ("presence.join", "alice"),
                }
                async with Client(node.url, token=token("bob")) as bob:
                    async with bob.subscribe(room, presence=True):
                        assert await next_on(receiver, room, 1) == {("presence.join", "bob")}
                    assert await next_on(receiver, room, 1) == {("presence.leave", "bob")}
            assert await next_on(receiver, room, 2) == {
                ("presence.leave", "alice"),
                ("channel.vacated", None),
            }


async def test_two_nodes_share_deliveries_and_occupancy(tmp_path: Path) -> None:
    room = f"room:shared-{uuid.uuid4().hex[:8]}"
    async with receiving() as jobs_receiver, receiving() as rooms_receiver:
        with shared_stores(tmp_path) as env, live_server(tmp_path / "a", {**FAST, **env}) as a:
            async with http(a) as api:
                for url, events in (
                    (jobs_receiver.url, ["job.completed"]),
                    (rooms_receiver.url, CHANNEL_EVENTS),
                ):
                    response = await api.post("/api/webhooks", json={"url": url, "events": events})
                    assert response.status_code == 201, response.text
                hook = response.json()
            with live_server(tmp_path / "b", {**FAST, **env}) as b:
                async with http(a) as api_a, http(b) as api_b:
                    jobs = [await complete_job(api) for api in (api_a, api_b) * 10]
                    hits = [await jobs_receiver.next() for _ in jobs]
                    assert sorted(hit.json()["data"]["id"] for hit in hits) == sorted(jobs)
                    for hit in hits:
                        # Recorded once: no other node attempted it too.
                        found = await settled(api_b, hit.id, lambda d: d["status"] == "delivered")
                        assert found["attempts"] == 1, found

                    def token(user: str) -> str:
                        return a.token(user, channels=[room])

                    async with (
                        Client(a.url, token=token("alice")) as alice,
                        Client(b.url, token=token("bob")) as bob,
                    ):
                        async with alice.subscribe(room, presence=True):
                            assert await next_on(rooms_receiver, room, 2) == {
                                ("channel.occupied", None),
                                ("presence.join", "alice"),
                            }
                            async with bob.subscribe(room, presence=True):
                                # Occupied already: node b announces only bob.
                                assert await next_on(rooms_receiver, room, 1) == {
                                    ("presence.join", "bob")
                                }
                            assert await next_on(rooms_receiver, room, 1) == {
                                ("presence.leave", "bob")
                            }
                        assert await next_on(rooms_receiver, room, 2) == {
                            ("presence.leave", "alice"),
                            ("channel.vacated", None),
                        }
                    listed = await api_a.get(f"/api/webhooks/{hook['id']}/deliveries")
                    assert len(listed.json()["deliveries"]) == 6
