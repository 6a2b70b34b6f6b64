"""The control plane: requests between nodes, answered by every live node within a deadline.

It rides on the broker's public publish/subscribe, on channel names of a reserved kind
(``_control:``) that no namespace may be named (``Namespaces.parse`` refuses them), so no
client and no HTTP caller can ever subscribe or publish to them. That needs nothing new from
either broker: the memory broker carries it within one node, the Redis broker across all of
them, and both deliver a node's own messages back to it, so the node that asks answers like
every other.

- ``_control:heartbeat``: every node says it is alive every ``heartbeat_s`` (and that it is
  leaving when it stops), so each node knows which nodes exist; the stream's history tells a
  node that just started which nodes spoke recently.
- ``_control:requests``: ``{id, from, op, args}``, heard by every node.
- ``_control:reply.<node>``: ``{id, node, ok, result | error}``, heard by the asking node.

Every message heard is checked before use: whatever else arrives on these channels is logged
and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeGuard

from realtime.broker import Broker, BrokerUnavailable, Publication
from realtime.periodic import Periodic

log = logging.getLogger(__name__)

CONTROL_PREFIX = "_control:"
HEARTBEAT_CHANNEL = f"{CONTROL_PREFIX}heartbeat"
REQUEST_CHANNEL = f"{CONTROL_PREFIX}requests"
_HEARTBEAT_EVENT = "control.heartbeat"
_LEAVING_EVENT = "control.leaving"
_REQUEST_EVENT = "control.request"
_REPLY_EVENT = "control.reply"
# Requests this node runs at once; more arriving meanwhile are refused (answered with an
# error), so a flood on the control channel cannot pile up tasks without limit.
_MAX_RUNNING = 32
_MAX_ID = 64
# Tolerated difference between nodes' clocks when judging a request's deadline.
_CLOCK_SKEW_S = 5.0

# Runs one request on this node: its ``args`` (unchecked: the handler validates them) to a
# JSON-able result. ValueError means the arguments were bad.
RequestHandler = Callable[[Mapping[str, Any]], Awaitable[Any]]
# What a node says about itself in its heartbeat (connections, uptime...).
InfoSource = Callable[[], dict[str, Any]]


def is_control(channel: str) -> bool:
    return channel.startswith(CONTROL_PREFIX)


def reply_channel(node: str) -> str:
    return f"{CONTROL_PREFIX}reply.{node}"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as its last heartbeat described it."""

    node: str
    last_seen: float  # wall clock, seconds
    started_at: float
    info: dict[str, Any]
    alive: bool


@dataclass(frozen=True, slots=True)
class Gathered:
    """Every answer to a request, by node; the nodes that should have answered and did not
    (down, or too slow for the deadline); and the errors nodes answered with."""

    replies: dict[str, Any]
    missing: list[str]
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Seen:
    last_seen: float
    started_at: float
    info: dict[str, Any]


@dataclass(slots=True)
class _Pending:
    expected: set[str]
    replies: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self, node: str) -> None:
        self.expected.discard(node)
        if not self.expected:
            self.done.set()


