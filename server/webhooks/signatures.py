"""The HMAC signature of webhook requests, both ways: providers sign what they send to
``POST /api/webhooks/flights``, and Tandem signs what it sends to registered endpoints, so
one verifier works for both.

``X-Tandem-Timestamp: <unix seconds>`` and
``X-Tandem-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``.
"""

from __future__ import annotations

import hashlib
import hmac

from domain.errors import Unauthorized

# A signed request is accepted this long either side of its timestamp.
SIGNATURE_WINDOW_S = 300
SIGNATURE_PREFIX = "sha256="
TIMESTAMP_HEADER = "X-Tandem-Timestamp"
SIGNATURE_HEADER = "X-Tandem-Signature"


def sign(secret: bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Tandem-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: bytes, body: bytes, timestamp: str | None, signature: str | None, *, now: float
) -> tuple[int, str]:
    """The request's timestamp and (normalized) signature, or Unauthorized."""
    if not timestamp or not signature:
        raise Unauthorized(f"send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    if not timestamp.isdigit():
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be unix seconds")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise Unauthorized("the signature does not match the body")
    when = int(timestamp)
    if abs(now - when) > SIGNATURE_WINDOW_S:
        raise Unauthorized("the delivery's timestamp is outside the 5-minute window")
    return when, expected
