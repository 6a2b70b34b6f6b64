"""Who calls the HTTP API: the dependencies that authenticate a caller (API key or user token)
and check its scopes, the error responses every router documents, and ``Reply``, what an
endpoint answers for its FastAPI route and for the fast lane alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from domain.api_keys import ADMIN, require
from domain.errors import (
    PermissionDenied,
    Unauthorized,
)
from server.auth.api_keys import INVALID as INVALID_KEY
from server.auth.tokens import Principal
from server.payloads import (
    ErrorResponse,
)
from server.runtime import Runtime

ERRORS = {
    status: {"model": ErrorResponse}
    for status in (400, 401, 403, 404, 409, 410, 413, 422, 429, 503)
}


# Dependencies are `async def`: FastAPI runs plain `def` ones in a thread pool, three thread
# hops per request for work that never blocks.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def authenticate(runtime: Runtime, authorization: str | None) -> Principal:
    """``Authorization: Bearer <API key or user JWT>``."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized("send 'Authorization: Bearer <API key or token>'")
    key = await runtime.keys.authenticate(credential)
    if key is not None:
        return key
    if credential.count(".") != 2:  # not a JWT either: say what was most likely meant
        raise Unauthorized(INVALID_KEY)
    return runtime.verifier.verify(credential)


def service_only(caller: Principal) -> Principal:
    if not caller.is_service:
        raise PermissionDenied("this endpoint needs an API key")
    return caller


def allowed(caller: Principal, scope: str) -> Principal:
    """``caller``, if it is not an API key short of ``scope`` (users are checked elsewhere)."""
    if caller.scopes is not None:
        require(caller.scopes, scope)
    return caller


async def get_caller(request: Request, runtime: RuntimeDep) -> Principal:
    return await authenticate(runtime, request.headers.get("authorization"))


Caller = Annotated[Principal, Depends(get_caller)]


async def require_service(caller: Caller) -> Principal:
    return service_only(caller)


ServiceCaller = Annotated[Principal, Depends(require_service)]


def needs(scope: str, *, service: bool = False) -> Any:
    """A dependency: an API key needs ``scope``; a user passes unless ``service`` is set."""

    async def dependency(caller: Caller) -> Principal:
        return allowed(service_only(caller) if service else caller, scope)

    return Depends(dependency)


AdminCaller = Annotated[Principal, needs(ADMIN, service=True)]
IDEMPOTENCY_KEY_MAX = 128
IdempotencyKey = Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX)]


@dataclass(frozen=True, slots=True)
class Reply:
    """What an endpoint answers, for FastAPI's route and for ``server.api.fast_lane`` alike."""

    status: int
    content: BaseModel
    headers: dict[str, str] | None = None

    def respond(self, response: Response) -> BaseModel | JSONResponse:
        """As a FastAPI endpoint's return value (``response`` is the injected one)."""
        if self.headers:
            return JSONResponse(
                self.content.model_dump(mode="json"), status_code=self.status, headers=self.headers
            )
        response.status_code = self.status
        return self.content
