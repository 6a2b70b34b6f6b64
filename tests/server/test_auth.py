"""The JWT matrix (forged signature, alg=none, key confusion, expired, not yet valid, wrong
audience or issuer, no subject, rotated keys): unit checks of the verifier, then the same over a
real connect."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from domain.errors import TokenExpired, Unauthorized
from server.auth.tokens import TokenVerifier
from server.config import Settings
from tests.support.live import TEST_SECRET, LiveServer, make_token
from tests.support.sio import connect_error, connected


def verifier(**overrides: object) -> TokenVerifier:
    return TokenVerifier(Settings(jwt_secret=TEST_SECRET, **overrides))  # type: ignore[arg-type]


def b64(value: Mapping[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned(claims: dict[str, object]) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def test_valid_token_gives_principal() -> None:
    token = make_token("alice", name="Alice", channels=["job:42"], scope="admin read")
    principal = verifier().verify(token)
    assert principal.sub == "alice" and principal.name == "Alice"
    assert principal.grants == ("job:42",) and principal.admin
    assert principal.expires_at is not None and principal.expires_at > time.time()


@pytest.mark.parametrize(
    ("token", "error"),
    [
        pytest.param(make_token(secret="forged-" + TEST_SECRET), Unauthorized, id="forged"),
        pytest.param(unsigned({"sub": "a", "exp": time.time() + 60}), Unauthorized, id="alg-none"),
        pytest.param(make_token(ttl=-10), TokenExpired, id="expired"),
        pytest.param(make_token(nbf=time.time() + 3600), Unauthorized, id="future-nbf"),
        pytest.param(make_token(sub=None), Unauthorized, id="missing-sub"),
        pytest.param(make_token(sub=""), Unauthorized, id="empty-sub"),
        pytest.param(make_token(channels="job:1"), Unauthorized, id="channels-not-list"),
        pytest.param(
            jwt.encode({"sub": "a"}, TEST_SECRET, algorithm="HS256"), Unauthorized, id="no-exp"
        ),
        pytest.param(
            make_token(algorithm="HS512", secret=TEST_SECRET * 2),
            Unauthorized,
            id="algorithm-not-allowed",
        ),
        pytest.param("not.a.jwt", Unauthorized, id="garbage"),
        pytest.param(None, Unauthorized, id="missing"),
    ],
)
def test_rejected_tokens(token: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        verifier().verify(token)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    strict = verifier(jwt_audience="tandem", jwt_issuer="https://auth.example")
    good = make_token(aud="tandem", iss="https://auth.example")
    assert strict.verify(good).sub == "alice"
    for bad in (
        make_token(aud="other", iss="https://auth.example"),
        make_token(aud="tandem", iss="https://evil.example"),
        make_token(iss="https://auth.example"),
    ):
        with pytest.raises(Unauthorized):
            strict.verify(bad)


def test_rs256_and_no_key_confusion() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    rs = verifier(jwt_algorithms="RS256", jwt_public_key=public_pem)
    token = jwt.encode({"sub": "a", "exp": time.time() + 60}, private, algorithm="RS256")
    assert rs.verify(token).sub == "a"
    # The classic confusion: an HS256 token "signed" with the public key must not pass.
    header = {"alg": "HS256", "typ": "JWT"}
    body = {"sub": "a", "exp": time.time() + 60}
    signing_input = f"{b64(header)}.{b64(body)}".encode()
    signature = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    confused = (
        signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    )
    with pytest.raises(Unauthorized):
        rs.verify(confused)


async def test_connect_errors_carry_codes(server: LiveServer) -> None:
    refused = await connect_error(server.url, {"token": make_token(secret="x" * 40)})
    assert refused["data"]["code"] == "unauthorized"
    expired = await connect_error(server.url, {"token": make_token(ttl=-5)})
    assert expired["data"]["code"] == "token_expired"
    missing = await connect_error(server.url, None)
    assert missing["data"]["code"] == "unauthorized"
    assert "token" in missing["message"]


async def test_token_expiring_while_connected_ends_with_a_notice(server: LiveServer) -> None:
    async with connected(server.url, make_token("alice", ttl=1.5)) as client:
        event, notice = await client.next(timeout=5)
        assert event == "server.notice"
        assert notice["code"] == "token_expired" and notice["reconnect"] is True
        async with asyncio.timeout(3):
            await client.disconnected.wait()
