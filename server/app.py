"""The ASGI application: FastAPI for HTTP, Tandem's transport for /socket.io, one lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.errors import DomainError, ErrorCode
from server.api import (
    admin as admin_api,
    admin_console,
    channels as http_api,
    documents as docs_api,
    flights as flights_api,
    health,
    jobs as jobs_api,
    keys as keys_api,
    notifications as notifications_api,
    webhooks as webhooks_api,
)
from server.api.body_limit import BodySizeLimit
from server.api.fast_lane import Express
from server.assembly import build_runtime
from server.config import Settings
from server.correlation import RequestId
from server.demo import checkout as demo, editor as demo_editor
from server.errors import describe_errors, http_domain_error, http_error
from server.runtime import Runtime

log = logging.getLogger(__name__)
ENGINE_PATH = "/socket.io"


class TandemApp:
    """The node's ASGI callable; ``runtime`` is exposed for the CLI's graceful drain."""

    def __init__(self, settings: Settings) -> None:
        self.runtime = build_runtime(settings)
        self.api = _build_api(self.runtime)
        app: ASGIApp = BodySizeLimit(
            Express(EnginePath(self.runtime.sio.engine, self.api), self.runtime),
            default_limit=settings.max_body_bytes,
            engine_limit=settings.engine_max_bytes,
        )
        if settings.cors_origins:
            app = HttpCors(app, settings.cors_origins)
        self._app = RequestId(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class EnginePath:
    """``/socket.io/`` to the Engine.IO server, the rest (and the lifespan) to FastAPI."""

    def __init__(self, engine: ASGIApp, api: ASGIApp) -> None:
        self._engine = engine
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and scope["path"].rstrip("/") == ENGINE_PATH:
            await self._engine(scope, receive, send)
        else:
            await self._api(scope, receive, send)


class HttpCors:
    """``TANDEM_CORS_ORIGINS`` for the HTTP API as for Socket.IO (whose Engine.IO answers its
    own preflights and headers: /socket.io is left to it, or the headers would double)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self._app = app
        self._cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/socket.io"):
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def create_app(settings: Settings) -> TandemApp:
    return TandemApp(settings)


def app_from_env() -> TandemApp:
    """For ``uvicorn --factory server.app:app_from_env``."""
    return create_app(Settings())


def _build_api(runtime: Runtime) -> FastAPI:
    checkout = demo.CheckoutSimulator.from_settings(runtime.jobs, runtime.settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The demo's workers stop first, while the database and the relay still run.
        async with runtime.running(), checkout:
            log.info("tandem node %s started", runtime.node_id)
            yield

    api = FastAPI(
        title="Tandem",
        version="0.1.0",
        summary="Real-time channels with ordered, recoverable delivery.",
        lifespan=lifespan,
        # FastAPI's pages load Swagger UI from a CDN; /docs serves it from /static instead.
        docs_url=None,
        redoc_url=None,
    )

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Tandem API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="data:,",
        )

    api.state.runtime = runtime
    api.include_router(http_api.router)
    api.include_router(jobs_api.router)
    api.include_router(notifications_api.router)
    api.include_router(flights_api.router)
    api.include_router(flights_api.webhooks)
    api.include_router(webhooks_api.router)
    api.include_router(docs_api.router)
    api.include_router(keys_api.router)
    api.include_router(health.router)
    api.include_router(admin_api.router)
    api.include_router(admin_console.router)
    # tandem.js and the vendored socket.io-client, for any page; the demo only when enabled.
    api.mount("/static", StaticFiles(directory=demo.STATIC_DIR), name="static")
    if runtime.settings.demo_enabled:
        api.state.checkout = checkout
        api.include_router(demo.router)
        api.include_router(demo_editor.router)
    _install_error_handlers(api)
    return api


def _json_error(code: ErrorCode, message: str, *, retryable: bool = False) -> JSONResponse:
    status, body, headers = http_error(code, message, retryable=retryable)
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        status, body, headers = http_domain_error(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = describe_errors(exc.errors(), "body") or "invalid request"
        return _json_error(ErrorCode.INVALID_PAYLOAD, message)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: ErrorCode.NOT_FOUND,
            401: ErrorCode.UNAUTHORIZED,
            403: ErrorCode.PERMISSION_DENIED,
            413: ErrorCode.PAYLOAD_TOO_LARGE,
        }.get(exc.status_code, ErrorCode.BAD_REQUEST)
        response = _json_error(code, str(exc.detail))
        response.status_code = exc.status_code
        return response

    @api.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _json_error(ErrorCode.INTERNAL, "internal error", retryable=True)
