"""Collaborative documents on one real node: the doc.* events, bad input, access, the HTTP
API (content, server-side edits, versions), restarts."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pycrdt import Doc, Text

from tests.support.live import API_KEY, LiveServer, live_server
from tests.support.sio import connected
from tests.support.ypeer import YPeer

DOC_MAX = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A node with a small document cap and short unloads."""
    env = {
        "TANDEM_DOC_MAX_BYTES": str(DOC_MAX),
        "TANDEM_ENGINE_MAX_BYTES": str(DOC_MAX + 128 * 1024),
        "TANDEM_DOC_UNLOAD_GRACE_S": "0.2",
        "TANDEM_AWARENESS_RATE_PER_S": "5",
        "TANDEM_AWARENESS_BURST": "10",
    }
    with live_server(tmp_path_factory.mktemp("docs"), env) as node:
        yield node


@asynccontextmanager
async def peer(
    node: LiveServer,
    doc: str,
    user: str = "alice",
    role: str = "editor",
    *,
    join: bool = True,
    **connect: Any,
) -> AsyncIterator[YPeer]:
    token = node.token(user, docs={doc: role}, name=user.title())
    async with connected(node.url, token, **connect) as client:
        yp = YPeer(client, doc)
        if join:
            ack = await yp.join()
            assert ack["ok"], ack
        try:
            yield yp
        finally:
            await yp.stop()


