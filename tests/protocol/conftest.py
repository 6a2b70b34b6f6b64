from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.live import LiveServer, live_server

# A long-polling client that has gone leaves its last GET open on the server (python-engineio
# answers it only after ping_interval + ping_timeout), and uvicorn's graceful shutdown then waits
# the whole TANDEM_SHUTDOWN_TIMEOUT_S. test_bad_input.py::test_polling_close_answers_pending_get
# pins that bug down; here the nodes are only told to give up sooner, so the folder stays fast.
FAST_STOP = {"TANDEM_SHUTDOWN_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("node"), FAST_STOP) as node:
        yield node


@pytest.fixture(scope="module")
def msgpack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("node-msgpack"), {**FAST_STOP, "TANDEM_SERIALIZER": "msgpack"}
    ) as node:
        yield node
