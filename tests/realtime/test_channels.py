from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from realtime.channels import (
    Channel,
    ChannelKind,
    InvalidChannel,
    Namespaces,
    UnknownNamespace,
    grant_matches,
    job_channel,
    user_channel,
)
from server.config import Settings
from server.namespaces import load_namespaces


@pytest.fixture(scope="module")
def namespaces() -> Namespaces:
    return load_namespaces(Settings())


@pytest.mark.parametrize(
    ("name", "kind", "ident"),
    [("job:42", ChannelKind.JOB, "42"), ("user:alice@x.org", ChannelKind.USER, "alice@x.org")],
)
def test_parse_known_channels(
    namespaces: Namespaces, name: str, kind: ChannelKind, ident: str
) -> None:
    channel = namespaces.parse(name)
    assert channel == Channel(namespaces[kind], ident)
    assert channel.kind == kind and channel.policy.name == kind
    assert str(channel) == name


def test_builders_round_trip(namespaces: Namespaces) -> None:
    assert namespaces.parse(job_channel("7")).kind == ChannelKind.JOB
    assert str(namespaces.parse(user_channel("bob"))) == "user:bob"


@pytest.mark.parametrize(
    "name", ["job", "job:", "job:../etc", "job:a b", "job:" + "x" * 200, ":42", "job:*", 42, None]
)
def test_invalid_names_are_refused(namespaces: Namespaces, name: object) -> None:
    with pytest.raises(InvalidChannel) as info:
        namespaces.parse(name)
    assert info.value.code == "invalid_payload"


def test_unknown_kind_is_flagged(namespaces: Namespaces) -> None:
    with pytest.raises(UnknownNamespace) as info:
        namespaces.parse("chat:1")
    assert info.value.code == "unknown_channel"
    assert info.value.message == (
        "unknown channel kind 'chat'; known kinds: job, user, flight, airport, doc, room, admin"
    )


@pytest.mark.parametrize(
    ("grant", "channel", "expected"),
    [
        ("job:42", "job:42", True),
        ("job:42", "job:420", False),
        ("job:*", "job:420", True),
        ("room:team-*", "room:team-a", True),
        ("room:team-*", "room:other", False),
        ("*", "job:1", False),
    ],
)
def test_grants(grant: str, channel: str, expected: bool) -> None:
    assert grant_matches(grant, channel) is expected


@given(name=st.text(max_size=300))
def test_parse_never_raises_anything_else(namespaces: Namespaces, name: str) -> None:
    try:
        channel = namespaces.parse(name)
    except (InvalidChannel, UnknownNamespace):
        return
    assert str(channel) == name
