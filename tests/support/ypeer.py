"""A raw-protocol Yjs peer for server tests: a pycrdt Doc synced over plain doc.* events.

It speaks the contract directly (no SDK), so the tests pin the wire: join handshake, local
edits sent as doc.update, remote doc.update/doc.awareness applied as they arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Awareness, Doc, Text

from tests.support.sio import Recorder


class YPeer:
    def __init__(self, client: Recorder, doc_id: str) -> None:
        self.client = client
        self.doc_id = doc_id
        self.doc: Doc[Any] = Doc()
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(None)
        self.epoch: str | None = None
        self.role: str | None = None
        self.other_events: list[tuple[str, Any]] = []
        self.updates_received = 0  # doc.update events applied (the pump consumes the events)
        self.closed: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @property
    def text(self) -> Text:
        text: Text = self.doc.get("content", type=Text)
        return text

    async def join(self, *, awareness: dict[str, Any] | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"doc": self.doc_id, "sv": self.doc.get_state()}
        if self.epoch is not None:
            payload["epoch"] = self.epoch
        if awareness is not None:
            self.awareness.set_local_state(awareness)
            payload["awareness"] = self.awareness.encode_awareness_update([self.doc.client_id])
        ack: dict[str, Any] = await self.client.call("doc.join", payload)
        if not ack["ok"]:
            return ack
        if ack["reset"]:
            self.doc = Doc()
            self.awareness = Awareness(self.doc)
            self.awareness.set_local_state(None)
        self.doc.apply_update(ack["update"])
        self.awareness.apply_awareness_update(ack["awareness"], "server")
        self.epoch, self.role = ack["epoch"], ack["role"]
        missing = self.doc.get_update(ack["sv"])
        if len(missing) > 2:
            answer = await self.client.call("doc.update", {"doc": self.doc_id, "update": missing})
            assert answer["ok"], answer
        if self._pump is None:
            self._pump = asyncio.create_task(self._receive())
        return ack

    async def rejoin(self, client: Recorder) -> dict[str, Any]:
        """Join again on a new connection (after a reconnect): what this copy gained offline
        goes to the server in the handshake."""
        await self.stop()
        self.client = client
        return await self.join()

    async def edit(self, change: Callable[[Text], None]) -> dict[str, Any]:
        """Change the text locally and send the update; returns the ack."""
        before = self.doc.get_state()
        with self.doc.transaction():
            change(self.text)
        update = self.doc.get_update(before)
        ack: dict[str, Any] = await self.client.call(
            "doc.update", {"doc": self.doc_id, "update": update}
        )
        return ack

    async def set_awareness(self, state: dict[str, Any] | None) -> dict[str, Any]:
        self.awareness.set_local_state(state)
        update = self.awareness.encode_awareness_update([self.doc.client_id])
        ack: dict[str, Any] = await self.client.call(
            "doc.awareness", {"doc": self.doc_id, "update": update}
        )
        return ack

    def others(self) -> dict[int, dict[str, Any]]:
        return {k: v for k, v in self.awareness.states.items() if k != self.doc.client_id}

    async def wait_for(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not reached within {timeout}s: {str(self.text)!r}")
            self._changed.clear()
            try:
                async with asyncio.timeout(min(remaining, 0.2)):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def wait_text(self, expected: str, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: str(self.text) == expected, timeout)

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                pass
            self._pump = None

    async def _receive(self) -> None:
        while True:
            event, payload = await self.client.events.get()
            if isinstance(payload, dict) and payload.get("doc") == self.doc_id:
                if event == "doc.update":
                    self.doc.apply_update(payload["update"])
                    self.updates_received += 1
                elif event == "doc.awareness":
                    self.awareness.apply_awareness_update(payload["update"], "server")
                elif event == "doc.closed":
                    self.closed = payload
                else:
                    self.other_events.append((event, payload))
            else:
                self.other_events.append((event, payload))
            self._changed.set()
