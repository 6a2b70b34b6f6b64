"""The collaborative editor demo: ``/demo/editor/<doc>`` (CodeMirror 6 bound to the document's
text through ``static/tandem-yjs.js``), with a token from ``POST /demo/editor/session``.

Anyone who can reach a development node may edit any demo document: the session endpoint
hands out editor (or, with ``viewer``, read-only) tokens for the document named. Mounted only
with the other demos (``TANDEM_DEMO``).
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from domain.documents import doc_id_of
from server.api.callers import RuntimeDep
from server.auth.tokens import mint_token
from server.demo.checkout import STATIC_DIR, WATCH_TTL_S

router = APIRouter(prefix="/demo/editor", tags=["demo"])

# Cursor colours (and their light variants, for selections) that read on white.
_COLOURS = (
    ("#d1495b", "#d1495b33"),
    ("#00798c", "#00798c33"),
    ("#edae49", "#edae4933"),
    ("#6a4c93", "#6a4c9333"),
    ("#2a9d8f", "#2a9d8f33"),
    ("#e76f51", "#e76f5133"),
    ("#3d5a80", "#3d5a8033"),
    ("#8ab17d", "#8ab17d33"),
)


class EditorLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    doc: Annotated[str, StringConstraints(min_length=1, max_length=132)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
    viewer: bool = False


class EditorUser(BaseModel):
    id: str
    name: str
    color: str
    colorLight: str  # y-codemirror.next's awareness field name


class EditorSession(BaseModel):
    doc: str
    token: str
    expires_at: int
    user: EditorUser


@router.get("/{doc}", include_in_schema=False)
async def editor_page(doc: str, runtime: RuntimeDep) -> HTMLResponse:
    doc_id_of(doc)
    return HTMLResponse(_editor_html(runtime.settings.serializer))


@router.post("/session", response_model=EditorSession)
async def editor_session(body: EditorLogin, runtime: RuntimeDep) -> EditorSession:
    """A short-lived token for one document, as an editor (or a viewer)."""
    doc_id = doc_id_of(body.doc)
    digest = hashlib.sha256(body.name.encode()).hexdigest()
    user_id = f"{body.name.lower().replace(' ', '-')[:40]}-{digest[:6]}"
    color, light = _COLOURS[int(digest[:8], 16) % len(_COLOURS)]
    token, expires_at = mint_token(
        runtime.settings,
        sub=user_id,
        ttl_s=WATCH_TTL_S,
        name=body.name,
        docs={doc_id: "viewer" if body.viewer else "editor"},
    )
    return EditorSession(
        doc=doc_id,
        token=token,
        expires_at=expires_at,
        user=EditorUser(id=user_id, name=body.name, color=color, colorLight=light),
    )


@cache
def _editor_html(serializer: str) -> str:
    html = (STATIC_DIR / "editor.html").read_text(encoding="utf-8")
    if serializer == "msgpack":
        html = html.replace("/vendor/socket.io.min.js", "/vendor/socket.io.msgpack.min.js")
    return html
