"""Webhook rules: URLs, subscriptions, matching and the backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.errors import InvalidPayload
from domain.webhooks import EVENT_TYPES, RetryPolicy, WebhookEvent, check_events, check_url, wants

NAMESPACES = ("room", "doc", "user")


@pytest.mark.parametrize(
    "url",
    ["http://example.com", "https://example.com:8443/hooks?x=1", "http://127.0.0.1:9/h"],
)
def test_absolute_http_urls_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("example.com/hook", "absolute"),
        ("ftp://example.com/", "absolute"),
        ("javascript:alert(1)", "absolute"),
        ("https://", "host"),
        ("https://:443/", "host"),
        ("https://u:p@example.com/", "credentials"),
        ("https://u@example.com/", "credentials"),
        ("https://example.com:70000/", "valid"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/" + "x" * 2000, "2000"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, hint: str) -> None:
    with pytest.raises(InvalidPayload, match=hint):
        check_url(url)


def test_subscriptions_are_checked_and_deduplicated() -> None:
    assert check_events(["job.completed", "presence.join:room", "job.completed"], NAMESPACES) == (
        "job.completed",
        "presence.join:room",
    )
    with pytest.raises(InvalidPayload) as unknown:
        check_events(["job.done"], NAMESPACES)
    assert all(kind in unknown.value.message for kind in EVENT_TYPES)
    with pytest.raises(InvalidPayload, match="takes no"):
        check_events(["job.failed:room"], NAMESPACES)
    with pytest.raises(InvalidPayload, match="known namespaces: doc, room, user"):
        check_events(["channel.occupied:nope"], NAMESPACES)
    with pytest.raises(InvalidPayload, match="at least one"):
        check_events([], NAMESPACES)


def test_a_namespace_narrows_a_channel_event() -> None:
    def event(kind: str, namespace: str | None) -> WebhookEvent:
        return WebhookEvent("e", kind, {}, datetime.now(UTC), namespace)

    assert wants(["presence.join"], event("presence.join", "doc"))
    assert wants(["presence.join:doc"], event("presence.join", "doc"))
    assert not wants(["presence.join:room"], event("presence.join", "doc"))
    assert not wants(["presence.leave"], event("presence.join", "doc"))
    assert wants(["job.failed", "job.completed"], event("job.completed", None))


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=600.0, max_attempts=15)
    assert [policy.delay(n, lambda: 1.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert policy.delay(11, lambda: 1.0) == 600.0
    assert policy.delay(10_000, lambda: 1.0) == 600.0
    assert policy.delay(3, lambda: 0.0) == 0.0
    assert policy.delay(3, lambda: 0.5) == 2.0
    delays = [policy.delay(4) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays) and len(set(delays)) > 100
