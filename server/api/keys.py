"""The API keys admin API: create, list, rotate and revoke named, scoped keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from domain.api_keys import MAX_SCOPES, ApiKey
from server.api.callers import ERRORS, AdminCaller, RuntimeDep

router = APIRouter(prefix="/api/admin/keys", tags=["admin"], responses=ERRORS)  # type: ignore[arg-type]

KeyName = Annotated[str, Path(min_length=1, max_length=64)]
DAY_S = 86_400


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64)]
    scopes: Annotated[list[Annotated[str, Field(max_length=170)]], Field(max_length=MAX_SCOPES)]
    rate_per_s: Annotated[float, Field(gt=0, le=1_000_000)] | None = None


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: Annotated[float, Field(ge=0, le=30 * DAY_S)] = 3600


class KeyOut(BaseModel):
    name: str
    id: str
    scopes: list[str]
    rate_per_s: float | None
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            name=key.name,
            id=key.id,
            scopes=list(key.scopes),
            rate_per_s=key.rate_per_s,
            created_at=key.created_at,
            rotated_at=key.rotated_at,
            revoked_at=key.revoked_at,
        )


class KeyWithSecret(KeyOut):
    key: str = Field(description="the key itself: shown once, never stored")


class KeyList(BaseModel):
    keys: list[KeyOut]


@router.post("", status_code=201, response_model=KeyWithSecret)
async def create_key(body: CreateKey, _: AdminCaller, runtime: RuntimeDep) -> KeyWithSecret:
    """A new named key with ``scopes`` (``admin``, ``publish:<channel pattern>``,
    ``history:read``, ``presence:read``, ``jobs``, ``notifications``, ``flights:write``,
    ``docs``, ``tokens``, ``webhooks``); ``rate_per_s`` overrides the node's default."""
    key, secret = await runtime.keys.create(body.name, body.scopes, body.rate_per_s)
    return KeyWithSecret(**KeyOut.of(key).model_dump(), key=secret)


@router.get("", response_model=KeyList)
async def list_keys(_: AdminCaller, runtime: RuntimeDep) -> KeyList:
    """Every named key, revoked ones included (secrets are never shown again)."""
    return KeyList(keys=[KeyOut.of(key) for key in await runtime.keys.list()])


@router.post("/{name}/rotate", response_model=KeyWithSecret)
async def rotate_key(
    name: KeyName, body: RotateKey, _: AdminCaller, runtime: RuntimeDep
) -> KeyWithSecret:
    """A new secret for the key; the old one keeps working for ``grace_s`` seconds."""
    key, secret = await runtime.keys.rotate(name, body.grace_s)
    return KeyWithSecret(**KeyOut.of(key).model_dump(), key=secret)


@router.delete("/{name}", response_model=KeyOut)
async def revoke_key(name: KeyName, _: AdminCaller, runtime: RuntimeDep) -> KeyOut:
    """Revoke the key: refused at once on this node, on the others within
    ``TANDEM_API_KEY_CACHE_S``."""
    return KeyOut.of(await runtime.keys.revoke(name))
