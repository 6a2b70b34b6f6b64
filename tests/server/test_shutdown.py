from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.live import live_server
from tests.support.sio import connected


async def test_sigterm_drains_clients_with_a_reconnect_notice(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        async with connected(server.url, server.token("alice")) as client:
            server.process.send_signal(signal.SIGTERM)
            event, notice = await client.next(timeout=5)
            assert event == "server.notice"
            assert notice["code"] == "shutdown" and notice["reconnect"] is True
            assert notice["retry_after_ms"] > 0
            async with asyncio.timeout(5):
                await client.disconnected.wait()
        exit_code = await asyncio.to_thread(server.process.wait, 15)
    # uvicorn re-raises the captured SIGTERM once shut down, so the status names the signal.
    assert exit_code in (0, -signal.SIGTERM)
