"""Channel namespaces as configuration.

The built-in namespaces are defined in ``server/channels.toml``; an operator's file, named by
``TANDEM_CHANNELS_FILE``, has the same form and changes their keys or adds namespaces::

    [namespaces.chat]
    subscribe = "any"
    client_publish = true
    presence = true
    history_size = 100
    history_ttl_s = 3600
    recovery = true
    latest_value = ["cursor.moved"]
    max_payload_bytes = 4096

Both are read once, at startup, into the ``Namespaces`` registry that is passed down. A bad
file is a ``ChannelsFileError`` whose message is one line: the file, where (the line of a
syntax error; the namespace and key of a bad setting) and why.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from domain.errors import PayloadTooLarge
from realtime.channels import NAMESPACE_NAME, Access, Channel, ChannelKind, Namespace, Namespaces
from server.config import Settings
from server.payloads import EventName
from server.transport.compact_json import compact_json

# Room for a publish request's envelope around its data (channel, event type, id, framing):
# the Socket.IO packet limit grows by this past a namespace's payload limit above the default.
PUBLISH_OVERHEAD = 1024
_BUILTIN_FILE = "channels.toml"

# Who may subscribe to a built-in namespace is part of what it is: that cannot be changed.
_FIXED_SUBSCRIBE: dict[str, tuple[Access, str]] = {
    ChannelKind.JOB: (Access.OWNER, "the job's owner (and its watch token's grant)"),
    ChannelKind.USER: (Access.OWNER, "the user themself"),
    ChannelKind.DOC: (Access.MEMBER, "the document's members"),
    ChannelKind.ADMIN: (Access.ADMIN, "the admin scope only"),
}
# The modes that only a built-in namespace has, and whose they are.
_OWN_MODES = {
    Access.MEMBER: "'member' (a document's members) is the doc namespace's own",
    Access.ADMIN: "'admin' (the admin scope only) is the admin namespace's own",
}


class ChannelsFileError(Exception):
    """A channels file that cannot be used; the message is one line saying where and why."""


class NamespaceSpec(BaseModel):
    """One ``[namespaces.<name>]`` table; a key left out takes the namespace's default."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    subscribe: Literal["grant", "owner", "any", "member", "admin"] | None = None
    client_publish: bool | None = None
    presence: bool | None = None
    history_size: Annotated[int, Field(ge=0)] | None = None
    history_ttl_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    recovery: bool | None = None
    latest_value: list[EventName] | None = None
    max_payload_bytes: Annotated[int, Field(ge=1)] | None = None


KEYS = tuple(NamespaceSpec.model_fields)


def load_namespaces(settings: Settings) -> Namespaces:
    """The built-in namespaces with ``settings.channels_file`` applied.

    Raises:
        ChannelsFileError: the file cannot be read or is not a valid channels file.
    """
    builtin = resources.files("server").joinpath(_BUILTIN_FILE).read_text(encoding="utf-8")
    specs = _parse(builtin, f"built-in {_BUILTIN_FILE}")
    if settings.channels_file is not None:
        path = settings.channels_file
        where = f"TANDEM_CHANNELS_FILE {path}"
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ChannelsFileError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ChannelsFileError(f"{where}: not UTF-8 text") from None
        for name, spec in _parse(text, where).items():
            _check(name, spec, settings, where)
            base = specs.get(name)
            specs[name] = spec if base is None else _merged(base, spec)
    return Namespaces(_resolve(name, spec, settings) for name, spec in specs.items())


def _parse(text: str, where: str) -> dict[str, NamespaceSpec]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChannelsFileError(_syntax_error(where, str(exc))) from None
    extra = [key for key in document if key != "namespaces"]
    if extra:
        raise ChannelsFileError(
            f"{where}: unknown key {extra[0]!r} at the top; "
            "the file holds [namespaces.<name>] tables"
        )
    tables = document.get("namespaces", {})
    if not isinstance(tables, dict):
        raise ChannelsFileError(
            f"{where}: 'namespaces' must hold [namespaces.<name>] tables, not {_shown(tables)}"
        )
    specs: dict[str, NamespaceSpec] = {}
    for name, table in tables.items():
        if not NAMESPACE_NAME.fullmatch(name):
            raise ChannelsFileError(
                f"{where}: namespace {name!r}: invalid name: 1-32 lowercase letters, digits, "
                "_ and -, starting with a letter"
            )
        if not isinstance(table, dict):
            raise ChannelsFileError(
                f"{where}: namespace {name!r}: must be a table ([namespaces.{name}]), "
                f"not {_shown(table)}"
            )
        try:
            specs[name] = NamespaceSpec.model_validate(table)
        except ValidationError as exc:
            errors = exc.errors()
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ChannelsFileError(f"{where}: {_schema_error(name, errors[0])}{more}") from None
    return specs


