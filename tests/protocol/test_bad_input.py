"""Bad input over raw Engine.IO / Socket.IO and HTTP against a live node: malformed packets,
bad msgpack, wrong payload types, oversized bodies and frames, binary placeholder floods,
handshakes from foreign origins. A bad payload never changes state and never kills the
connection; a client that keeps sending garbage is told ``bad_request`` and disconnected.

Tests run in file order and share one node; a ``bystander`` client connected at the start must
still be served at the end, and the log must hold no traceback for anything sent here.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.config import Settings
from server.payloads import EVENT_PATTERN
from tests.protocol.raw import ConnectionWasClosed, RawClient
from tests.support.live import API_KEY, LiveServer

TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Exception in ASGI application")
BYSTANDER_CHANNEL = "room:bystander"
# The largest message a node takes by default (TANDEM_ENGINE_MAX_BYTES).
ENGINE_MAX: int = Settings.model_fields["engine_max_bytes"].default


# -- helpers ----------------------------------------------------------------------------------


def metric(server: LiveServer, name: str) -> float:
    """Sum of every sample of ``name`` (all label values) at ``GET /metrics``."""
    text = httpx.get(f"{server.url}/metrics", timeout=2).text
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(text))


def protocol_errors(server: LiveServer) -> float:
    return metric(server, "tandem_protocol_errors_total")


def wait_for(predicate: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


class LogWatch:
    """What the node logged since the watch started."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.start = len(server.log())

    def new(self) -> str:
        return self.server.log()[self.start :]

    def assert_no_traceback(self) -> None:
        time.sleep(0.1)  # the node logs from another process
        assert_no_traceback(self.new())


def assert_no_traceback(log: str) -> None:
    for marker in TRACEBACK_MARKERS:
        at = log.find(marker)
        if at >= 0:
            excerpt = log[max(0, at - 200) : at + 1500]
            raise AssertionError(f"the node logged a traceback:\n...{excerpt}...")


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.token("alice", channels=["room:*"])


@pytest.fixture(scope="module")
def baseline(server: LiveServer) -> float:
    return protocol_errors(server)


@pytest.fixture(scope="module")
def bystander(server: LiveServer, token: str, baseline: float) -> Iterator[RawClient]:
    """A well-behaved client that lives through the whole module."""
    with RawClient(server.port) as client:
        client.connect_namespace(token)
        ack = client.request("subscribe", {"channel": BYSTANDER_CHANNEL})
        assert ack["ok"] is True, ack
        yield client


@pytest.fixture
def log(server: LiveServer, bystander: RawClient) -> LogWatch:
    return LogWatch(server)


@pytest.fixture
def client(server: LiveServer, token: str, bystander: RawClient) -> Iterator[RawClient]:
    with RawClient(server.port) as raw:
        assert "sid" in raw.connect_namespace(token)
        yield raw


# -- malformed packets: each is counted, logged without a traceback, and survived --------------

MALFORMED: list[tuple[str, str]] = [
    ("bad JSON", '42["subscribe"'),
    ("not an array", "42{}"),
    ("non-string event name", "42[123]"),
    ("empty event array", "42[]"),
    ("unknown Socket.IO type", "49[]"),
    ("CONNECT_ERROR from a client", '44{"message":"x"}'),
    ("ack id too long", "42" + "9" * 120 + '["subscribe",{}]'),
    ("too many attachments digits", '4512345678901-["subscribe",{}]'),
    ("deeply nested JSON", "42" + "[" * 30_000 + "]" * 30_000),
]


