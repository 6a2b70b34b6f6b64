"""The lowest and the highest dependency releases pyproject.toml admits install and serve.

Runs .ci/deps_bounds.py (also ``make deps-bounds``): two throwaway venvs, resolved with uv,
each checked with the version check, the pure tests and a ``tandem serve`` smoke. It needs
PyPI; a failed installation fails this test rather than skipping it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_lowest_and_highest_allowed_releases_install_and_serve() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "deps_bounds.py")],
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "lowest: installs" in result.stdout and "highest: installs" in result.stdout
