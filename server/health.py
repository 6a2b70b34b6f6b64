"""Liveness, readiness (broker + database) and Prometheus metrics."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.http_api import RuntimeDep

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and serving (no dependency checks)."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the broker and the database answer, and the node is not draining."""
    checks = await runtime.readiness()
    ok = all(status == "ok" for status in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "node": runtime.node_id, "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "1"},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    runtime.metrics.subscriptions_snapshot(runtime.hub.channel_count)
    runtime.metrics.documents_snapshot(
        runtime.collab.open_documents, dataclasses.asdict(runtime.collab.stats)
    )
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
