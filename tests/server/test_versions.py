"""The library releases Tandem's transport supports: declared, installed, enforced."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server import cli
from server.versions import SUPPORTED, unsupported

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_admits_exactly_the_supported_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([a-z-]+)(?:\[[a-z,]+\])?>=([\d.]+),<([\d.]+)", requirement)
        if found and found.group(1) in SUPPORTED:
            declared[found.group(1)] = (found.group(2), found.group(3))
    assert declared == dict(SUPPORTED)


def test_the_installed_releases_are_supported() -> None:
    assert unsupported() == []


def test_a_release_outside_the_range_is_named_with_the_fix() -> None:
    releases = {"websockets": "18.0", "uvicorn": "0.53.2"}

    def installed(name: str) -> str:
        if name not in releases:
            raise metadata.PackageNotFoundError(name)
        return releases[name]

    assert unsupported(installed) == [
        "uvicorn 0.53.2 is not supported; Tandem runs on >=0.54,<0.55 "
        "(pip install 'uvicorn>=0.54,<0.55')",
        "websockets 18.0 is not supported; Tandem runs on >=17.4,<18 "
        "(pip install 'websockets>=17.4,<18')",
    ]
    del releases["uvicorn"]
    assert unsupported(installed)[0] == "uvicorn is not installed; Tandem needs >=0.54,<0.55"
    # Pre-releases and local versions of a supported line are that line.
    releases.update({"websockets": "17.5rc1", "uvicorn": "0.54.1+local"})
    assert unsupported(installed) == []


def test_serve_refuses_to_start_on_an_unsupported_release(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = "websockets 18.0 is not supported; Tandem runs on >=17.4,<18"
    monkeypatch.setattr(cli, "unsupported", lambda: [problem])
    result = CliRunner().invoke(cli.cli, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == problem