def api(node: LiveServer, token: str = API_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


# -- editing ----------------------------------------------------------------------------------


async def test_two_editors_converge_and_see_each_others_cursors(server: LiveServer) -> None:
    async with peer(server, "pair", "alice") as alice, peer(server, "pair", "bob") as bob:
        assert (await alice.set_awareness({"user": {"name": "Alice"}, "cursor": None}))["ok"]
        for char in "hello":  # one at a time: a binary event is two packets on the wire
            await alice.edit(functools.partial(_append, char))
        await bob.edit(lambda t: t.insert(0, ">> "))
        await alice.wait_for(lambda: str(alice.text) == str(bob.text) and len(str(bob.text)) == 8)
        await bob.wait_for(lambda: alice.doc.client_id in bob.others())
        assert bob.others()[alice.doc.client_id]["user"]["name"] == "Alice"
        assert str(bob.text) == ">> hello"
        # Each got only the other's edits, never its own echo: bob's next edit is published
        # on the document after alice's, so any echo of hers would have reached her first.
        await bob.edit(lambda t: t.insert(len(t), "!"))
        await alice.wait_text(">> hello!")
        assert alice.updates_received == 2 and bob.updates_received == 5
        assert alice.other_events == [] and bob.other_events == []


async def test_a_closed_tab_loses_its_cursor_at_once(server: LiveServer) -> None:
    async with peer(server, "cursor", "bob") as bob:
        async with peer(server, "cursor", "alice") as alice:
            await alice.set_awareness({"user": {"name": "Alice"}})
            await bob.wait_for(lambda: alice.doc.client_id in bob.others())
        started = time.monotonic()
        await bob.wait_for(lambda: not bob.others(), timeout=1.0)
        assert time.monotonic() - started < 1.0


async def test_a_late_joiner_gets_everything_and_offline_edits_merge(server: LiveServer) -> None:
    async with peer(server, "late", "alice") as alice:
        await alice.edit(lambda t: t.insert(0, "written before bob came. "))
        token = server.token("bob", docs={"late": "editor"})
        async with connected(server.url, token) as client:
            bob = YPeer(client, "late")
            bob.text.insert(0, "bob wrote this offline. ")  # before ever joining
            await bob.join()
            await alice.wait_for(lambda: "offline" in str(alice.text))
            await bob.wait_for(lambda: str(bob.text) == str(alice.text))
            await bob.stop()
        assert str(alice.text).count("written before bob came.") == 1


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_editing_over_msgpack_and_long_polling(
    msgpack_server: LiveServer, transport: str
) -> None:
    doc = f"msgpack-{transport}"
    async with (
        peer(msgpack_server, doc, "alice", serializer="msgpack", transport=transport) as alice,
        peer(msgpack_server, doc, "bob", serializer="msgpack") as bob,
    ):
        await alice.edit(lambda t: t.insert(0, "binary all the way"))
        await bob.wait_text("binary all the way")
        await bob.set_awareness({"user": {"name": "Bob"}})
        await alice.wait_for(lambda: bob.doc.client_id in alice.others())


# -- bad input --------------------------------------------------------------------------------


async def test_bad_input_is_refused_and_changes_nothing(server: LiveServer) -> None:
    async with (
        peer(server, "bad", "alice") as alice,
        peer(server, "bad", "bob") as bob,
        peer(server, "bad", "vic", "viewer") as viewer,
    ):
        await alice.edit(lambda t: t.insert(0, "intact"))
        await bob.wait_text("intact")
        good = _update_inserting("!")
        cases = {
            "garbage": ({"doc": "bad", "update": b"\x01\x02\x03garbage"}, "invalid_payload"),
            "truncated": ({"doc": "bad", "update": good[:-3]}, "invalid_payload"),
            "not bytes": ({"doc": "bad", "update": "aGVsbG8="}, "invalid_payload"),
            "no doc": ({"update": good}, "invalid_payload"),
            "bad doc id": ({"doc": "a b", "update": good}, "invalid_payload"),
            "not joined": ({"doc": "other", "update": good}, "not_found"),
        }
        for name, (payload, code) in cases.items():
            ack = await alice.client.call("doc.update", payload)
            assert not ack["ok"] and ack["error"]["code"] == code, (name, ack)
        ack = await viewer.client.call("doc.update", {"doc": "bad", "update": good})
        assert ack["error"]["code"] == "permission_denied"
        for payload in ({"doc": "bad", "sv": b"\xff\xff\xff"}, {"doc": "bad"}):
            ack = await alice.client.call("doc.sync", payload)
            assert ack["error"]["code"] == "invalid_payload", ack
        ack = await alice.client.call("doc.awareness", {"doc": "bad", "update": b"\x09\x01"})
        assert ack["error"]["code"] == "invalid_payload"
        ack = await alice.client.call("doc.join", {"doc": "bad", "sv": b"\x05"})
        assert ack["error"]["code"] == "invalid_payload"
        # Nothing changed, and everyone is still connected and in sync.
        await alice.edit(lambda t: t.insert(len(t), " still"))
        await bob.wait_text("intact still")
        await viewer.wait_text("intact still")
        assert alice.client.client.connected and viewer.client.client.connected


async def test_oversized_updates_are_refused(server: LiveServer) -> None:
    async with peer(server, "big", "alice") as alice, peer(server, "big", "bob") as bob:
        await alice.edit(lambda t: t.insert(0, "small"))
        ack = await alice.edit(lambda t: t.insert(0, "x" * (DOC_MAX + 1000)))
        assert ack["error"]["code"] == "payload_too_large", ack
        # Over the engine's message limit (announced as maxPayload in the handshake): the
        # websocket is closed with 1009, and nobody else notices.
        assert await _send_huge_frame(server) == 1009
        # Carol's edit is published after anything of the refused ones: bob gets it, and
        # nothing else (alice's own next updates would wait for the refused one's clock).
        async with peer(server, "big", "carol") as carol:
            await carol.edit(lambda t: t.insert(len(t), "!"))
            await bob.wait_text("small!")
        assert bob.updates_received == 2 and bob.other_events == []


async def test_an_awareness_flood_is_rate_limited_without_harm(server: LiveServer) -> None:
    async with peer(server, "flood", "alice") as alice, peer(server, "flood", "bob") as bob:
        codes = []
        for i in range(40):
            ack = await alice.set_awareness({"user": {"name": "A"}, "cursor": i})
            codes.append(ack["ok"] or ack["error"]["code"])
        assert True in codes and "rate_limited" in codes
        # Document edits have limits of their own: the flood did not use them up.
        assert (await alice.edit(lambda t: t.insert(0, "still editing")))["ok"]
        await bob.wait_text("still editing")
        too_many = {"user": {"name": "x" * 5000}}
        # Once the bucket has refilled (5/s), this one must be judged on its size.
        for _ in range(50):
            ack = await alice.set_awareness(too_many)
            if ack["error"]["code"] != "rate_limited":
                break
            await asyncio.sleep(0.1)
        assert ack["error"]["code"] == "invalid_payload", ack


# -- access -----------------------------------------------------------------------------------


async def test_access_follows_grants_and_members(server: LiveServer) -> None:
    async with api(server) as http:
        created = await http.post(
            "/api/docs", json={"id": "acl", "members": [{"user": "mia", "role": "viewer"}]}
        )
        assert created.status_code == 201, created.text
    async with connected(server.url, server.token("mallory")) as stranger:
        ack = await stranger.call("doc.join", {"doc": "acl"})
        assert ack["error"]["code"] == "permission_denied"
        ack = await stranger.call("doc.join", {"doc": "never-created"})
        assert ack["error"]["code"] == "permission_denied"  # existence does not leak
    async with connected(server.url, server.token("mia")) as member:
        ack = await member.call("doc.join", {"doc": "doc:acl"})
        assert ack["ok"] and ack["role"] == "viewer" and ack["doc"] == "acl"
    async with connected(server.url, server.token("amy", channels=["doc:acl"])) as granted:
        ack = await granted.call("doc.join", {"doc": "acl"})
        assert ack["ok"] and ack["role"] == "editor"
    async with connected(server.url, server.token("vera", docs={"a*": "viewer"})) as viewer:
        ack = await viewer.call("doc.join", {"doc": "a-fresh-doc-for-a-viewer"})
        assert ack["error"]["code"] == "not_found"  # a viewer grant never creates


async def test_owner_manages_members_and_a_removed_member_is_closed(server: LiveServer) -> None:
    owner = server.token("olga")
    async with api(server, owner) as http:
        assert (await http.post("/api/docs", json={"id": "owned"})).status_code == 201
        put = await http.put("/api/docs/owned/members/nina", json={"role": "editor"})
        assert put.status_code == 200 and put.json()["members"] == [
            {"user": "nina", "role": "editor"}
        ]
    async with connected(server.url, server.token("nina")) as client:
        nina = YPeer(client, "owned")
        assert (await nina.join())["role"] == "editor"
        async with api(server, server.token("nina")) as http:
            denied = await http.delete("/api/docs/owned/members/nina")
            assert denied.status_code == 403  # only the owner manages
        async with api(server, owner) as http:
            assert (await http.delete("/api/docs/owned/members/nina")).status_code == 200
        await nina.wait_for(lambda: nina.closed is not None)
        assert nina.closed is not None and nina.closed["code"] == "permission_denied"
        await nina.stop()
        ack = await client.call("doc.update", {"doc": "owned", "update": _update_inserting("x")})
        assert ack["error"]["code"] == "not_found"


# -- the HTTP API -----------------------------------------------------------------------------


async def test_server_side_edits_reach_live_editors(server: LiveServer) -> None:
    async with api(server) as http:
        created = await http.post("/api/docs", json={"id": "served", "content": "Hello world"})
        assert created.status_code == 201 and created.json()["owner"] is None
        async with peer(server, "served") as alice:
            assert str(alice.text) == "Hello world"
            ops = [{"insert": "Dear ", "at": 0}, {"append": "!"}, {"delete": 5, "at": 5}]
            edited = await http.post("/api/docs/served/edit", json={"ops": ops})
            assert edited.status_code == 200, edited.text
            await alice.wait_text("Dear  world!")
            replaced = await http.post(
                "/api/docs/served/edit", json={"ops": [{"replace": "Dear reader!"}]}
            )
            assert replaced.status_code == 200
            await alice.wait_text("Dear reader!")
            past_end = await http.post(
                "/api/docs/served/edit", json={"ops": [{"insert": "x", "at": 999}]}
            )
            assert past_end.status_code == 422
            got = (await http.get("/api/docs/served")).json()
            assert got["content"] == "Dear reader!" and got["format"] == "text" and got["size"] > 0
        assert (await http.post("/api/docs", json={"id": "served"})).status_code == 409
        assert (await http.get("/api/docs/missing")).status_code == 404
        bad = await http.post("/api/docs", json={"id": "no spaces"})
        assert bad.status_code == 422


async def test_versions_restore_without_doubling(server: LiveServer) -> None:
    async with api(server) as http, peer(server, "history", "alice") as alice:
        async with peer(server, "history", "bob") as bob:
            await alice.edit(lambda t: t.insert(0, "First draft."))
            await bob.wait_text("First draft.")
            saved = await http.post("/api/docs/history/versions", json={"name": "draft 1"})
            assert saved.status_code == 201, saved.text
            await bob.edit(lambda t: t.insert(len(t), " More words by Bob."))
            await alice.edit(lambda t: t.insert(0, "Title. "))
            await alice.wait_text("Title. First draft. More words by Bob.")
            listed = (await http.get("/api/docs/history/versions")).json()["versions"]
            assert [v["name"] for v in listed] == ["draft 1"]
            version = (await http.get(f"/api/docs/history/versions/{listed[0]['id']}")).json()
            assert version["content"] == "First draft."
            restored = await http.post(f"/api/docs/history/versions/{listed[0]['id']}/restore")
            assert restored.status_code == 200, restored.text
            await alice.wait_text("First draft.")
            await bob.wait_text("First draft.")
            # Editing goes on from the restored text, and nothing comes back doubled.
            await bob.edit(lambda t: t.insert(len(t), " Again."))
            await alice.wait_text("First draft. Again.")
        assert (await http.get("/api/docs/history")).json()["content"] == "First draft. Again."


async def test_delete_closes_editors_and_a_re_created_document_resets_them(
    server: LiveServer,
) -> None:
    async with api(server) as http:
        assert (await http.post("/api/docs", json={"id": "phoenix", "content": "old"})).is_success
        async with connected(server.url, server.token("alice", docs={"phoenix": "editor"})) as c:
            alice = YPeer(c, "phoenix")
            await alice.join()
            old_epoch = alice.epoch
            assert (await http.delete("/api/docs/phoenix")).status_code == 204
            await alice.wait_for(lambda: alice.closed is not None)
            assert alice.closed is not None and alice.closed["code"] == "not_found"
            await alice.stop()
            created = await http.post("/api/docs", json={"id": "phoenix", "content": "new"})
            assert created.json()["epoch"] != old_epoch
            ack = await alice.join()  # still holding the old document's state and epoch
            assert ack["reset"] and str(alice.text) == "new"
            await alice.stop()
        assert (await http.get("/api/docs/phoenix")).json()["content"] == "new"


async def test_content_survives_a_restart(tmp_path: Path) -> None:
    env = {"TANDEM_DOC_FLUSH_INTERVAL_S": "5"}  # only the SIGTERM flush can save it
    with live_server(tmp_path, env) as node:
        async with peer(node, "durable") as alice:
            await alice.edit(lambda t: t.insert(0, "kept across restarts"))
    with live_server(tmp_path, env) as node:
        async with api(node) as http:
            assert (await http.get("/api/docs/durable")).json()["content"] == (
                "kept across restarts"
            )


def _append(char: str, text: Text) -> None:
    text.insert(len(text), char)


async def _send_huge_frame(node: LiveServer) -> int | None:
    url = node.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()  # Engine.IO OPEN
        token = node.token("alice", docs={"big": "editor"})
        await ws.send("40" + json.dumps({"token": token}))
        await ws.recv()  # Socket.IO CONNECT
        await ws.send('451-0["doc.update",{"doc":"big","update":{"_placeholder":true,"num":0}}]')
        await ws.send(b"\x00" * (DOC_MAX + 200 * 1024))
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        return ws.close_code


def _update_inserting(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()
