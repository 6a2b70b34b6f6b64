from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.protocol.conformance.targets import Target, echo_target, tandem_target


@pytest.fixture(scope="session")
def tandem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with tandem_target(tmp_path_factory.mktemp("conformance-tandem")) as target:
        yield target


@pytest.fixture(scope="session")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with echo_target(tmp_path_factory.mktemp("conformance-echo")) as target:
        yield target


@pytest.fixture(params=["tandem", "echo"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each server in turn, for the tests that apply to both."""
    found: Target = request.getfixturevalue(request.param)
    return found
