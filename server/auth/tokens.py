"""JWT verification and minting, and the Principal a connection or request acts as."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from domain.errors import TokenExpired, TokenRevoked, Unauthorized
from server.config import Settings

_HMAC = ("HS256", "HS384", "HS512")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (from a JWT) or a backend holding an API key."""

    sub: str
    name: str | None = None
    grants: tuple[str, ...] = ()
    admin: bool = False
    expires_at: float | None = None
    is_service: bool = False
    # The ``docs`` claim: (document id or ``prefix*``, "editor" | "viewer") pairs.
    doc_grants: tuple[tuple[str, str], ...] = ()
    # A named API key's scopes; None for a user and for a key with every scope.
    scopes: tuple[str, ...] | None = None
    # The ``iat`` claim: tokens issued before a revocation of their user are refused.
    issued_at: float | None = None


SERVICE = Principal(sub="service", admin=True, is_service=True)


# Whether a principal's token was revoked (issued before its user's revocation time).
RevocationCheck = Callable[[Principal], bool]


class TokenVerifier:
    """Checks signature (allow-listed algorithms only), ``exp``, ``nbf``, ``aud`` and ``iss``,
    and, given ``revoked``, that the token was not revoked."""

    def __init__(self, settings: Settings, *, revoked: RevocationCheck | None = None) -> None:
        self._revoked = revoked
        self._algorithms = list(settings.jwt_algorithms)
        self._secret = settings.jwt_secret.get_secret_value()
        public = settings.jwt_public_key
        self._public_key = public.get_secret_value() if public else None
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_s

    def verify(self, token: object) -> Principal:
        if not isinstance(token, str) or not token:
            raise Unauthorized("send {'token': '<JWT>'} in the connect auth payload")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise Unauthorized(f"token algorithm {algorithm!r} is not allowed")
        key = self._secret if algorithm in _HMAC else self._public_key
        if key is None:
            raise Unauthorized(f"no key is configured for {algorithm}")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token has expired; connect again with a fresh token") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        principal = principal_from_claims(claims)
        if self._revoked is not None and self._revoked(principal):
            raise TokenRevoked("this token was revoked; get a new one")
        return principal


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("token claim 'sub' must be a non-empty string")
    name = claims.get("name")
    channels = claims.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise Unauthorized("token claim 'channels' must be a list of channel names")
    issued = claims.get("iat")
    if issued is not None and (isinstance(issued, bool) or not isinstance(issued, int | float)):
        raise Unauthorized("token claim 'iat' must be a number")
    scope = claims.get("scope", "")
    scopes = scope.split() if isinstance(scope, str) else scope
    if not isinstance(scopes, list):
        raise Unauthorized("token claim 'scope' must be a string or a list")
    return Principal(
        sub=sub,
        name=name if isinstance(name, str) else None,
        grants=tuple(channels),
        admin="admin" in scopes,
        expires_at=float(claims["exp"]),
        doc_grants=_doc_grants(claims.get("docs", {})),
        issued_at=None if issued is None else float(issued),
    )


DOC_ROLES = ("editor", "viewer")


def _doc_grants(docs: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(docs, dict) or not all(
        isinstance(pattern, str) and role in DOC_ROLES for pattern, role in docs.items()
    ):
        raise Unauthorized(
            "token claim 'docs' must map document ids (or 'prefix*') to 'editor' or 'viewer'"
        )
    return tuple(docs.items())


def mint_token(
    settings: Settings,
    *,
    sub: str,
    ttl_s: int,
    channels: list[str] | None = None,
    name: str | None = None,
    scope: str | None = None,
    docs: dict[str, str] | None = None,
    now: float | None = None,
) -> tuple[str, int]:
    """Sign a user token; returns the token and its ``exp``."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + ttl_s}
    if name:
        claims["name"] = name
    if channels:
        claims["channels"] = channels
    if scope:
        claims["scope"] = scope
    if docs:
        claims["docs"] = docs
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    hmac_algorithms = [a for a in settings.jwt_algorithms if a in _HMAC]
    if hmac_algorithms:
        key, algorithm = settings.jwt_secret.get_secret_value(), hmac_algorithms[0]
    elif settings.jwt_private_key is not None:
        key, algorithm = settings.jwt_private_key.get_secret_value(), settings.jwt_algorithms[0]
    else:
        raise ValueError("minting needs an HMAC algorithm or TANDEM_JWT_PRIVATE_KEY")
    return jwt.encode(claims, key, algorithm=algorithm), claims["exp"]
