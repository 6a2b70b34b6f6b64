"""The Python side of the Node load generator (bench/node/loadgen.js): one Worker per process.

A worker takes one JSON command at a time on stdin and answers with one JSON line; it exits by
itself when its stdin closes or its hard timeout passes, and is killed by PID if it lingers.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from bench.processes import NODE_DIR, die_with_parent
from bench.procstat import cpu_seconds

LOADGEN = NODE_DIR / "loadgen.js"


def node_flags() -> list[str]:
    """Extra flags for every Node process of the benchmark, from TANDEM_BENCH_NODE_FLAGS
    (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", which NODE_OPTIONS does not allow)."""
    return os.environ.get("TANDEM_BENCH_NODE_FLAGS", "").split()


class WorkerError(RuntimeError):
    pass


class Worker:
    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self._process = process
        self._log_path = log_path

    @classmethod
    async def start(cls, log_path: Path, hard_timeout_s: float, script: Path = LOADGEN) -> Worker:
        """``script``: bench/node/loadgen.js, or another worker speaking the same line protocol
        (bench/node/docs_loadgen.js)."""
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                "node",
                *node_flags(),
                str(script),
                str(int(hard_timeout_s)),
                cwd=NODE_DIR,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=die_with_parent,
                limit=1 << 24,
            )
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        return self._process.pid

    def cpu_seconds(self) -> float:
        try:
            return cpu_seconds(self.pid)
        except OSError:
            return 0.0

    async def call(self, command: dict[str, Any], wait_s: float = 60.0) -> dict[str, Any]:
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(command).encode() + b"\n")
        await process.stdin.drain()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), wait_s)
        except TimeoutError:
            raise WorkerError(f"worker {self.pid}: no answer to {command['cmd']!r}") from None
        if not line:
            raise WorkerError(f"worker {self.pid} exited:\n{self._log_tail()}")
        reply: dict[str, Any] = json.loads(line)
        if reply.get("ev") == "error":
            raise WorkerError(f"worker {self.pid}: {reply.get('message')}")
        return reply

    async def close(self) -> None:
        process = self._process
        if process.returncode is None and process.stdin is not None:
            process.stdin.close()  # the worker closes its sockets and exits
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """(start, count) slices of ``total`` over ``parts``, as even as possible."""
    base, extra = divmod(total, parts)
    slices, start = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        slices.append((start, count))
        start += count
    return slices