def _syntax_error(where: str, message: str) -> str:
    at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if at is not None:
        reason = message[: at.start()]
        return f"{where}, line {at[1]}: invalid TOML: {reason} (column {at[2]})"
    reason = re.sub(r"\s*\(at end of document\)$", "", message)
    return f"{where}, at the end: invalid TOML: {reason}"


def _schema_error(name: str, error: ErrorDetails) -> str:
    loc = error["loc"]
    key = str(loc[0]) if loc else "?"
    kind, value = error["type"], error["input"]
    if kind == "extra_forbidden":
        reason = f"unknown key; the keys are {', '.join(KEYS)}"
    elif key == "subscribe" and kind == "literal_error":
        reason = f"should be 'grant', 'owner' or 'any', not {_shown(value)}"
    elif key == "latest_value" and len(loc) > 1:
        reason = (
            f"{_shown(value)} is not an event type: dotted names of at most 64 characters, "
            "like 'cursor.moved'"
        )
    else:
        reason = f"{error['msg'].removeprefix('Input ')}, not {_shown(value)}"
    return f"namespace {name!r}, key {key!r}: {reason}"


def _check(name: str, spec: NamespaceSpec, settings: Settings, where: str) -> None:
    """What the schema cannot say: the built-ins' fixed semantics, limits that fit."""

    def fail(key: str, reason: str) -> ChannelsFileError:
        return ChannelsFileError(f"{where}: namespace {name!r}, key {key!r}: {reason}")

    if spec.subscribe is not None:
        fixed = _FIXED_SUBSCRIBE.get(name)
        if fixed is not None and spec.subscribe != fixed[0]:
            raise fail(
                "subscribe",
                f"the built-in {name} namespace's subscribers are {fixed[1]} "
                f"({fixed[0].value!r}); that is part of what it is and cannot be "
                f"{spec.subscribe!r}",
            )
        own = _OWN_MODES.get(Access(spec.subscribe))
        if fixed is None and own is not None:
            raise fail("subscribe", f"{own}; use 'grant', 'owner' or 'any'")
    limit = spec.max_payload_bytes
    if limit is not None and limit > settings.max_body_bytes - PUBLISH_OVERHEAD:
        raise fail(
            "max_payload_bytes",
            f"{limit} does not fit an HTTP publish: TANDEM_MAX_BODY_BYTES is "
            f"{settings.max_body_bytes}, less {PUBLISH_OVERHEAD} for the request around it",
        )
    if limit is not None and limit > settings.engine_max_bytes - PUBLISH_OVERHEAD:
        raise fail(
            "max_payload_bytes",
            f"{limit} does not fit a Socket.IO message: TANDEM_ENGINE_MAX_BYTES is "
            f"{settings.engine_max_bytes}, less {PUBLISH_OVERHEAD} for the event around it",
        )


def _merged(base: NamespaceSpec, override: NamespaceSpec) -> NamespaceSpec:
    return base.model_copy(update=override.model_dump(exclude_none=True))


def _resolve(name: str, spec: NamespaceSpec, settings: Settings) -> Namespace:
    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return Namespace(
        name=name,
        subscribe=Access(pick(spec.subscribe, Access.GRANT)),
        client_publish=pick(spec.client_publish, False),
        presence=pick(spec.presence, False),
        history_size=pick(spec.history_size, settings.history_size),
        history_ttl_s=float(pick(spec.history_ttl_s, settings.history_ttl_s)),
        recovery=pick(spec.recovery, True),
        latest_value=frozenset(pick(spec.latest_value, settings.latest_value_events)),
        max_payload_bytes=pick(spec.max_payload_bytes, settings.max_payload_bytes),
    )


def socket_payload_limit(settings: Settings, namespaces: Namespaces) -> int:
    """The Socket.IO event size limit: ``TANDEM_MAX_PAYLOAD_BYTES``, or more where a
    namespace allows larger publications (each namespace's own is checked on publish)."""
    larger = [
        ns.max_payload_bytes + PUBLISH_OVERHEAD
        for ns in namespaces
        if ns.max_payload_bytes > settings.max_payload_bytes
    ]
    return max([settings.max_payload_bytes, *larger])


def _shown(value: Any) -> str:
    """A value as the file wrote it."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool | int | float | str):
        return json.dumps(value)
    return str(value)


def check_payload(channel: Channel, data: Any, transport_limit: int | None = None) -> None:
    """Refuse ``data`` over its namespace's limit, as compact JSON. ``transport_limit``: the
    size of a whole event that the transport refused already; no namespace limit at least
    that large needs measuring."""
    limit = channel.policy.max_payload_bytes
    if transport_limit is not None and limit >= transport_limit:
        return
    try:
        size = len(compact_json(data))
    except TypeError:  # bytes: a binary event's attachments
        size = len(msgpack.packb(data))
    if size > limit:
        raise PayloadTooLarge(f"data is over the {limit}-byte limit of {channel.kind}: channels")
