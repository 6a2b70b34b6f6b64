from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.fallback import ensure_services
from tests.support.live import LiveServer, live_server
from tests.support.redis_cluster import redis_cluster  # noqa: F401 (a session fixture)


def pytest_configure(config: pytest.Config) -> None:
    stack = ExitStack()
    config.add_cleanup(stack.close)
    for started in ensure_services(stack):
        sys.stderr.write(f"tandem tests: no shared service there; started a private {started}\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real node (uvicorn subprocess, SQLite, memory broker) per test module."""
    with live_server(tmp_path_factory.mktemp("node")) as node:
        yield node


@pytest.fixture(scope="module")
def msgpack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("node-msgpack"), {"TANDEM_SERIALIZER": "msgpack"}
    ) as node:
        yield node


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
