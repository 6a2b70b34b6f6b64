"""Channel namespaces from configuration: the built-in ones, an operator's file, bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realtime.broker import Retention
from realtime.channels import Access, ChannelKind, Namespace, UnknownNamespace
from server.config import Settings
from server.namespaces import ChannelsFileError, load_namespaces, socket_payload_limit
from tests.support.live import ROOT

CHAT = """\
# chat rooms anyone may join
[namespaces.chat]
subscribe = "any"
client_publish = true
presence = true
history_size = 100
history_ttl_s = 3600
recovery = true
latest_value = ["cursor.moved"]
max_payload_bytes = 4096

[namespaces.room]
history_size = 10

[namespaces.private]
"""


def settings_with(tmp_path: Path, text: str | None, **values: object) -> Settings:
    path = None
    if text is not None:
        path = tmp_path / "channels.toml"
        path.write_text(text)
    return Settings(channels_file=path, **values)  # type: ignore[arg-type]


def failure(tmp_path: Path, text: str, **values: object) -> str:
    settings = settings_with(tmp_path, text, **values)
    with pytest.raises(ChannelsFileError) as info:
        load_namespaces(settings)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"TANDEM_CHANNELS_FILE {tmp_path / 'channels.toml'}"
    assert message.startswith(prefix)
    return message[len(prefix) :]


def test_the_built_in_namespaces_take_their_numbers_from_the_settings(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, None, history_size=50, history_ttl_s=60, latest_value_events="a.b"
    )
    namespaces = load_namespaces(settings)
    assert [ns.name for ns in namespaces] == [kind.value for kind in ChannelKind]
    assert namespaces[ChannelKind.USER] == Namespace(
        name="user",
        subscribe=Access.OWNER,
        client_publish=False,
        presence=True,
        history_size=50,
        history_ttl_s=60.0,
        recovery=True,
        latest_value=frozenset({"a.b"}),
        max_payload_bytes=64 * 1024,
    )
    policies = {ns.name: (ns.subscribe.value, ns.client_publish, ns.presence) for ns in namespaces}
    assert policies == {
        "job": ("owner", False, False),
        "user": ("owner", False, True),
        "flight": ("any", False, False),
        "airport": ("any", False, False),
        "doc": ("member", True, True),
        "room": ("grant", True, True),
        "admin": ("admin", False, False),
    }


def test_a_file_adds_namespaces_and_changes_built_in_ones_key_by_key(tmp_path: Path) -> None:
    namespaces = load_namespaces(settings_with(tmp_path, CHAT))
    chat = namespaces["chat"]
    assert chat == Namespace(
        name="chat",
        subscribe=Access.ANY,
        client_publish=True,
        presence=True,
        history_size=100,
        history_ttl_s=3600.0,
        recovery=True,
        latest_value=frozenset({"cursor.moved"}),
        max_payload_bytes=4096,
    )
    room = namespaces["room"]
    assert (room.history_size, room.subscribe, room.client_publish, room.presence) == (
        10,
        Access.GRANT,
        True,
        True,
    )
    # A new namespace's defaults: the generic behaviour, and nothing more.
    private = namespaces["private"]
    assert (private.subscribe, private.client_publish, private.presence, private.recovery) == (
        Access.GRANT,
        False,
        False,
        True,
    )
    assert private.latest_value == {"job.progress", "flight.position"}
    assert namespaces.retention("chat:x") == Retention(100, 3600.0, True)
    assert namespaces.retention("nope:x") is None
    assert namespaces.latest_value("chat:lobby") == {"cursor.moved"}
    assert str(namespaces.parse("chat:lobby")) == "chat:lobby"
    with pytest.raises(UnknownNamespace) as info:
        namespaces.parse("forum:1")
    assert info.value.message == (
        "unknown channel kind 'forum'; known kinds: "
        "job, user, flight, airport, doc, room, admin, chat, private"
    )


def test_the_readmes_example_file_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Channel namespaces") :]
    example = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    namespaces = load_namespaces(settings_with(tmp_path, example[1]))
    assert namespaces["chat"].latest_value == {"cursor.moved"}
    assert namespaces["flight"].history_size == 1000
    assert namespaces["flight"].subscribe is Access.ANY


def test_the_socket_limit_grows_only_for_a_namespace_above_the_default(tmp_path: Path) -> None:
    small = settings_with(tmp_path, CHAT)
    assert socket_payload_limit(small, load_namespaces(small)) == 64 * 1024
    big = settings_with(tmp_path, "[namespaces.big]\nmax_payload_bytes = 200000\n")
    assert socket_payload_limit(big, load_namespaces(big)) == 200_000 + 1024


def test_an_empty_setting_means_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_CHANNELS_FILE", "")
    assert Settings().channels_file is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[namespaces.chat]\nsubscribe = "any"\nhistory_size 100\n',
            ", line 3: invalid TOML: Expected '=' after a key in a key/value pair (column 14)",
        ),
        (
            "[namespaces.chat]\nlatest_value = [\n",
            ", at the end: invalid TOML: Invalid value",
        ),
        (
            "[namespaces.chat]\n[namespaces.chat]\n",
            ", line 2: invalid TOML: Cannot declare ('namespaces', 'chat') twice (column 17)",
        ),
    ],
)
def test_a_syntax_error_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    assert failure(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys
        (
            "[namespaces.chat]\nhistroy_size = 10\n",
            ": namespace 'chat', key 'histroy_size': unknown key; the keys are subscribe, "
            "client_publish, presence, history_size, history_ttl_s, recovery, latest_value, "
            "max_payload_bytes",
        ),
        (
            "[namespace.chat]\npresence = true\n",
            ": unknown key 'namespace' at the top; the file holds [namespaces.<name>] tables",
        ),
        # wrong types
        (
            '[namespaces.chat]\nhistory_size = "ten"\n',
            ": namespace 'chat', key 'history_size': should be a valid integer, not \"ten\"",
        ),
        (
            '[namespaces.chat]\nclient_publish = "yes"\n',
            ": namespace 'chat', key 'client_publish': should be a valid boolean, not \"yes\"",
        ),
        (
            "[namespaces.chat]\nhistory_size = 1.5\n",
            ": namespace 'chat', key 'history_size': should be a valid integer, not 1.5",
        ),
        (
            '[namespaces.chat]\nlatest_value = "cursor.moved"\n',
            ": namespace 'chat', key 'latest_value': should be a valid list, not \"cursor.moved\"",
        ),
        (
            "[namespaces]\nchat = 3\n",
            ": namespace 'chat': must be a table ([namespaces.chat]), not 3",
        ),
        ("namespaces = 3\n", ": 'namespaces' must hold [namespaces.<name>] tables, not 3"),
        # bad values
        (
            "[namespaces.chat]\nhistory_size = -1\n",
            ": namespace 'chat', key 'history_size': should be greater than or equal to 0, not -1",
        ),
        (
            "[namespaces.chat]\nhistory_ttl_s = inf\n",
            ": namespace 'chat', key 'history_ttl_s': should be a finite number, not Infinity",
        ),
        (
            "[namespaces.chat]\nmax_payload_bytes = 0\n",
            ": namespace 'chat', key 'max_payload_bytes': should be greater than or equal to 1, "
            "not 0",
        ),
        (
            '[namespaces.chat]\nsubscribe = "everyone"\n',
            ": namespace 'chat', key 'subscribe': should be 'grant', 'owner' or 'any', "
            'not "everyone"',
        ),
        (
            '[namespaces.chat]\nlatest_value = ["cursor.moved", "moved"]\n',
            ": namespace 'chat', key 'latest_value': \"moved\" is not an event type: dotted "
            "names of at most 64 characters, like 'cursor.moved'",
        ),
        (
            "[namespaces.Chat]\n",
            ": namespace 'Chat': invalid name: 1-32 lowercase letters, digits, _ and -, "
            "starting with a letter",
        ),
        (
            "[namespaces.big]\nmax_payload_bytes = 2000000\n",
            ": namespace 'big', key 'max_payload_bytes': 2000000 does not fit an HTTP publish: "
            "TANDEM_MAX_BODY_BYTES is 1048576, less 1024 for the request around it",
        ),
        # the built-ins' semantics
        (
            '[namespaces.job]\nsubscribe = "any"\n',
            ": namespace 'job', key 'subscribe': the built-in job namespace's subscribers are "
            "the job's owner (and its watch token's grant) ('owner'); that is part of what it "
            "is and cannot be 'any'",
        ),
        (
            '[namespaces.user]\nsubscribe = "grant"\n',
            ": namespace 'user', key 'subscribe': the built-in user namespace's subscribers are "
            "the user themself ('owner'); that is part of what it is and cannot be 'grant'",
        ),
        (
            '[namespaces.doc]\nsubscribe = "any"\n',
            ": namespace 'doc', key 'subscribe': the built-in doc namespace's subscribers are "
            "the document's members ('member'); that is part of what it is and cannot be 'any'",
        ),
        (
            '[namespaces.chat]\nsubscribe = "member"\n',
            ": namespace 'chat', key 'subscribe': 'member' (a document's members) is the doc "
            "namespace's own; use 'grant', 'owner' or 'any'",
        ),
        (
            '[namespaces.ops]\nsubscribe = "admin"\n',
            ": namespace 'ops', key 'subscribe': 'admin' (the admin scope only) is the admin "
            "namespace's own; use 'grant', 'owner' or 'any'",
        ),
        (
            '[namespaces.admin]\nsubscribe = "grant"\n',
            ": namespace 'admin', key 'subscribe': the built-in admin namespace's subscribers are "
            "the admin scope only ('admin'); that is part of what it is and cannot be 'grant'",
        ),
    ],
)
def test_a_bad_setting_names_the_namespace_and_key(tmp_path: Path, text: str, message: str) -> None:
    assert failure(tmp_path, text) == message


def test_more_problems_are_counted_on_the_same_line(tmp_path: Path) -> None:
    text = '[namespaces.chat]\npresence = 1\nrecovery = "no"\nhistory_size = -5\n'
    assert failure(tmp_path, text) == (
        ": namespace 'chat', key 'presence': should be a valid boolean, not 1 (and 2 more)"
    )


def test_a_file_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    missing = Settings(channels_file=tmp_path / "missing.toml")
    with pytest.raises(ChannelsFileError) as info:
        load_namespaces(missing)
    assert str(info.value) == (
        f"TANDEM_CHANNELS_FILE {tmp_path / 'missing.toml'}: cannot read it: "
        "No such file or directory"
    )


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_bytes(b"[namespaces.caf\xe9]\n")
    with pytest.raises(ChannelsFileError) as info:
        load_namespaces(Settings(channels_file=path))
    assert str(info.value) == f"TANDEM_CHANNELS_FILE {path}: not UTF-8 text"
