"""The releases of the libraries whose internals Tandem's transport builds on.

The websocket fast path and the Socket.IO server subclass python-engineio, python-socketio
and uvicorn beneath their public API (server/fastpath.py, socket_server.py, ws_protocol.py):
a release the suite has not run against may change what they rely on. ``pyproject.toml``
admits only these ranges, and ``tandem serve`` refuses to start outside them rather than fail
later, on a client's packet.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib import metadata

# distribution -> (lowest supported, first unsupported); pyproject.toml states the same.
SUPPORTED: Mapping[str, tuple[str, str]] = {
    "python-engineio": ("4.15.1", "4.16"),
    "python-socketio": ("5.18.1", "5.19"),
    "uvicorn": ("0.54", "0.55"),
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