@pytest.mark.parametrize(("label", "frame"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_packet_is_counted_and_survived(
    server: LiveServer, client: RawClient, log: LogWatch, label: str, frame: str
) -> None:
    before = protocol_errors(server)
    client.send(frame)
    client.probe()
    log.assert_no_traceback()
    if label not in ("non-string event name", "empty event array"):
        # (an event with a bad name may be answered as an unknown event instead)
        assert protocol_errors(server) > before, f"{label} was not counted"


# Below Socket.IO: the JS reference server closes the transport on these; surviving is fine too.
ENGINE_GARBAGE: list[tuple[str, str]] = [
    ("unknown type", "9"),
    ("type not a digit", "x"),
    ("empty frame", ""),
]


@pytest.mark.parametrize(("label", "frame"), ENGINE_GARBAGE, ids=[g[0] for g in ENGINE_GARBAGE])
def test_engineio_garbage_is_counted_and_handled_cleanly(
    server: LiveServer, token: str, log: LogWatch, label: str, frame: str
) -> None:
    connections = metric(server, "tandem_connections")
    before = protocol_errors(server)
    with RawClient(server.port) as raw:
        raw.connect_namespace(token)
        raw.send(frame)
        try:
            raw.probe()  # surviving it is fine ...
        except ConnectionWasClosed:
            # ... and so is a proper close, if the node forgets the session at once.
            assert raw.closed is not None and raw.closed.code is not None, (
                f"{label}: the connection was dropped without a close frame: {raw.closed}"
            )
            wait_for(
                lambda: metric(server, "tandem_connections") == connections,
                3,
                f"{label}: the node still counts the dropped connection",
            )
    log.assert_no_traceback()
    assert protocol_errors(server) > before, f"{label} was not counted"


def test_binary_event_before_namespace_connect_closes_the_connection(server: LiveServer) -> None:
    # The Socket.IO spec: a server that does not receive a CONNECT first closes at once.
    with RawClient(server.port) as raw:
        raw.send('451-["subscribe",{"_placeholder":true,"num":0}]')
        raw.send(b"\x00\x01")
        closed, frames = raw.wait_closed(timeout=2.0)
    assert frames == [], frames
    assert closed.code == 1000, closed


def test_event_to_a_namespace_never_joined(client: RawClient) -> None:
    client.send('42/other,7["subscribe",{"channel":"room:x"}]')
    client.send('451-/other,8["subscribe",{"_placeholder":true,"num":0}]')
    client.send(b"\x00")
    client.probe()


def test_unknown_event_is_answered_invalid_payload(client: RawClient) -> None:
    ack = client.request("frobnicate", {"channel": "room:x"})
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == "invalid_payload", ack
    assert ack["error"]["retryable"] is False
    client.send('42["frobnicate"]')  # without an ack id: nothing to answer, nothing breaks
    ack = client.request("subscribe")  # a known event without its payload
    assert ack["error"]["code"] == "invalid_payload", ack
    ack = client.request("subscribe", {"channel": "room:x"}, {"extra": "argument"})
    assert ack["error"]["code"] == "invalid_payload", ack
    client.probe()


# -- wrong-type payloads (hypothesis; one connection per test, reused by its examples) --------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
not_objects = json_values.filter(lambda v: not isinstance(v, dict))
not_strings = json_values.filter(lambda v: not isinstance(v, str))
not_ints = json_values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
valid_ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True)
bad_ids = st.one_of(
    st.just(""),
    st.from_regex(r"[a-z0-9]{0,5}[ /#?*\\:!]{1,3}[a-z0-9]{0,5}", fullmatch=True),
    st.from_regex(r"[_.@=+-][a-z0-9]{0,5}", fullmatch=True),
    st.text(alphabet="ab", min_size=129, max_size=140),
)
KINDS = ("job", "user", "flight", "doc", "room")
unknown_kinds = st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(lambda k: k not in KINDS)

# Channel names of a valid shape that alice (grant room:*) may not use, or that do not parse.
refused_channels = st.one_of(
    st.text(max_size=2),  # too short
    st.text(alphabet="room:x", min_size=161, max_size=170),  # too long
    st.text(min_size=3, max_size=30).filter(lambda s: ":" not in s),  # no kind
    st.builds(lambda k, i: f"{k}:{i}", unknown_kinds, valid_ids),  # unknown_channel
    st.builds(lambda k, i: f"{k}:{i}", st.sampled_from(KINDS), bad_ids),  # invalid id
    st.builds(lambda i: f"user:x{i}", valid_ids),  # someone else's user channel
    st.builds(lambda i: f"job:{i}", valid_ids),  # a job without a grant
)
bad_since = st.one_of(
    json_values.filter(lambda v: v is not None and not isinstance(v, dict)),
    st.fixed_dictionaries({"epoch": not_strings, "offset": st.integers(0, 9)}),
    st.fixed_dictionaries({"epoch": st.just(""), "offset": st.integers(0, 9)}),
    st.fixed_dictionaries({"epoch": st.text(min_size=65, max_size=70), "offset": st.just(1)}),
    st.fixed_dictionaries({"epoch": st.text(min_size=1, max_size=8), "offset": not_ints}),
    st.fixed_dictionaries({"epoch": st.just("e"), "offset": st.integers(max_value=-1)}),
    st.fixed_dictionaries({"epoch": st.just("e")}),
    st.fixed_dictionaries({"offset": st.just(1)}),
    st.fixed_dictionaries({"epoch": st.just("e"), "offset": st.just(1), "x": json_values}),
)
extra_keys = st.text(max_size=10)


def with_extra(base: dict[str, Any], allowed: set[str]) -> Any:
    return st.tuples(extra_keys.filter(lambda k: k not in allowed), json_values).map(
        lambda kv: {**base, kv[0]: kv[1]}
    )


bad_subscribe = st.one_of(
    not_objects,
    st.fixed_dictionaries({"channel": not_strings}),
    st.dictionaries(extra_keys.filter(lambda k: k != "channel"), json_values, max_size=3),
    with_extra({"channel": "room:fuzz"}, {"channel", "since"}),
    st.fixed_dictionaries({"channel": st.just("room:fuzz"), "since": bad_since}),
)

event_names = st.from_regex(r"[a-z]{1,6}\.[a-z]{1,6}", fullmatch=True).filter(
    lambda e: not e.startswith(("server.", "presence.", "job.", "notification.", "flight.", "doc."))
)
bad_events = st.one_of(
    not_strings,
    st.text(max_size=20).filter(lambda e: re.fullmatch(EVENT_PATTERN, e) is None),
    st.text(alphabet="ab.", min_size=65, max_size=70).map(lambda e: "a." + e),
)
bad_message_ids = st.one_of(
    json_values.filter(lambda v: v is not None and not isinstance(v, str)),
    st.just(""),
    st.text(min_size=129, max_size=140),
)
good_publish = {"channel": "room:fuzz", "event": "chat.fuzz", "data": None}
bad_publish = st.one_of(
    not_objects,
    st.builds(lambda c, d: {**good_publish, "channel": c, "data": d}, not_strings, json_values),
    st.builds(lambda e: {**good_publish, "event": e}, bad_events),
    st.builds(lambda i: {**good_publish, "id": i}, bad_message_ids),
    st.sampled_from(["channel", "event"]).map(
        lambda k: {f: v for f, v in good_publish.items() if f != k}
    ),
    with_extra(good_publish, {"channel", "event", "data", "id"}),
)
# Valid shapes that the node must refuse for what they name.
refused_publish = st.one_of(
    st.builds(lambda c, e: {"channel": c, "event": e, "data": 1}, refused_channels, event_names),
    st.builds(
        lambda i, e: {"channel": f"flight:{i}", "event": e, "data": 1}, valid_ids, event_names
    ),
    st.builds(
        lambda p: {"channel": "room:fuzz", "event": p + "x", "data": 1},
        st.sampled_from(["server.", "presence.", "job.", "doc."]),
    ),
)

FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    # One connection per test, reused by all its examples (each answer is independent).
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture
def fuzz_client(server: LiveServer, token: str, bystander: RawClient) -> Iterator[RawClient]:
    with RawClient(server.port) as raw:
        raw.connect_namespace(token)
        yield raw
        raw.probe()  # and the connection survived all of it


def ask(client: RawClient, event: str, payload: Any) -> Any:
    """Emit with an ack, waiting out the per-connection rate limit (20/s, burst 40)."""
    for _ in range(50):
        ack = client.request(event, payload)
        if not (isinstance(ack, dict) and ack.get("error", {}).get("code") == "rate_limited"):
            return ack
        time.sleep(0.1)
    raise AssertionError("still rate limited after 5 s")


def assert_refused(ack: Any, codes: set[str], payload: Any) -> None:
    assert isinstance(ack, dict) and ack.get("ok") is False, (payload, ack)
    error = ack["error"]
    assert error["code"] in codes, (payload, ack)
    assert isinstance(error["message"], str) and error["message"], (payload, ack)
    assert error["retryable"] is False, (payload, ack)


@FUZZ
@given(payload=bad_subscribe)
def test_subscribe_with_wrong_types_is_invalid_payload(fuzz_client: RawClient, payload: Any):
    assert_refused(ask(fuzz_client, "subscribe", payload), {"invalid_payload"}, payload)


@FUZZ
@given(channel=refused_channels)
def test_subscribe_to_refused_channel_names(fuzz_client: RawClient, channel: str):
    ack = ask(fuzz_client, "subscribe", {"channel": channel})
    assert_refused(ack, {"invalid_payload", "unknown_channel", "permission_denied"}, channel)


@FUZZ
@given(payload=bad_publish)
def test_publish_with_wrong_types_is_invalid_payload(fuzz_client: RawClient, payload: Any):
    assert_refused(ask(fuzz_client, "publish", payload), {"invalid_payload"}, payload)


@FUZZ
@given(payload=refused_publish)
def test_publish_refused_by_channel_or_event(fuzz_client: RawClient, payload: Any):
    codes = {"invalid_payload", "unknown_channel", "permission_denied"}
    assert_refused(ask(fuzz_client, "publish", payload), codes, payload)


def test_refused_payloads_published_nothing(server: LiveServer) -> None:
    history = httpx.get(
        f"{server.url}/api/channels/room:fuzz/history",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=2,
    )
    assert history.status_code == 200, history.text
    assert history.json()["publications"] == [], "a refused payload changed state"


# -- oversized input ---------------------------------------------------------------------------


def test_event_just_under_the_payload_limit_is_accepted(client: RawClient) -> None:
    data = "x" * (60 * 1024)
    ack = client.request("publish", {"channel": "room:big", "event": "chat.big", "data": data})
    assert ack["ok"] is True, ack


def test_event_over_64k_is_answered_payload_too_large(
    server: LiveServer, client: RawClient
) -> None:
    before = protocol_errors(server)
    data = "x" * (64 * 1024 + 1)
    ack = client.request("publish", {"channel": "room:big", "event": "chat.big", "data": data})
    assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large", ack
    client.probe()
    assert protocol_errors(server) > before


def test_binary_attachment_over_64k_is_answered_payload_too_large(client: RawClient) -> None:
    ack_id = client.next_ack_id()
    header = {"channel": "room:big", "event": "chat.bin", "data": {"_placeholder": True, "num": 0}}
    client.send(f"451-{ack_id}" + json.dumps(["publish", header]))
    client.send(b"\x00" * (64 * 1024 + 1))
    ack = client.wait_ack(ack_id)
    assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large", ack
    client.probe()


def test_binary_attachments_count_toward_the_payload_limit(client: RawClient) -> None:
    """20 attachments of 60 KB each: the event is 1.2 MB, whatever the size of each frame."""
    ack_id = client.next_ack_id()
    header = {"channel": "room:big", "event": "chat.bin", "data": {"_placeholder": True, "num": 0}}
    client.send(f"4520-{ack_id}" + json.dumps(["publish", header]))
    for i in range(20):
        client.send(bytes([i]) * (60 * 1024))
    ack = client.wait_ack(ack_id)
    assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large", ack
    client.probe()


def test_binary_header_announcing_10000_attachments_is_refused(client: RawClient) -> None:
    """B10: the node must not wait for (and buffer) 10,000 attachments; the next packet is
    handled as a packet, or the client is told and dropped."""
    ack_id = client.next_ack_id()
    header = {"channel": "room:big", "event": "chat.bin", "data": {"_placeholder": True, "num": 0}}
    client.send(f"4510000-{ack_id}" + json.dumps(["publish", header]))
    try:
        client.probe(timeout=2)
    except ConnectionWasClosed:
        return
    except TimeoutError:
        raise AssertionError(
            "after a header announcing 10,000 attachments the node swallows the next packets"
        ) from None


@pytest.mark.parametrize("compression", ["deflate", None], ids=["deflated", "plain"])
def test_frame_over_the_engine_limit_closes_the_connection(
    server: LiveServer, token: str, bystander: RawClient, compression: str | None
) -> None:
    """Deflated, megabytes of the same byte are a few KB on the wire that inflate 1000x."""
    with RawClient(server.port, compression=compression) as raw:
        raw.connect_namespace(token)
        started = time.monotonic()
        data = {"channel": "room:big", "event": "chat.big", "data": "x" * (ENGINE_MAX + 100_000)}
        cut_while_sending = False
        try:
            raw.send("42" + json.dumps(["publish", data]))
        except (ConnectionClosed, OSError):
            # Closed before the client had even sent it all (the node did not read on): the
            # reset may then overtake the 1009 close frame.
            cut_while_sending = True
        closed, _ = raw.wait_closed(timeout=3)
        assert time.monotonic() - started < 2
        assert closed.code == 1009 or (cut_while_sending and closed.code is None), closed


# -- repeated protocol errors --------------------------------------------------------------------


def test_three_malformed_packets_in_a_minute_get_bad_request_and_disconnect(
    server: LiveServer, client: RawClient, log: LogWatch
) -> None:
    client.send('42["subscribe"')
    client.send("42{}")
    client.probe()  # two are tolerated
    client.send("49[]")
    name, notice = client.next_event(timeout=3)
    assert name == "server.notice", (name, notice)
    assert notice["code"] == "bad_request", notice
    assert notice["reconnect"] is False, notice
    assert isinstance(notice["message"], str)
    # then a Socket.IO DISCONNECT for "/" (the JS client reports "io server disconnect")
    frames: list[Any] = []
    deadline = time.monotonic() + 3
    while "41" not in frames and time.monotonic() < deadline:
        frames.append(client.recv(timeout=3))
    assert "41" in frames, frames
    log.assert_no_traceback()


def test_kicked_client_transport_is_closed(server: LiveServer, client: RawClient) -> None:
    """After the bad_request notice the node closes the WebSocket instead of keeping it open
    until the ping timeout (45 s) for a client it has given up on."""
    for frame in ('42["subscribe"', "42{}", "49[]"):
        client.send(frame)
    try:
        closed, frames = client.wait_closed(timeout=3)
    except TimeoutError as exc:
        raise AssertionError(f"the kicked client's WebSocket is still open: {exc}") from None
    assert any("server.notice" in f for f in frames if isinstance(f, str)), frames


def test_unknown_engineio_packets_count_toward_the_limit(client: RawClient) -> None:
    for frame in ("9", "9", "9"):
        client.send(frame)
    try:
        name, notice = client.next_event(timeout=3)
    except (TimeoutError, ConnectionWasClosed):
        raise AssertionError("three unknown Engine.IO packets did not get bad_request") from None
    assert name == "server.notice" and notice["code"] == "bad_request", (name, notice)


def test_invalid_msgpack_is_counted_and_three_strikes_apply(msgpack_server: LiveServer) -> None:
    token = msgpack_server.token("alice", channels=["room:*"])
    watch = LogWatch(msgpack_server)
    before = protocol_errors(msgpack_server)
    with RawClient(msgpack_server.port, serializer="msgpack") as raw:
        raw.connect_namespace(token)
        raw.send(b"\xc1")  # a byte msgpack never uses
        raw.send(b"\x83\xa4type")  # truncated map
        raw.probe()
        assert protocol_errors(msgpack_server) >= before + 2
        raw.send(msgpack.dumps([1, 2, 3]))  # valid msgpack, not a packet
        name, notice = raw.next_event(timeout=3)
        assert name == "server.notice" and notice["code"] == "bad_request", (name, notice)
    with RawClient(msgpack_server.port, serializer="msgpack") as raw:
        raw.connect_namespace(token)
        ack = raw.request("subscribe", {"channel": b"room:x"})  # bytes where a str belongs
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload", ack
        raw.probe()
    watch.assert_no_traceback()


# -- Engine.IO over HTTP -------------------------------------------------------------------------


def polling_session(http: httpx.Client) -> str:
    response = http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert response.status_code == 200, response.text
    assert response.text.startswith("0{"), response.text
    sid: str = json.loads(response.text[1:])["sid"]
    return sid


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=2) as client:
        yield client


