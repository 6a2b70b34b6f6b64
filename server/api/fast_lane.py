"""The workers' endpoints on a short path, without FastAPI's per-request machinery.

``POST /api/publish``, ``POST /api/publish/batch`` and a job's ``progress``, ``complete`` and
``fail`` are what backends and workers call many times a second. Under FastAPI about 80 % of
such a request's server time went to the framework (py-spy during ``python -m bench
--scenarios o2o``): a dozen middleware layers, dependency resolution, the response model.
Here a request is matched on its path, authenticated, validated by the same pydantic models
and handled by the same functions as the routes FastAPI documents (``server.api.channels``,
``server.api.jobs``); errors get the same bodies. ``tests/server/test_express.py`` holds both
paths to the same answers.

One deliberate difference: the caller is authenticated before the body is parsed, so an
unauthenticated request is a 401 whatever its body (FastAPI reports a malformed body first).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from email.message import Message as MimeHeader
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.errors import DomainError, ErrorCode, InvalidPayload
from server.api import jobs as jobs_api
from server.api.callers import IDEMPOTENCY_KEY_MAX, Reply, allowed, authenticate, service_only
from server.api.channels import publish_many, publish_one
from server.auth.tokens import Principal
from server.errors import describe_errors, http_domain_error, http_error
from server.payloads import HttpPublishBatchRequest, HttpPublishRequest
from server.runtime import Runtime

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
# status, JSON body, extra headers
Answer = tuple[int, bytes, dict[str, str]]
_JOBS = "/api/jobs/"


class _Invalid(Exception):
    """Header and body errors, reported together as FastAPI does (``loc`` and ``msg``)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


class _Call:
    __slots__ = ("runtime", "scope", "body", "job_id")

    def __init__(self, runtime: Runtime, scope: Scope, body: bytes, job_id: str) -> None:
        self.runtime = runtime
        self.scope = scope
        self.body = body
        self.job_id = job_id

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                text: str = value.decode("latin-1")
                return text
        return None

    async def caller(self, *, service: bool = False, scope: str | None = None) -> Principal:
        principal = await authenticate(self.runtime, self.header(b"authorization"))
        if service:
            service_only(principal)
        return principal if scope is None else allowed(principal, scope)

    def parse(self, model: type[M], *, idempotency_key: bool = False) -> tuple[M, str | None]:
        """The body as ``model`` (and the ``Idempotency-Key`` header, checked alike)."""
        errors: list[dict[str, Any]] = []
        key = self.header(b"idempotency-key") if idempotency_key else None
        if key is not None and len(key) > IDEMPOTENCY_KEY_MAX:
            errors.append(
                {
                    "loc": ("header", "idempotency-key"),
                    "msg": f"String should have at most {IDEMPOTENCY_KEY_MAX} characters",
                }
            )
        parsed = None
        if not _is_json(self.header(b"content-type")):
            errors.append(
                {"loc": ("body",), "msg": "send JSON with Content-Type: application/json"}
            )
        else:
            try:
                parsed = model.model_validate_json(self.body)
            except ValidationError as exc:
                errors.extend(
                    {"loc": ("body", *error["loc"]), "msg": error["msg"]} for error in exc.errors()
                )
        if errors or parsed is None:
            raise _Invalid(errors)
        return parsed, key


Handler = Callable[[_Call], Awaitable[Answer]]


async def _publish(call: _Call) -> Answer:
    caller = await call.caller()
    body, key = call.parse(HttpPublishRequest, idempotency_key=True)
    return _reply(await publish_one(call.runtime, caller, body, key))


async def _publish_batch(call: _Call) -> Answer:
    caller = await call.caller(service=True)
    body, key = call.parse(HttpPublishBatchRequest, idempotency_key=True)
    return _reply(await publish_many(call.runtime, caller, body, key))


def _job_action(
    model: type[M], action: Callable[[Runtime, str, M], Awaitable[dict[str, Any]]]
) -> Handler:
    async def handle(call: _Call) -> Answer:
        await call.caller(service=True, scope="jobs")
        body, _ = call.parse(model)
        return 200, _json(await action(call.runtime, call.job_id, body)), {}

    return handle


_ROUTES: dict[str, Handler] = {"/api/publish": _publish, "/api/publish/batch": _publish_batch}
_JOB_ROUTES: dict[str, Handler] = {
    "progress": _job_action(jobs_api.Progress, jobs_api.progress),
    "complete": _job_action(jobs_api.Complete, jobs_api.complete),
    "fail": _job_action(jobs_api.Fail, jobs_api.fail),
}


def _route(path: str) -> tuple[Handler, str] | None:
    handler = _ROUTES.get(path)
    if handler is not None:
        return handler, ""
    if path.startswith(_JOBS):
        job_id, _, action = path[len(_JOBS) :].partition("/")
        handler = _JOB_ROUTES.get(action)
        if handler is not None and job_id:
            return handler, job_id
    return None


class Express:
    """ASGI middleware: the routes above here, everything else to ``app``."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self._app = app
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST":
            route = _route(scope["path"])
        if route is None:
            await self._app(scope, receive, send)
            return
        handler, job_id = route
        body = b""
        while True:  # BodySizeLimit, in front, hands the whole body in one message
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        status, content, headers = await self._answer(
            handler, _Call(self._runtime, scope, body, job_id)
        )
        raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})

    async def _answer(self, handler: Handler, call: _Call) -> Answer:
        try:
            return await handler(call)
        except _Invalid as exc:
            message = describe_errors(exc.errors, "body") or "invalid request"
            return _error(InvalidPayload(message))
        except DomainError as exc:
            return _error(exc)
        except Exception:
            log.exception("unhandled error in %s", call.scope["path"])
            status, body, headers = http_error(ErrorCode.INTERNAL, "internal error", retryable=True)
            return status, _json(body), headers


def _reply(reply: Reply) -> Answer:
    return reply.status, reply.content.model_dump_json().encode(), reply.headers or {}


def _error(exc: DomainError) -> Answer:
    status, body, headers = http_domain_error(exc)
    return status, _json(body), headers


def _json(content: Any) -> bytes:
    # What Starlette's JSONResponse renders.
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    if content_type == "application/json":
        return True
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
