"""The server-to-server HTTP API client (httpx), with safe retries."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from client_sdk._docs_api import DocsAPI
from client_sdk._errors import ConnectionLost, TandemError, error_class, error_from_body
from client_sdk._flights import FlightsAPI
from client_sdk._job_worker import JobsAPI
from client_sdk._models import History, Message, Position, PublishResult, Token
from client_sdk._notifications import NotificationsAPI
from client_sdk._retry import backoff_delay

log = logging.getLogger("client_sdk")

_RETRY_STATUSES = frozenset({502, 503, 504})
# Refusals that say the server did not apply the request: safe to retry even a request that
# would change something twice.
_NOT_APPLIED_CODES = frozenset({"rate_limited", "broker_unavailable"})
_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    410: "unrecoverable_position",
    413: "payload_too_large",
    422: "invalid_payload",
    429: "rate_limited",
    503: "broker_unavailable",
}


class ServerAPI:
    """The HTTP API for backends and workers, authenticated with an API key.

    Every call is retried on connection errors and on 502/503/504 or retryable errors, with
    backoff and the server's ``Retry-After``, up to ``max_attempts`` in total. Publishing is
    safe to retry because each publish carries an ``Idempotency-Key`` (the same one on every
    attempt), so the server stores it once. Calls that would change twice and carry no such
    key (document inserts, deletes, appends, named versions) are retried only when the server
    surely did not apply them (no connection, ``rate_limited``, ``broker_unavailable``).

    Example:
        >>> async with ServerAPI(url, api_key) as api:
        ...     result = await api.publish("room:lobby", "chat.message", {"text": "hi"})
        ...     created = await api.jobs.create("alice", "checkout")

    Args:
        url: The server's base URL.
        api_key: A key from the server's ``TANDEM_API_KEYS`` (or a user token).
        timeout: Seconds per HTTP attempt.
        max_attempts: Attempts per call, at least 1.
        backoff: Backoff base between attempts, in seconds.
        backoff_max: Backoff cap (also the longest ``Retry-After`` honoured), in seconds.
        transport: An httpx transport to use instead of the default (for proxies or tests).

    Attributes:
        jobs: The jobs API (`JobsAPI`): create jobs and report their progress.
        notifications: The notifications API (`NotificationsAPI`): send, list, mark read.
        flights: The flights API (`FlightsAPI`): put flight status, get and list flights.
        docs: The documents API (`DocsAPI`): create, read, edit, members and versions.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff: float = 0.25,
        backoff_max: float = 4.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self.jobs = JobsAPI(self)
        self.notifications = NotificationsAPI(self)
        self.flights = FlightsAPI(self)
        self.docs = DocsAPI(self)

    async def __aenter__(self) -> ServerAPI:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying HTTP connections."""
        await self._http.aclose()

    async def publish(
        self,
        channel: str,
        event: str,
        data: Any = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish an event to any channel.

        Args:
            channel: The channel name, for example ``"job:42"``.
            event: The event type, for example ``"job.progress"``.
            data: The JSON payload.
            idempotency_key: Dedupe key (5 minutes on the server); a random one when ``None``,
                reused for every retry of this call.

        Returns:
            The `PublishResult`; ``duplicate`` is True when the key was already used.

        Raises:
            PermissionDenied: Reserved event type (``server.*``).
            PayloadTooLarge: ``data`` is over the server's limit.
            Unavailable: The broker stayed unavailable through every attempt.
        """
        key = idempotency_key or str(uuid.uuid4())
        body = await self._request(
            "POST",
            "/api/publish",
            json={"channel": channel, "event": event, "data": data},
            headers={"Idempotency-Key": key},
        )
        return PublishResult.from_wire(body)

    async def publish_batch(
        self,
        publications: Sequence[Mapping[str, Any] | tuple[Any, ...]],
        *,
        durable: bool = False,
    ) -> list[PublishResult]:
        """Publish up to 100 events in one request; each channel's in the given order.

        Every item without an ``id`` gets a random one, the same on every retry, so retrying
        after a broker failure (some items published, some not) publishes each item once:
        the server answers the published ones as duplicates with their original offsets.

        Args:
            publications: ``{"channel", "event", "data"?, "id"?}`` mappings or
                ``(channel, event, data[, id])`` tuples, 1 to 100 of them.
            durable: Commit them to the server's outbox instead (published when the broker
                can take them, even across an outage); returns an empty list.

        Returns:
            One `PublishResult` per publication, in order (empty when ``durable``).

        Raises:
            ValueError: No publications, or more than 100.
            InvalidPayload: An item is invalid (the message names its index); nothing was
                published.
            PermissionDenied: Reserved event type (``server.*``), or not an API key.
            Unavailable: The broker stayed unavailable through every attempt; some items may
                be published: call again with the same ids to finish.
        """
        if not 1 <= len(publications) <= 100:
            raise ValueError("publish_batch takes 1 to 100 publications")
        items: list[dict[str, Any]] = []
        for publication in publications:
            if isinstance(publication, tuple):
                item = dict(zip(("channel", "event", "data", "id"), publication, strict=False))
            else:
                item = dict(publication)
            if item.get("id") is None:
                item["id"] = str(uuid.uuid4())
            items.append(item)
        payload: dict[str, Any] = {"publications": items}
        if durable:
            payload["durable"] = True
        body = await self._request("POST", "/api/publish/batch", json=payload)
        if durable:
            return []
        return [PublishResult.from_wire(result) for result in body["results"]]

    async def history(
        self,
        channel: str,
        since: Position | tuple[str, int] | None = None,
        limit: int | None = None,
    ) -> History:
        """Read a channel's retained publications, oldest first.

        Args:
            channel: The channel name.
            since: Only publications after this position.
            limit: At most this many (the newest ones without ``since``).

        Raises:
            UnrecoverablePosition: ``since`` is older than the retained history.
        """
        params: dict[str, str | int] = {}
        if since is not None:
            position = Position(*since)
            params["since_epoch"] = position.epoch
            params["since_offset"] = position.offset
        if limit is not None:
            params["limit"] = limit
        body = await self._request(
            "GET", f"/api/channels/{quote(channel, safe=':')}/history", params=params
        )
        return History(
            channel=str(body["channel"]),
            epoch=str(body["epoch"]),
            offset=int(body["offset"]),
            publications=[Message.from_envelope(env) for env in body["publications"]],
        )

    async def create_token(
        self,
        sub: str,
        channels: Sequence[str] = (),
        ttl: int = 3600,
        name: str | None = None,
        scope: str | None = None,
        docs: Mapping[str, str] | None = None,
    ) -> Token:
        """Mint a user token for `Client`.

        Args:
            sub: The user id.
            channels: Grants: exact channel names or ``"prefix:*"`` patterns (``"doc:<id>"``
                and ``"doc:<prefix>*"`` make the user an editor of those documents).
            ttl: Lifetime in seconds.
            name: A display name.
            scope: ``"admin"`` for every channel.
            docs: Documents the user may open: ``{"<id>" or "<prefix>*": "editor" |
                "viewer"}``. Opening one the token lets them edit creates it if missing.
        """
        payload: dict[str, Any] = {"sub": sub, "channels": list(channels), "ttl": ttl}
        if name is not None:
            payload["name"] = name
        if scope is not None:
            payload["scope"] = scope
        if docs:
            payload["docs"] = dict(docs)
        body = await self._request("POST", "/api/tokens", json=payload)
        return Token(token=str(body["token"]), expires_at=int(body["expires_at"]))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        on_retry: Callable[[TandemError], None] | None = None,
        idempotent: bool = True,
    ) -> Mapping[str, Any]:
        """Send one call, retrying as the class says; ``on_retry(error)`` before each retry.

        A call that is not ``idempotent`` (applying it twice would change twice) is retried
        only when it surely did not reach the server or was refused before being applied.
        A response without a body (204) is an empty mapping.
        """
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self._http.request(
                    method, path, json=json, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                error: TandemError = ConnectionLost(f"{method} {path}: {exc!r}")
                if not idempotent and not isinstance(
                    exc, httpx.ConnectError | httpx.ConnectTimeout
                ):
                    raise error from None
            else:
                if response.is_success:
                    if response.status_code == 204 or not response.content:
                        return {}
                    body = response.json()
                    if not isinstance(body, Mapping):
                        raise error_class("internal")(f"unexpected response body: {body!r}")
                    return body
                error = _error_of(response)
                if not error.retryable and response.status_code not in _RETRY_STATUSES:
                    raise error
                if not idempotent and error.code not in _NOT_APPLIED_CODES:
                    raise error
                retry_after = _retry_after(response)
            attempt += 1
            if attempt >= self._max_attempts:
                raise error
            delay = backoff_delay(attempt - 1, self._backoff, self._backoff_max)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self._backoff_max))
            log.info("%s %s failed (%s); retry %d in %.2fs", method, path, error, attempt, delay)
            if on_retry is not None:
                on_retry(error)
            await asyncio.sleep(delay)


def _error_of(response: httpx.Response) -> TandemError:
    fallback = _CODE_BY_STATUS.get(response.status_code, "internal")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return error_from_body(body["error"], default_code=fallback)
    return error_class(fallback)(
        f"HTTP {response.status_code}: {response.text[:200]}",
        code=fallback,
        retryable=response.status_code in _RETRY_STATUSES or None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
