"""Collaborative documents through the SDK: live pycrdt documents synced both ways, awareness,
offline edits, roles, deletion and resets, and the documents HTTP API, against a real node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest
from pycrdt import Awareness, Doc

from client_sdk import (
    Conflict,
    DocMember,
    DocumentReset,
    InvalidPayload,
    LiveDoc,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerAPI,
    TandemError,
    _doc_awareness as doc_awareness,
)
from client_sdk._connection import Connection
from client_sdk._doc_session import DocSession
from tests.client_sdk.helpers import fast_client, wait_disconnected
from tests.support.live import API_KEY, LiveServer
from tests.support.proxy import TcpProxy

ALICE = {"user": {"id": "alice", "name": "Alice", "color": "#f00"}, "cursor": None}
BOB = {"user": {"id": "bob", "name": "Bob", "color": "#00f"}, "cursor": None}


def editor(server: LiveServer, user: str, doc: str) -> str:
    return server.token(user, name=user, docs={doc: "editor"})


def others(doc: LiveDoc) -> dict[int, Any]:
    return {c: s for c, s in doc.awareness.states.items() if c != doc.client_id}


def shows(user: str) -> Callable[[LiveDoc], bool]:
    def check(doc: LiveDoc) -> bool:
        return any((s or {}).get("user", {}).get("id") == user for s in others(doc).values())

    return check


async def stored(api: ServerAPI, doc_id: str, check: Callable[[str], bool]) -> str:
    """The server's content once ``check`` holds for it (bounded)."""
    deadline = time.monotonic() + 5
    while True:
        content = (await api.docs.get(doc_id)).content
        if check(content) or time.monotonic() > deadline:
            assert check(content), content
            return content
        await asyncio.sleep(0.05)


async def test_two_clients_edit_concurrently_and_converge(server: LiveServer) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        fast_client(server.url, editor(server, "alice", "conv")) as alice_client,
        fast_client(server.url, editor(server, "bob", "conv")) as bob_client,
        alice_client.docs.open("doc:conv") as alice,
        bob_client.docs.open("conv") as bob,
    ):
        assert (alice.doc_id, alice.role, alice.format, alice.joined) == (
            "conv",
            "editor",
            "text",
            True,
        )
        assert alice.epoch is not None and alice.epoch == bob.epoch
        assert alice_client.docs.open_documents == ["conv"]

        async def type_into(doc: LiveDoc, who: str) -> None:
            for i in range(25):
                doc.text.insert(0 if i % 2 else len(doc.text), f"{who}{i} ")
                await asyncio.sleep(0.002)

        await asyncio.gather(type_into(alice, "a"), type_into(bob, "b"))
        words = sorted(f"{who}{i}" for who in "ab" for i in range(25))

        def complete(doc: LiveDoc) -> bool:
            return sorted(str(doc.text).split()) == words

        await alice.wait_for(complete)
        await bob.wait_for(complete)
        assert str(alice.text) == str(bob.text)
        final = str(alice.text)
        assert await stored(api, "conv", lambda content: content == final) == final


async def test_awareness_is_shared_and_removed_on_leave_and_disconnect(
    server: LiveServer,
) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, editor(server, "alice", "aware")) as alice_client,
        fast_client(server.url, editor(server, "bob", "aware")) as bob_client,
        bob_client.docs.open("aware", awareness=BOB) as bob,
    ):
        async with alice_client.docs.open("aware", awareness=ALICE) as alice:
            await bob.wait_for(shows("alice"))
            await alice.wait_for(shows("bob"))  # from the join's answer
            alice.awareness.set_local_state({**ALICE, "cursor": {"anchor": 1, "head": 1}})
            await bob.wait_for(
                lambda d: any(
                    s.get("cursor") == {"anchor": 1, "head": 1} for s in others(d).values()
                )
            )
        await bob.wait_for(lambda d: not others(d))  # alice left

        async with alice_client.docs.open("aware", awareness=ALICE) as alice:
            await bob.wait_for(shows("alice"))
            proxy.pause()
            await proxy.cut()
            await wait_disconnected(alice_client)
            assert not others(alice) and not alice.joined  # dropped locally at once
            await bob.wait_for(lambda d: not others(d))  # and by the server
            proxy.resume()
            await alice.synced(timeout=10)
            await bob.wait_for(shows("alice"))  # re-announced with a newer clock
            await alice.wait_for(shows("bob"))