class ControlPlane:
    """Heartbeats, the registry of nodes they build, and requests to all of them.

    Use it as ``async with control:`` after the broker is running; the broker's handler must
    pass it the publications of control channels (``is_control``).
    """

    def __init__(
        self,
        *,
        node_id: str,
        heartbeat_s: float = 2.0,
        forget_s: float = 300.0,
        info: InfoSource | None = None,
    ) -> None:
        self.node_id = node_id
        self._heartbeat_s = heartbeat_s
        # Not heard from in three heartbeats: down (still listed, reported missing at once).
        self._alive_s = heartbeat_s * 3
        self._forget_s = forget_s
        self._info = info or dict
        self._broker: Broker | None = None
        self._handlers: dict[str, RequestHandler] = {}
        self._nodes: dict[str, _Seen] = {}
        self._pending: dict[str, _Pending] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._started_at = time.time()
        self._subscribed = False
        self._beat = Periodic(self._beat_once, heartbeat_s, name="control-heartbeat")

    def use(self, broker: Broker) -> None:
        self._broker = broker

    def handle(self, op: str, handler: RequestHandler) -> None:
        self._handlers[op] = handler

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._beat_once()
        self._beat.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._beat.stop()
        for task in list(self._running):
            task.cancel()
        if self._subscribed:
            # Others stop counting on this node now rather than reporting it missing.
            with contextlib.suppress(Exception):
                await self._require_broker().publish(
                    HEARTBEAT_CHANNEL, _LEAVING_EVENT, {"node": self.node_id}
                )

    async def _beat_once(self) -> None:
        try:
            await self._heartbeat()
        except BrokerUnavailable as exc:
            # The broker logs its outage; the next beat tries again.
            log.debug("no heartbeat this round: %s", exc)

    async def _heartbeat(self) -> None:
        broker = self._require_broker()
        if not self._subscribed:
            # Until the broker first answers (Redis still coming up), every beat tries again.
            for channel in (HEARTBEAT_CHANNEL, REQUEST_CHANNEL, reply_channel(self.node_id)):
                await broker.subscribe(channel)
            await self._learn_from_history(broker)
            self._subscribed = True
        await broker.publish(HEARTBEAT_CHANNEL, _HEARTBEAT_EVENT, self._beat_body())

    def _beat_body(self) -> dict[str, Any]:
        return {"node": self.node_id, "started_at": self._started_at, "info": self._info()}

    async def _learn_from_history(self, broker: Broker) -> None:
        """The nodes that spoke recently, from the heartbeat stream: a node that just started
        knows the others before their next beat."""
        for pub in (await broker.history(HEARTBEAT_CHANNEL)).publications:
            self._on_heartbeat(pub)

    # -- the registry -------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """Every node heard from within ``forget_s``, by id; ``alive`` if within three beats."""
        now = time.time()
        self._forget(now)
        return [
            NodeInfo(
                node,
                seen.last_seen,
                seen.started_at,
                seen.info,
                alive=now - seen.last_seen <= self._alive_s,
            )
            for node, seen in sorted(self._nodes.items())
        ]

    def _forget(self, now: float) -> None:
        for node, seen in list(self._nodes.items()):
            if now - seen.last_seen > self._forget_s:
                del self._nodes[node]

    # -- requests -----------------------------------------------------------------------------

    async def request(self, op: str, args: Mapping[str, Any], *, wait_s: float) -> Gathered:
        """Run ``op`` on every node; gather the answers of the live ones for up to
        ``wait_s`` seconds. Nodes that are down, or do not answer in time, are ``missing``.

        Raises:
            BrokerUnavailable: the request could not be sent.
        """
        broker = self._require_broker()
        nodes = self.nodes()
        live = {n.node for n in nodes if n.alive} | {self.node_id}
        request_id = secrets.token_hex(8)
        pending = self._pending[request_id] = _Pending(set(live))
        body = {
            "id": request_id,
            "from": self.node_id,
            "op": op,
            "args": dict(args),
            "deadline": time.time() + wait_s,
        }
        try:
            await broker.publish(REQUEST_CHANNEL, _REQUEST_EVENT, body)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await pending.done.wait()
        finally:
            del self._pending[request_id]
        down = {n.node for n in nodes if not n.alive}
        missing = sorted(pending.expected | down)
        return Gathered(dict(pending.replies), missing, dict(pending.errors))

    async def on_publication(self, pub: Publication) -> None:
        """A publication on a control channel (called from the broker's listener)."""
        data = pub.data
        if not isinstance(data, dict):
            log.warning("dropping a malformed control message on %s", pub.channel)
            return
        if pub.channel == HEARTBEAT_CHANNEL:
            self._on_heartbeat(pub)
        elif pub.channel == REQUEST_CHANNEL and pub.event == _REQUEST_EVENT:
            self._on_request(data)
        elif pub.channel == reply_channel(self.node_id) and pub.event == _REPLY_EVENT:
            self._on_reply(data)

    def _on_heartbeat(self, pub: Publication) -> None:
        data = pub.data
        node = data.get("node") if isinstance(data, dict) else None
        if not _valid_id(node):
            return
        if pub.event == _LEAVING_EVENT:
            self._nodes.pop(node, None)
            return
        started, info = data.get("started_at"), data.get("info")
        if pub.event != _HEARTBEAT_EVENT or not isinstance(started, int | float):
            return
        if time.time() - pub.ts > self._forget_s:
            return  # an old beat read from the history
        seen = self._nodes.get(node)
        if seen is None or seen.last_seen <= pub.ts:
            info = info if isinstance(info, dict) else {}
            self._nodes[node] = _Seen(pub.ts, float(started), info)

    def _on_request(self, data: dict[str, Any]) -> None:
        request_id, sender, op, args = (data.get(k) for k in ("id", "from", "op", "args"))
        deadline = data.get("deadline")
        if not (
            _valid_id(request_id)
            and _valid_id(sender)
            and isinstance(op, str)
            and isinstance(deadline, int | float)
        ):
            log.warning("dropping a malformed control request")
            return
        if time.time() > deadline + _CLOCK_SKEW_S:
            # Replayed from the stream after this node was cut off: nobody waits for the
            # answer, and acting now (disconnecting someone minutes later) would surprise.
            log.info("dropping control request %s: past its deadline", op[:40])
            return
        args = args if isinstance(args, dict) else {}
        if len(self._running) >= _MAX_RUNNING:
            self._spawn(self._reply(sender, request_id, error="this node is busy; retry"))
            return
        self._spawn(self._run(sender, request_id, op, args))

    async def _run(self, sender: str, request_id: str, op: str, args: dict[str, Any]) -> None:
        handler = self._handlers.get(op)
        if handler is None:
            await self._reply(sender, request_id, error=f"unknown operation {op[:40]!r}")
            return
        try:
            result = await handler(args)
        except ValueError as exc:
            await self._reply(sender, request_id, error=str(exc))
        except Exception:
            log.exception("control request %s failed", op)
            await self._reply(sender, request_id, error="internal error")
        else:
            await self._reply(sender, request_id, result=result)

    async def _reply(
        self, to: str, request_id: str, *, result: Any = None, error: str | None = None
    ) -> None:
        body: dict[str, Any] = {"id": request_id, "node": self.node_id, "ok": error is None}
        if error is None:
            body["result"] = result
        else:
            body["error"] = error
        try:
            await self._require_broker().publish(reply_channel(to), _REPLY_EVENT, body)
        except BrokerUnavailable:
            log.warning("could not answer control request %s: broker unavailable", request_id)

    def _on_reply(self, data: dict[str, Any]) -> None:
        request_id, node = data.get("id"), data.get("node")
        if not (_valid_id(request_id) and _valid_id(node)):
            log.warning("dropping a malformed control reply")
            return
        pending = self._pending.get(request_id)
        if pending is None:
            return  # answered after its deadline
        if data.get("ok") is True:
            pending.replies[node] = data.get("result")
        else:
            pending.errors[node] = str(data.get("error"))[:200]
        pending.answered(node)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _require_broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("ControlPlane has no broker: call use(broker) first")
        return self._broker


def _valid_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID
