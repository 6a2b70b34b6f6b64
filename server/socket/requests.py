"""How a Socket.IO request becomes a handler call: the connection's rate limits, the payload
validated with its model, and every outcome (errors included) an ack."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from domain.errors import DomainError, ErrorCode, Unavailable
from realtime.broker import BrokerUnavailable
from realtime.ratelimit import TokenBucket
from server.correlation import bind, unbind
from server.errors import domain_error_ack, error_ack, validation_message
from server.metrics import Metrics
from server.socket.connections import Connection

log = logging.getLogger(__name__)

Ack = dict[str, Any]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Requests:
    def __init__(self, connections: dict[str, Connection], metrics: Metrics) -> None:
        self._connections = connections
        self._metrics = metrics
        # Told of every error answered (code, message): the admin console's recent errors.
        self.on_error: Callable[[str, str], None] | None = None

    def handler(
        self,
        model: type[M],
        handler: Callable[[Connection, M], Awaitable[Ack]],
        *,
        limit: Callable[[Connection], TokenBucket] | None = None,
        general: bool = True,
    ) -> Callable[..., Awaitable[Ack]]:
        """A Socket.IO handler for ``handler``: rate limits (the connection's general one
        unless ``general`` is False, and ``limit``'s), payload validation with ``model``, and
        every error mapped to an ack."""

        async def run(sid: str, *args: Any) -> Ack:
            conn = self._connections.get(sid)
            if conn is None:
                return self.error(error_ack(ErrorCode.UNAUTHORIZED, "not connected"))
            if general and not conn.bucket.take():
                return self.error(
                    error_ack(ErrorCode.RATE_LIMITED, "too many requests", retryable=True)
                )
            if limit is not None and not limit(conn).take():
                return self.error(
                    error_ack(
                        ErrorCode.RATE_LIMITED,
                        f"too many {model.__name__.removesuffix('Request').lower()} requests",
                        retryable=True,
                    )
                )
            if len(args) != 1 or not isinstance(args[0], dict):
                return self.error(
                    error_ack(ErrorCode.INVALID_PAYLOAD, "send exactly one object as payload")
                )
            try:
                request = model.model_validate(args[0])
            except ValidationError as exc:
                return self.error(error_ack(ErrorCode.INVALID_PAYLOAD, validation_message(exc)))
            token = bind(connection=sid, user=conn.principal.sub)
            try:
                return await self.answer(model.__name__, handler(conn, request))
            finally:
                unbind(token)

        return run

    async def answer(self, name: str, call: Awaitable[T]) -> T | Ack:
        """``call``'s ack, or the error ack of what it raised (``name``: the request's)."""
        try:
            return await call
        except DomainError as exc:
            return self.error(domain_error_ack(exc))
        except BrokerUnavailable:
            self._metrics.broker_errors.labels(name).inc()
            return self.error(domain_error_ack(Unavailable("broker unavailable; retry")))
        except Exception:
            log.exception("%s failed", name)
            return self.error(
                error_ack(ErrorCode.INTERNAL, "internal error; retry", retryable=True)
            )

    def error(self, ack: Ack) -> Ack:
        self._metrics.request_errors.labels(ack["error"]["code"]).inc()
        if self.on_error is not None:
            self.on_error(ack["error"]["code"], ack["error"]["message"])
        return ack

    async def unknown_event(self, event: str, sid: str, *args: Any) -> Ack:
        self._metrics.protocol_errors.labels("unknown_event").inc()
        return self.error(
            error_ack(
                ErrorCode.INVALID_PAYLOAD,
                f"unknown event {str(event)[:64]!r}; use subscribe, subscribe_many, unsubscribe, "
                "publish, presence, status, typing or doc.join, doc.update, doc.sync, "
                "doc.awareness, doc.leave",
            )
        )