async def test_offline_edits_merge_after_a_reconnect(server: LiveServer) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, editor(server, "alice", "offline")) as alice_client,
        fast_client(server.url, editor(server, "bob", "offline")) as bob_client,
        alice_client.docs.open("offline") as alice,
        bob_client.docs.open("offline") as bob,
    ):
        alice.text.insert(0, "shared. ")
        await bob.wait_for(lambda d: str(d.text) == "shared. ")

        proxy.pause()
        await proxy.cut()
        await wait_disconnected(alice_client)
        alice.text.insert(len(alice.text), "alice offline.")
        del alice.text[0:1]
        alice.text.insert(0, "S")
        bob.text.insert(0, "bob online. ")
        await stored(api, "offline", lambda content: content.startswith("bob online."))
        assert "alice" not in str(bob.text)
        proxy.resume()

        await alice.synced(timeout=10)
        expected = "bob online. Shared. alice offline."
        await alice.wait_for(lambda d: str(d.text) == expected)
        await bob.wait_for(lambda d: str(d.text) == expected)
        assert await stored(api, "offline", lambda content: content == expected) == expected
        # Live editing goes on after the re-join.
        alice.text.insert(len(alice.text), " Back.")
        await bob.wait_for(lambda d: str(d.text).endswith("Back."))


