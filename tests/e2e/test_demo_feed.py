"""`tandem demo`: the simulated airport is realistic and reproducible; the command is bounded."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from server.demo.airport import HUB, Airport
from tests.support.live import API_KEY, LiveServer, free_port, server_env

START = datetime(2026, 11, 23, 8, tzinfo=UTC)
SPAN = timedelta(hours=4)
# Who may follow whom: a flight never goes back to an earlier stage.
NEXT = {
    "scheduled": {"delayed", "boarding", "cancelled", "departed"},
    "delayed": {"boarding", "cancelled", "departed"},
    "boarding": {"departed", "cancelled"},
    "departed": {"landed", "diverted"},
}


def simulate(seed: int, count: int = 50) -> tuple[Airport, list[tuple[str, dict[str, object]]]]:
    airport = Airport(random.Random(seed), START, count, SPAN)
    log = []
    now = START
    while now < START + SPAN + timedelta(hours=8):
        for flight, fields, _ in airport.step(now):
            log.append((flight.id, fields))
        now += timedelta(minutes=2)
    return airport, log


def test_the_same_seed_replays_the_same_day() -> None:
    first, second, other = simulate(5), simulate(5), simulate(6)
    assert first[1] == second[1]
    assert [f.id for f in first[0].flights] != [f.id for f in other[0].flights]


def test_flights_move_through_a_realistic_day() -> None:
    airport, log = simulate(11, count=200)
    assert len({f.id for f in airport.flights}) == 200
    assert all(f.std >= START - timedelta(minutes=25) for f in airport.flights)
    final = {f.id: f.status for f in airport.flights}
    assert set(final.values()) <= {"landed", "cancelled", "diverted"}
    assert list(final.values()).count("landed") > 150
    for flight in airport.flights:
        statuses = [
            fields["status"] for fid, fields in log if fid == flight.id and "status" in fields
        ]
        for before, after in zip(["scheduled", *statuses], statuses, strict=False):
            assert after in NEXT.get(str(before), set()) or before == after == "delayed", (
                flight.id,
                statuses,
            )
    updates = [fields for _, fields in log]
    delays = [u for u in updates if u.get("status") == "delayed"]
    assert delays and all(
        u["estimated_departure"] > START - timedelta(hours=1) and int(u["delay_minutes"]) > 0  # type: ignore[operator, call-overload]
        for u in delays
    )
    assert any(set(u) == {"gate"} for u in updates)  # gate changes on their own
    positions = [u["position"] for u in updates if set(u) == {"position"}]
    assert len(positions) > 1000
    assert all(0 <= p["altitude"] <= 11_000 for p in positions)  # type: ignore[index]
    assert {f.destination for f in airport.flights} - {HUB}


def tandem_demo(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "demo", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_is_bounded_and_checks_its_options(server: LiveServer, tmp: Path) -> None:
    env = server_env(tmp)
    started = time.monotonic()
    done = tandem_demo(
        "--url", server.url, "--api-key", API_KEY, "--duration", "2", "--flights", "5",
        env=env, cwd=tmp,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20
    assert "done:" in done.stdout and "0 errors" in done.stdout
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        assert len(api.get("/api/flights", params={"origin": HUB}).json()["flights"]) >= 5
    refused = tandem_demo("--url", server.url, "--api-key", "wrong", env=env, cwd=tmp)
    assert refused.returncode == 1 and "refused" in refused.stderr
    nobody = tandem_demo("--url", f"http://127.0.0.1:{free_port()}", env=env, cwd=tmp)
    assert nobody.returncode == 1
    for bad in (["--flights", "0"], ["--duration", "-1"], ["--speed", "0"]):
        invalid = tandem_demo("--url", server.url, *bad, env=env, cwd=tmp)
        assert invalid.returncode == 2 and "invalid option" in invalid.stderr, bad
