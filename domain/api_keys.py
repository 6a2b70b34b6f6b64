"""API keys: named credentials for backends, each limited to what its scopes allow.

A key reads ``tdm_<id>_<secret>``. Only a SHA-256 of the secret is stored: the secret is 256
random bits, so a fast hash cannot be brute-forced, and every request can afford to check it.
The id finds the row without scanning; the secret proves the caller holds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.errors import InvalidPayload, PermissionDenied

PREFIX = "tdm_"
_KEY = re.compile(r"tdm_([a-z0-9]{16})_([A-Za-z0-9_-]{43})")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

ADMIN = "admin"
# Scopes without an argument, and what each opens. ``publish:<channel pattern>`` is the one
# with an argument: an exact channel or a prefix ending in ``*`` (``job:*``, ``*`` for all).
SCOPES = {
    ADMIN: "everything, including keys, webhooks and the admin API",
    "history:read": "GET /api/history",
    "presence:read": "GET /api/presence",
    "jobs": "create jobs and report their progress, completion and failure",
    "notifications": "create notifications for users",
    "flights:write": "change flights (PATCH /api/flights/...)",
    "docs": "create, edit, version and delete documents",
    "tokens": "mint user tokens (POST /api/tokens)",
    "webhooks": "register and manage outgoing webhooks",
}
PUBLISH = "publish:"
MAX_SCOPES = 50


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate_per_s: float | None
    created_at: datetime
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeySecrets:
    """What the database holds to check a key: the current secret's hash and, for a while
    after a rotation, the previous one's."""

    key: ApiKey
    secret_hash: str
    previous_hash: str | None
    previous_expires_at: datetime | None

    def accepts(self, secret: str, now: datetime) -> bool:
        digest = hash_secret(secret)
        if hmac.compare_digest(digest, self.secret_hash):
            return True
        previous = self.previous_hash
        fresh = self.previous_expires_at is not None and now < self.previous_expires_at
        return previous is not None and fresh and hmac.compare_digest(digest, previous)


def new_key_id() -> str:
    return secrets.token_hex(8)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}_{secret}"


def split_key(credential: str) -> tuple[str, str] | None:
    """(id, secret) of a credential shaped like a key, else None."""
    found = _KEY.fullmatch(credential)
    return (found.group(1), found.group(2)) if found else None


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidPayload(
            f"invalid key name {name!r}: 1-64 letters, digits and _.- (starting with a letter "
            "or digit)"
        )
    return name


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in order; an unknown one is refused with the known list."""
    checked: dict[str, None] = {}
    for scope in scopes:
        if scope.startswith(PUBLISH):
            pattern = scope[len(PUBLISH) :]
            if not _valid_pattern(pattern):
                raise InvalidPayload(
                    f"invalid scope {scope!r}: publish:<channel> or publish:<prefix>* "
                    "(e.g. publish:job:*, publish:*)"
                )
        elif scope not in SCOPES:
            known = ", ".join([*SCOPES, "publish:<channel pattern>"])
            raise InvalidPayload(f"unknown scope {scope!r}; known scopes: {known}")
        checked[scope] = None
    if not checked:
        raise InvalidPayload("a key needs at least one scope")
    if len(checked) > MAX_SCOPES:
        raise InvalidPayload(f"a key may have at most {MAX_SCOPES} scopes")
    return tuple(checked)


def _valid_pattern(pattern: str) -> bool:
    return 0 < len(pattern) <= 161 and pattern.isprintable() and " " not in pattern


def require(scopes: Sequence[str], needed: str) -> None:
    """Raise PermissionDenied naming ``needed`` unless ``scopes`` include it (or admin)."""
    if ADMIN not in scopes and needed not in scopes:
        raise PermissionDenied(f"this API key lacks the scope {needed!r}")


def require_publish(scopes: Sequence[str], channel: str) -> None:
    if ADMIN in scopes:
        return
    for scope in scopes:
        if scope.startswith(PUBLISH) and _matches(scope[len(PUBLISH) :], channel):
            return
    raise PermissionDenied(f"this API key lacks the scope 'publish:{channel}'")


def _matches(pattern: str, channel: str) -> bool:
    if pattern.endswith("*"):
        return channel.startswith(pattern[:-1])
    return pattern == channel
