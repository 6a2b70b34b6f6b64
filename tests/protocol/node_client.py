"""The Python side of ``node/client.js``: a socket.io-client in a Node subprocess, driven over
stdin/stdout with JSON lines, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT_JS = NODE_DIR / "client.js"

Record = dict[str, Any]


def require_node() -> str:
    """The ``node`` binary, failing (not skipping) when the toolchain or deps are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: tests/protocol needs Node 18+")
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        pytest.fail(f"run `make node-deps` (npm ci in {NODE_DIR}) before these tests")
    return node


class NodeClient:
    """One socket.io-client. ``records`` is everything it printed, in order."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.records: list[Record] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Condition()
        self._refs = itertools.count(1)
        self._stderr = b""
        self._reader = asyncio.ensure_future(self._read_stdout())
        self._err_reader = asyncio.ensure_future(self._read_stderr())

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls, url: str, parser: str, transport: str, *, lifetime_s: float = 30.0
    ) -> AsyncIterator[NodeClient]:
        node = require_node()
        process = await asyncio.create_subprocess_exec(
            node,
            str(CLIENT_JS),
            url,
            parser,
            transport,
            str(int(lifetime_s * 1000)),
            cwd=NODE_DIR,
            limit=1 << 22,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = cls(process)
        try:
            await client.expect("hello", within=10)
            yield client
        finally:
            await client.close()

    # -- plumbing ---------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        async for raw in self._process.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"type": "garbage", "line": line}
            async with self._changed:
                self.records.append(record)
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        self._stderr = await self._process.stderr.read()

    def send(self, **command: Any) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps(command) + "\n").encode())

    async def close(self) -> None:
        process = self._process
        if process.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.send(op="exit")
                assert process.stdin is not None
                await process.stdin.drain()
                process.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        async with asyncio.timeout(5):
            await asyncio.gather(self._reader, self._err_reader, return_exceptions=True)
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()

    def describe(self) -> str:
        lines = "\n".join(json.dumps(r) for r in self.records)
        return f"node client printed:\n{lines}\nstderr:\n{self._stderr.decode(errors='replace')}"

    # -- waiting ----------------------------------------------------------------------------

    async def expect(
        self,
        kind: str | None = None,
        *,
        where: Callable[[Record], bool] | None = None,
        within: float = 5.0,
    ) -> Record:
        """The next not-yet-consumed record of this type (records before it stay consumable)."""

        def match(record: Record) -> bool:
            return (kind is None or record.get("type") == kind) and (where is None or where(record))

        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    while True:
                        for index, record in enumerate(self.records):
                            if index not in self._taken and match(record):
                                self._taken.add(index)
                                return record
                        if self._reader.done():
                            raise AssertionError(f"node client exited early\n{self.describe()}")
                        await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no {kind or 'record'} within {within}s\n{self.describe()}"
            ) from None

    async def tick(self, ms: int) -> Record:
        """A record the client prints ``ms`` after now, by its own timer: every timer of the
        client due earlier (e.g. a reconnect attempt) has run before it. Use it as a barrier
        for something that must not happen, then check ``seen`` / ``position``."""
        ref = next(self._refs)
        self.send(op="tick", ref=ref, ms=ms)
        return await self.expect("tick", where=lambda r: r.get("ref") == ref, within=ms / 1000 + 5)

    def position(self, record: Record) -> int:
        """Where ``record`` (as returned by ``expect``) is in the order the client printed."""
        return next(i for i, r in enumerate(self.records) if r is record)

    def seen(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.get("type") == kind]

    # -- commands ---------------------------------------------------------------------------

    async def connect(self, auth: Any, *, within: float = 5.0) -> Record:
        """Connect; returns the ``connect`` or ``connect_error`` record."""
        self.send(op="connect", auth=auth)
        return await self.expect(
            where=lambda r: r.get("type") in ("connect", "connect_error"), within=within
        )

    async def emit(self, event: str, *args: Any, within: float = 5.0) -> Any:
        """``emitWithAck``; returns the ack's single argument."""
        ref = next(self._refs)
        self.send(op="emit", ref=ref, event=event, args=list(args), timeout=int(within * 1000))
        record = await self.expect(
            where=lambda r: r.get("ref") == ref and r.get("type") in ("ack", "ack_timeout"),
            within=within + 2,
        )
        assert record["type"] == "ack", f"{event} was not acknowledged\n{self.describe()}"
        return record["args"][0]

    async def disconnect(self) -> Record:
        self.send(op="disconnect")
        return await self.expect("disconnect")

    async def state(self) -> Record:
        self.send(op="state")
        return await self.expect("state")
