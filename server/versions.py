"""The releases of the libraries Tandem's transport is built on.

uvicorn hands websocket upgrades to the protocol class given as its ``ws`` setting
(server/transport/websocket.py), constructed with its config and server state; the protocol
speaks RFC 6455 through websockets' sans-I/O ``ServerProtocol``. Both are public, but the
constructor's arguments and the server state's fields are a contract between uvicorn's own
protocols that a release may change: ``pyproject.toml`` admits only the releases the suite
has run against, and ``tandem serve`` refuses to start outside them rather than fail later,
on a client's handshake.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib import metadata

# distribution -> (lowest supported, first unsupported); pyproject.toml states the same.
SUPPORTED: Mapping[str, tuple[str, str]] = {
    "uvicorn": ("0.54", "0.55"),
    "websockets": ("17.4", "18"),
}


def unsupported(installed: Callable[[str], str] = metadata.version) -> list[str]:
    """One line per library whose installed release is outside its supported range."""
    problems = []
    for name, (lowest, beyond) in SUPPORTED.items():
        try:
            version = installed(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed; Tandem needs >={lowest},<{beyond}")
            continue
        if not _release(lowest) <= _release(version) < _release(beyond):
            problems.append(
                f"{name} {version} is not supported; Tandem runs on >={lowest},<{beyond} "
                f"(pip install '{name}>={lowest},<{beyond}')"
            )
    return problems


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version (``4.15.1rc1`` -> (4, 15, 1)), padded for comparing."""
    numbers = [int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))
