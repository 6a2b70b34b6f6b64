"""The admin console: one static page (server/static/admin.*) that signs in with an admin API
key and drives the admin API (server/api/admin.py) and the live ``admin:stats`` channel."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from server.api.callers import RuntimeDep
from server.demo.checkout import STATIC_DIR

router = APIRouter(include_in_schema=False)


@router.get("/admin")
async def console(runtime: RuntimeDep) -> HTMLResponse:
    # The page holds no secret: it asks for the key, so it is served to anyone.
    return HTMLResponse(_page(runtime.settings.serializer), headers=_HEADERS)


# The key is typed into this page: only its own scripts run, no other site frames it, no
# referrer leaks.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@cache
def _page(serializer: str) -> str:
    html = (STATIC_DIR / "admin.html").read_text(encoding="utf-8")
    if serializer == "msgpack":
        html = html.replace("/vendor/socket.io.min.js", "/vendor/socket.io.msgpack.min.js")
    return html
