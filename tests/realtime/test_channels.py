from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from realtime.channels import (
    Channel,
    ChannelKind,
    InvalidChannel,
    grant_matches,
    job_channel,
    parse_channel,
    user_channel,
)


@pytest.mark.parametrize(
    ("name", "kind", "ident"),
    [("job:42", ChannelKind.JOB, "42"), ("user:alice@x.org", ChannelKind.USER, "alice@x.org")],
)
def test_parse_known_channels(name: str, kind: ChannelKind, ident: str) -> None:
    channel = parse_channel(name)
    assert channel == Channel(kind, ident)
    assert str(channel) == name


def test_builders_round_trip() -> None:
    assert parse_channel(job_channel("7")).kind is ChannelKind.JOB
    assert str(parse_channel(user_channel("bob"))) == "user:bob"


@pytest.mark.parametrize(
    "name", ["job", "job:", "job:../etc", "job:a b", "job:" + "x" * 200, ":42", "job:*", 42, None]
)
def test_invalid_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidChannel) as info:
        parse_channel(name)
    assert not info.value.unknown_kind


def test_unknown_kind_is_flagged() -> None:
    with pytest.raises(InvalidChannel) as info:
        parse_channel("chat:1")
    assert info.value.unknown_kind


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


@given(st.text(max_size=300))
def test_parse_never_raises_anything_else(name: str) -> None:
    try:
        channel = parse_channel(name)
    except InvalidChannel:
        return
    assert str(channel) == name
