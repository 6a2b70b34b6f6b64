"""Established websockets are detached from ASGI (server.transport): an idle connection holds
no task and no suspended call, and everything Engine.IO's own loop did still happens:
heartbeats, a dead client's timeout, the end of the session when the socket goes, upgrades
from long-polling, messages pipelined behind the upgrade.

These run a node in the test's own event loop (uvicorn with Tandem's protocol) so the test
can look at its tasks and sessions; the clients are raw, thread-based ones (no tasks here).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.exceptions import InvalidStatus

from server.app import TandemApp, create_app
from server.config import Settings
from server.transport.websocket import WebSocketProtocol
from storage.migrate import upgrade
from tests.protocol.raw import Closed, RawClient
from tests.support.live import API_KEY, TEST_SECRET, free_port, make_token

CLIENTS = 30


class Node:
    def __init__(self, app: TandemApp, port: int) -> None:
        self.app = app
        self.port = port

    @property
    def sessions(self) -> int:
        return len(self.app.runtime.sio.engine.sessions)

    @property
    def detached(self) -> int:
        return self.app.runtime.sio.engine.websockets

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings(
        database_url=url,
        jwt_secret=TEST_SECRET,
        api_keys=[API_KEY],
        ping_interval_s=1.0,
        ping_timeout_s=1.0,
    )
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        lifespan="on",
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the node did not start"
            await asyncio.sleep(0.02)
        yield Node(app, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)


def subscribed_client(port: int, channel: str, **options: object) -> RawClient:
    client = RawClient(port, compression=None, **options)  # type: ignore[arg-type]
    client.connect_namespace(make_token("alice", channels=[channel, "room:probe"]))
    ack = client.request("subscribe", {"channel": channel})
    assert ack.get("ok") is True, ack
    return client


def close_all(clients: list[RawClient]) -> None:
    for client in clients:
        client.close()


async def test_idle_websockets_hold_no_task_and_end_with_their_socket(node: Node) -> None:
    await asyncio.sleep(0.2)
    before = len(asyncio.all_tasks())
    clients = await asyncio.to_thread(
        lambda: [subscribed_client(node.port, f"room:idle{i}") for i in range(CLIENTS)]
    )
    try:
        await node.until(lambda: node.detached == CLIENTS)
        # Engine.IO's loop held 5 tasks per connection: uvicorn's ASGI task running it, its
        # writer and the writer's queue wait, its reader's wait, and the ping: 150 here. The
        # handlers' tasks end shortly after the connections are detached.
        await node.until(lambda: len(asyncio.all_tasks()) - before <= 3)
        # Nor the request it came with: what python-socketio keeps of it is a few strings.
        environs = [s.environ for s in node.app.runtime.sio.engine.sessions.values()]
        assert len(environs) == CLIENTS
        assert all("asgi.scope" not in env for env in environs), environs[0]
        assert environs[0]["REMOTE_ADDR"] == "127.0.0.1" and len(environs[0]) <= 5
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}") as http:
            response = await http.post(
                "/api/publish",
                json={"channel": "room:idle7", "event": "chat.message", "data": "hi"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert response.status_code == 200, response.text
        name, envelope = await asyncio.to_thread(clients[7].next_event)
        assert (name, envelope["channel"], envelope["data"]) == ("chat.message", "room:idle7", "hi")
    finally:
        await asyncio.to_thread(close_all, clients)
    # Each session ends with its socket, as Engine.IO's loop ended it.
    await node.until(lambda: node.sessions == 0 and node.detached == 0)


async def test_detached_websockets_keep_their_heartbeat(node: Node) -> None:
    alive = await asyncio.to_thread(subscribed_client, node.port, "room:alive")
    silent = await asyncio.to_thread(
        subscribed_client, node.port, "room:silent", answer_pings=False
    )
    try:
        # Pings every second, a 1 s timeout: the silent client's websocket is closed (at once,
        # where Engine.IO's loop waited for interval + timeout more); the one answering stays
        # through several rounds.
        closed, frames = await asyncio.to_thread(silent.wait_closed, 6.0)
        assert "2" in frames and closed == Closed(1000, ""), (frames, closed)
        await node.until(lambda: node.sessions == 1)
        # Three more rounds answered: each would have closed it, had its answers been lost.
        rounds = alive.pings_answered
        await node.until(lambda: alive.pings_answered >= rounds + 3, timeout=10)
        await asyncio.to_thread(alive.probe)
        assert node.sessions == node.detached == 1
    finally:
        await asyncio.to_thread(close_all, [alive, silent])


async def test_an_upgrade_from_long_polling_is_detached_with_what_came_behind_it(
    node: Node,
) -> None:
    token = make_token("alice", channels=["room:up", "room:probe"])

    def upgrade_and_subscribe() -> tuple[RawClient, object]:
        base = f"http://127.0.0.1:{node.port}/socket.io/"
        with httpx.Client() as http:
            opening = http.get(base, params={"EIO": "4", "transport": "polling"}).text
            sid = json.loads(opening[1:])["sid"]
            # Connected to "/" over long-polling first, as browsers do.
            params = {"EIO": "4", "transport": "polling", "sid": sid}
            http.post(base, params=params, content=f"40{json.dumps({'token': token})}")
            assert http.get(base, params=params).text.startswith("40{")
        client = RawClient(node.port, compression=None, sid=sid)
        client.send("2probe")
        assert client.recv() == "3probe"
        # The upgrade and the first request leave together.
        client.send("5")
        ack = client.request("subscribe", {"channel": "room:up"})
        return client, ack

    client, ack = await asyncio.to_thread(upgrade_and_subscribe)
    try:
        assert isinstance(ack, dict) and ack.get("ok") is True, ack
        assert node.detached == 1
        await asyncio.to_thread(client.probe)
    finally:
        await asyncio.to_thread(client.close)
    await node.until(lambda: node.sessions == 0)


async def test_a_session_ends_at_once_on_the_clients_close_or_a_broken_frame(node: Node) -> None:
    def close_both() -> tuple[Closed, Closed]:
        leaving = subscribed_client(node.port, "room:leaving")
        leaving.send("1")  # Engine.IO CLOSE: the server closes without waiting for the client
        broken = subscribed_client(node.port, "room:broken")
        broken.ws.send(b"42\xff", text=True)  # a text frame that is not UTF-8
        return leaving.wait_closed(2.0)[0], broken.wait_closed(2.0)[0]

    bystander = await asyncio.to_thread(subscribed_client, node.port, "room:bystander")
    try:
        left, broke = await asyncio.to_thread(close_both)
        assert left.code == 1000 and broke.code == 1007, (left, broke)
        await node.until(lambda: node.sessions == node.detached == 1)
        await asyncio.to_thread(bystander.probe)
    finally:
        await asyncio.to_thread(bystander.close)


async def test_a_draining_node_opens_no_session_and_holds_no_poll(node: Node) -> None:
    """After the drain, a handshake is refused 503 with Retry-After (the client goes elsewhere
    or comes back once the node has restarted), and a session that never connected is closed:
    its pending long-poll is answered now, not when the ping interval runs out."""
    polling = {"EIO": "4", "transport": "polling"}
    engine = node.app.runtime.sio.engine
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.port}", timeout=5) as http:
        opened = await http.get("/socket.io/", params=polling)
        sid = json.loads(opened.text[1:])["sid"]
        poll = asyncio.create_task(http.get("/socket.io/", params={**polling, "sid": sid}))
        await node.until(lambda: engine.sessions[sid].poll is not None)
        await node.app.runtime.gateway.drain()
        answered = await asyncio.wait_for(poll, 2)
        assert answered.status_code == 200 and answered.text == "1", answered.text
        refused = await http.get("/socket.io/", params=polling)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"code": -1, "message": "Server is restarting"}
    with pytest.raises(InvalidStatus) as websocket:
        await asyncio.to_thread(RawClient, node.port)
    assert websocket.value.response.status_code == 503
    assert engine.sessions == {}
