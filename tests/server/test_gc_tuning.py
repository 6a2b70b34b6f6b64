"""`tandem serve` keeps GC pauses short (checked in a child: it changes the process)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.live import ROOT


def test_startup_objects_are_frozen_and_young_collections_are_rarer() -> None:
    script = (
        "import gc, server.cli as cli; cli.tune_garbage_collector(); "
        "print(gc.get_freeze_count(), gc.get_threshold()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    frozen, threshold = int(out[0]), int(out[1])
    assert frozen > 50_000  # the imports alone: the server, FastAPI, SQLAlchemy, socketio
    assert threshold == 10_000