async def test_viewer_edits_are_refused_and_reads_go_on(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        await api.docs.create("viewed", content="read me", members={"vera": "viewer"})
        async with (
            fast_client(server.url, server.token("vera")) as vera_client,
            fast_client(server.url, editor(server, "eddie", "viewed")) as eddie_client,
            vera_client.docs.open("viewed") as vera,
            eddie_client.docs.open("viewed") as eddie,
        ):
            assert vera.role == "viewer" and str(vera.text) == "read me"
            with pytest.raises(ExceptionGroup) as caught:
                vera.text.insert(0, "vandal ")
            assert caught.group_contains(PermissionDenied)
            assert isinstance(vera.error, PermissionDenied)

            eddie.text.insert(len(eddie.text), "!")
            await vera.wait_for(lambda d: str(d.text).endswith("!"))
            assert str(eddie.text) == "read me!"
            assert (await api.docs.get("viewed")).content == "read me!"
            assert vera.closed is None and vera.joined


async def test_opening_without_access_is_refused(server: LiveServer) -> None:
    async with fast_client(server.url, server.token("mallory")) as client:
        with pytest.raises(PermissionDenied):
            async with client.docs.open("secret"):
                pass
        assert client.docs.open_documents == []
    viewer = server.token("vic", docs={"nowhere": "viewer"})
    async with fast_client(server.url, viewer) as client:
        with pytest.raises(NotFound):  # a viewer grant does not create it
            async with client.docs.open("nowhere"):
                pass


async def test_server_api_documents_and_a_live_document_follows(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        created = await api.docs.create(
            "api-doc", content="Hello", members={"alice": "editor", "bob": "viewer"}
        )
        assert (created.id, created.format, created.owner) == ("api-doc", "text", None)
        assert {(m.user, m.role) for m in created.members} == {
            ("alice", "editor"),
            ("bob", "viewer"),
        }
        with pytest.raises(Conflict):
            await api.docs.create("api-doc")

        got = await api.docs.get("doc:api-doc")
        assert (got.content, got.epoch) == ("Hello", created.epoch) and got.size > 0
        await api.docs.append("api-doc", " world")
        await api.docs.insert("api-doc", ">> ", at=0)
        assert (await api.docs.get("api-doc")).content == ">> Hello world"
        size = await api.docs.delete_text("api-doc", 0, 3)
        assert size > 0 and (await api.docs.get("api-doc")).content == "Hello world"
        with pytest.raises(InvalidPayload):
            await api.docs.insert("api-doc", "x", at=99)

        first = await api.docs.save_version("api-doc", "first")
        await api.docs.replace("api-doc", "Goodbye world")
        assert [(v.id, v.name) for v in await api.docs.versions("api-doc")] == [(first.id, "first")]
        assert (await api.docs.version("api-doc", first.id)).content == "Hello world"

        async with (
            fast_client(server.url, server.token("alice")) as client,
            client.docs.open("api-doc") as live,
        ):
            assert str(live.text) == "Goodbye world"
            await api.docs.restore("api-doc", first.id)
            await live.wait_for(lambda d: str(d.text) == "Hello world")
            await api.docs.append("api-doc", "!")
            await live.wait_for(lambda d: str(d.text) == "Hello world!")
            live.text.insert(0, "<")
            await stored(api, "api-doc", lambda content: content == "<Hello world!")

        promoted = await api.docs.set_member("api-doc", "bob", "editor")
        assert roles(promoted.members) == {"alice": "editor", "bob": "editor"}
        removed = await api.docs.remove_member("api-doc", "bob")
        assert roles(removed.members) == {"alice": "editor"}

        anonymous = await api.docs.create(format="rich")
        assert anonymous.id and anonymous.format == "rich"
        await api.docs.delete(anonymous.id)
        with pytest.raises(NotFound):
            await api.docs.get(anonymous.id)


def roles(members: list[DocMember]) -> dict[str, str]:
    return {m.user: m.role for m in members}


async def test_token_document_grants_create_on_join(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        token = await api.create_token("tina", docs={"tok-*": "editor"})
        async with (
            fast_client(server.url, token.token) as client,
            client.docs.open("tok-1") as doc,
        ):
            assert doc.role == "editor" and str(doc.text) == ""
            doc.text.insert(0, "made through a grant")
            await stored(api, "tok-1", lambda content: content == "made through a grant")
        await api.docs.create("tok-rich", format="rich")
        async with (
            fast_client(server.url, token.token) as client,
            client.docs.open("tok-rich") as rich,
        ):
            assert rich.format == "rich"
            with pytest.raises(TypeError):
                rich.text  # noqa: B018 - the content is a Y.XmlFragment


async def test_revoking_access_closes_the_document(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        await api.docs.create("revoked", content="x", members={"rita": "editor"})
        async with (
            fast_client(server.url, server.token("rita")) as client,
            client.docs.open("revoked") as doc,
        ):
            await api.docs.remove_member("revoked", "rita")
            with pytest.raises(PermissionDenied):
                await doc.wait_for(lambda d: False, timeout=5)
            assert isinstance(doc.closed, PermissionDenied)
            with pytest.raises(PermissionDenied):
                async with client.docs.open("revoked"):
                    pass


async def test_deleting_an_open_document_closes_it(server: LiveServer) -> None:
    async with ServerAPI(server.url, API_KEY) as api:
        await api.docs.create("doomed", content="bye", members={"alice": "editor"})
        async with (
            fast_client(server.url, server.token("alice")) as client,
            client.docs.open("doomed") as doc,
        ):
            await api.docs.delete("doomed")
            with pytest.raises(NotFound):
                await doc.wait_for(lambda d: False, timeout=5)
            assert isinstance(doc.closed, NotFound) and not doc.joined
            with pytest.raises(NotFound):
                await doc.synced()
            with pytest.raises(ExceptionGroup) as caught:
                doc.text.insert(0, "too late")
            assert caught.group_contains(NotFound)
            assert client.docs.open_documents == []


async def test_a_document_recreated_while_offline_resets(server: LiveServer) -> None:
    async with (
        ServerAPI(server.url, API_KEY) as api,
        TcpProxy(server.port) as proxy,
        fast_client(proxy.url, server.token("alice")) as client,
    ):
        await api.docs.create("phoenix", content="old", members={"alice": "editor"})
        async with client.docs.open("phoenix") as doc:
            old_epoch = doc.epoch
            proxy.pause()
            await proxy.cut()
            await wait_disconnected(client)
            doc.text.insert(len(doc.text), " and offline")
            await api.docs.delete("phoenix")
            await api.docs.create("phoenix", content="new", members={"alice": "editor"})
            proxy.resume()
            with pytest.raises(DocumentReset):
                await doc.wait_for(lambda d: False, timeout=10)
            assert isinstance(doc.closed, DocumentReset)
            with pytest.raises(DocumentReset):
                await doc.synced()
            assert str(doc.text) == "old and offline"  # readable, never merged across epochs
        assert (await api.docs.get("phoenix")).content == "new"
        async with client.docs.open("phoenix") as fresh:
            assert fresh.epoch != old_epoch and str(fresh.text) == "new"


async def test_msgpack_clients_sync_documents(msgpack_server: LiveServer) -> None:
    server = msgpack_server
    async with (
        fast_client(server.url, editor(server, "alice", "packed"), serializer="msgpack") as a,
        fast_client(server.url, editor(server, "bob", "packed"), serializer="msgpack") as b,
        a.docs.open("packed", awareness=ALICE) as alice,
        b.docs.open("packed") as bob,
    ):
        alice.text.insert(0, "binary all the way")
        await bob.wait_for(lambda d: str(d.text) == "binary all the way")
        await bob.wait_for(shows("alice"))


# -- the session against a scripted server: repairs after a failed update ------------------


class ScriptedServer:
    """Answers doc.* requests from a pycrdt Doc; refuses the first updates it is told to."""

    def __init__(self, refuse_updates: int, refusal: type[TandemError] = RateLimited) -> None:
        self.doc: Doc[Any] = Doc()
        self.refuse_updates = refuse_updates
        self.refusal = refusal
        self.calls: list[str] = []
        self.payloads: list[tuple[str, Any]] = []
        self.conn = cast(Connection, _Up())
        self._request_timeout = 1.0

    async def _wait_connection(self) -> Connection:
        return self.conn

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(0)

    async def _request(self, conn: Connection, event: str, payload: Any) -> dict[str, Any]:
        self.calls.append(event)
        self.payloads.append((event, payload))
        if event == "doc.join":
            return {
                "ok": True,
                "epoch": "e1",
                "reset": False,
                "role": "editor",
                "format": "text",
                "update": self.doc.get_update(payload["sv"]),
                "sv": self.doc.get_state(),
                "awareness": b"",
            }
        if event == "doc.update":
            if self.refuse_updates:
                self.refuse_updates -= 1
                raise self.refusal("refused")
            self.doc.apply_update(payload["update"])
        if event == "doc.sync":
            return {
                "ok": True,
                "update": self.doc.get_update(payload["sv"]),
                "sv": self.doc.get_state(),
            }
        return {"ok": True}


class _Up:
    connected = True


async def test_a_refused_update_is_repaired_with_doc_sync() -> None:
    scripted = ScriptedServer(refuse_updates=1)
    session = DocSession(scripted, "unit", awareness=None, on_gone=lambda s: None)
    await asyncio.wait_for(session.start(), 5)
    doc = session.doc
    doc.text.insert(0, "kept")
    deadline = time.monotonic() + 5
    while str(scripted.doc.get("content", type=type(doc.text))) != "kept":
        assert time.monotonic() < deadline, scripted.calls
        await asyncio.sleep(0.01)
    assert scripted.calls[:4] == ["doc.join", "doc.update", "doc.sync", "doc.update"]
    await session.leave()
    assert scripted.calls[-1] == "doc.leave"


async def test_an_update_refused_for_good_is_reported_not_retried() -> None:
    scripted = ScriptedServer(refuse_updates=1, refusal=PermissionDenied)
    session = DocSession(scripted, "unit", awareness=None, on_gone=lambda s: None)
    await asyncio.wait_for(session.start(), 5)
    session.doc.text.insert(0, "refused")
    await session.doc.wait_for(lambda d: d.error is not None, timeout=5)
    assert isinstance(session.doc.error, PermissionDenied)
    session.doc.text.insert(0, "next ")  # the document goes on (the server says what it takes)
    deadline = time.monotonic() + 5
    while scripted.calls.count("doc.update") < 2:
        assert time.monotonic() < deadline, scripted.calls
        await asyncio.sleep(0.01)
    assert scripted.calls == ["doc.join", "doc.update", "doc.update"]
    await session.leave()


async def test_awareness_is_throttled_renewed_and_times_out_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doc_awareness, "AWARENESS_CHECK", 0.02)
    monkeypatch.setattr(doc_awareness, "AWARENESS_RENEW", 0.2)
    monkeypatch.setattr(doc_awareness, "AWARENESS_OUTDATED", 0.3)
    scripted = ScriptedServer(refuse_updates=0)
    session = DocSession(scripted, "unit", awareness=None, on_gone=lambda s: None)
    await asyncio.wait_for(session.start(), 5)
    awareness = session.doc.awareness

    def sent() -> list[Any]:
        return [p["update"] for event, p in scripted.payloads if event == "doc.awareness"]

    started = time.monotonic()
    for i in range(20):
        awareness.set_local_state({"n": i})
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started

    def last_sent_state() -> Any:
        copy = Awareness(Doc())
        copy.apply_awareness_update(sent()[-1], "test")
        return copy.states.get(awareness.client_id)

    deadline = time.monotonic() + 5
    while not sent() or last_sent_state() != {"n": 19}:
        assert time.monotonic() < deadline, sent()
        await asyncio.sleep(0.01)
    assert 1 <= len(sent()) <= elapsed / doc_awareness.AWARENESS_THROTTLE + 2

    # Unchanged, it is renewed anyway; a remote state nobody renews goes.
    other = Awareness(Doc())
    other.set_local_state({"user": {"id": "ghost"}})
    session.on_event(
        "doc.awareness",
        {"doc": "unit", "update": other.encode_awareness_update([other.client_id])},
    )
    assert other.client_id in awareness.states
    count = len(sent())
    await session.doc.wait_for(lambda d: other.client_id not in d.awareness.states, timeout=5)
    deadline = time.monotonic() + 5
    while len(sent()) == count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await session.leave()


def refusing(
    seen: list[tuple[str, str, Any]], answers: list[httpx.Response]
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        return answers.pop(0) if answers else httpx.Response(502)

    return httpx.MockTransport(handle)


async def test_edits_that_would_apply_twice_are_not_retried_blindly() -> None:
    seen: list[tuple[str, str, Any]] = []
    transport = refusing(seen, [])
    async with ServerAPI("http://tandem.test", "key", transport=transport, backoff=0) as api:
        with pytest.raises(TandemError):
            await api.docs.insert("doc:d", "x")
        assert [(m, p) for m, p, _ in seen] == [("POST", "/api/docs/d/edit")]
        seen.clear()
        with pytest.raises(TandemError):
            await api.docs.replace("d", "x")  # the same result however often it applies
        assert len(seen) == 4


async def test_create_without_an_id_finds_what_a_lost_attempt_created() -> None:
    document: dict[str, Any] = {
        "id": "x",
        "format": "text",
        "epoch": "e",
        "owner": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "members": [],
    }
    seen: list[tuple[str, str, Any]] = []
    answers = [
        httpx.Response(502),
        httpx.Response(409, json={"error": {"code": "conflict", "message": "exists"}}),
        httpx.Response(200, json={**document, "content": "", "size": 2}),
    ]
    transport = refusing(seen, answers)
    async with ServerAPI("http://tandem.test", "key", transport=transport, backoff=0) as api:
        created = await api.docs.create()
    (_, _, first), (_, _, second), (method, path, _) = seen
    assert first["id"] == second["id"] and path == f"/api/docs/{first['id']}"
    assert method == "GET" and created.epoch == "e"