def test_polling_post_over_the_limit_is_413_at_once(server: LiveServer, http: httpx.Client) -> None:
    sid = polling_session(http)
    params = {"EIO": "4", "transport": "polling", "sid": sid}
    started = time.monotonic()
    response = http.post(
        "/socket.io/",
        params=params,
        content=b"4" * (ENGINE_MAX + 1_000_000),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 413, response.text
    assert time.monotonic() - started < 1

    # The announced length alone is enough: the node must not wait for 5 MB that never come.
    sid = polling_session(http)
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        started = time.monotonic()
        sock.sendall(
            (
                f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {ENGINE_MAX + 1_000_000}\r\n\r\n42"
            ).encode()
        )
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert time.monotonic() - started < 1


def test_http_publish_over_the_limit_is_413(http: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    body = b'{"channel":"room:big","event":"chat.big","data":"' + b"x" * 2_000_000 + b'"}'
    started = time.monotonic()
    response = http.post("/api/publish", content=body, headers=auth)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert time.monotonic() - started < 1


def test_chunked_http_publish_over_the_limit_is_413(http: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def chunks() -> Iterator[bytes]:
        yield b'{"channel":"room:big","event":"chat.big","data":"'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}'

    started = time.monotonic()
    response = http.post("/api/publish", content=chunks(), headers=auth)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert time.monotonic() - started < 1


def test_cross_origin_handshake_is_refused(server: LiveServer, http: httpx.Client) -> None:
    evil = {"Origin": "http://evil.example"}
    response = http.get("/socket.io/", params={"EIO": "4", "transport": "polling"}, headers=evil)
    assert response.status_code == 400, response.text
    with pytest.raises(InvalidStatus) as refused:
        RawClient(server.port, origin="http://evil.example")
    assert refused.value.response.status_code in (400, 403)
    # the node's own origin is fine
    same = {"Origin": server.url}
    response = http.get("/socket.io/", params={"EIO": "4", "transport": "polling"}, headers=same)
    assert response.status_code == 200, response.text


def test_bad_engineio_requests_are_400(http: httpx.Client) -> None:
    for params in (
        {"EIO": "3", "transport": "polling"},
        {"EIO": "5", "transport": "polling"},
        {"EIO": "4", "transport": "carrier-pigeon"},
        {"EIO": "4", "transport": "polling", "sid": "no-such-session"},
    ):
        response = http.get("/socket.io/", params=params)
        assert response.status_code == 400, (params, response.status_code, response.text)


POLLING_GARBAGE = [
    ("unknown type", b"9", "text/plain"),
    ("not UTF-8", b"\xff\xfe\x00", "text/plain"),
    ("bad base64", b"b!!!notbase64", "text/plain"),
    ("bad JSON", b'42["subscribe"', "text/plain"),
    ("binary body", b"\x00\x01\x02", "application/octet-stream"),
]


@pytest.mark.parametrize(
    ("label", "body", "content_type"), POLLING_GARBAGE, ids=[g[0] for g in POLLING_GARBAGE]
)
def test_malformed_polling_post(
    http: httpx.Client, log: LogWatch, label: str, body: bytes, content_type: str
) -> None:
    sid = polling_session(http)
    params = {"EIO": "4", "transport": "polling", "sid": sid}
    response = http.post(
        "/socket.io/", params=params, content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code in (200, 400), (label, response.status_code, response.text)
    log.assert_no_traceback()


def test_polling_close_answers_pending_get(http: httpx.Client, server: LiveServer) -> None:
    """A client's CLOSE packet ends its session; the long-poll GET still open must be answered
    promptly, not held for ping_interval + ping_timeout (it also holds up graceful shutdown)."""
    sid = polling_session(http)
    params = {"EIO": "4", "transport": "polling", "sid": sid}
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as pending:
        pending.sendall(
            f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n\r\n".encode()
        )
        time.sleep(0.3)  # the GET is now waiting for packets
        response = http.post("/socket.io/", params=params, content=b"1")
        assert response.status_code == 200, response.text
        try:
            head = pending.recv(4096)
        except TimeoutError:
            raise AssertionError("the pending long-poll was not answered within 3 s") from None
        assert head.startswith(b"HTTP/1.1 "), head


# -- and after all of that -----------------------------------------------------------------------


def test_node_and_other_clients_are_unaffected(
    server: LiveServer, bystander: RawClient, baseline: float
) -> None:
    assert httpx.get(f"{server.url}/health/live", timeout=2).status_code == 200
    bystander.probe()
    published = httpx.post(
        f"{server.url}/api/publish",
        json={"channel": BYSTANDER_CHANNEL, "event": "chat.message", "data": {"still": "here"}},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=2,
    )
    assert published.status_code == 200, published.text
    name, envelope = bystander.next_event()
    assert name == "chat.message"
    assert envelope["channel"] == BYSTANDER_CHANNEL and envelope["data"] == {"still": "here"}
    assert protocol_errors(server) > baseline


def test_no_traceback_in_the_whole_log(server: LiveServer) -> None:
    assert_no_traceback(server.log())
