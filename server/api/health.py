"""Liveness, readiness (broker + database) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api.callers import RuntimeDep

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and serving (no dependency checks)."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the broker and the database answer, and the node is not draining. The body
    also shows the outbox: events waiting, how long the oldest has (`stuck` past 30 s), and
    dead letters."""
    checks = await runtime.readiness()
    ok = all(status == "ok" for status in checks.values())
    try:
        outbox: dict[str, Any] | str = await asyncio.wait_for(runtime.outbox(), 1.0)
    except Exception as exc:  # the database check says why
        outbox = f"unknown: {type(exc).__name__}"
    body = {
        "status": "ready" if ok else "not_ready",
        "node": runtime.node_id,
        "checks": checks,
        "outbox": outbox,
    }
    return JSONResponse(
        body,
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "1"},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    runtime.metrics.subscriptions_snapshot(runtime.hub.channel_count)
    with contextlib.suppress(Exception):  # the outbox gauges keep their last values
        await asyncio.wait_for(runtime.outbox(), 1.0)
    with contextlib.suppress(Exception):  # and so do the webhook ones
        await asyncio.wait_for(runtime.webhook_counts(), 1.0)
    runtime.metrics.documents_snapshot(
        runtime.collab.open_documents, dataclasses.asdict(runtime.collab.stats)
    )
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
