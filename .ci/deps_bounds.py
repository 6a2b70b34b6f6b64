"""Install Tandem with the lowest and the highest dependency releases pyproject.toml allows.

For each bound this makes a throwaway virtualenv, installs Tandem (with its redis and postgres
extras) into it with ``uv`` (``--resolution lowest-direct`` for the lowest; a plain resolve that
ignores constraints.txt for the highest), and then checks that the install works:

* ``server.versions.unsupported()`` finds nothing wrong (what ``tandem serve`` checks first);
* the suite's pure tests (domain, the version check) pass against these releases;
* ``tandem serve`` starts on a free port (SQLite, memory broker), a Socket.IO client connects
  with a token, subscribes, and receives an event published over HTTP; the node stops on
  SIGTERM, sent to its PID.

The client runs in the interpreter running this script (the project's dev venv): only the
server side is what the bounds are about. Any failure, installation included, exits non-zero.

    python .ci/deps_bounds.py [lowest|highest ...]
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Pinned so that the same pyproject.toml always resolves the same way.
UV = "uv==0.13.9"
SECRET = "deps-bounds-secret-0123456789abcdef0123456789"
API_KEY = "deps-bounds-api-key"
RESOLUTIONS = {"lowest": ["--resolution", "lowest-direct"], "highest": []}
STEP_TIMEOUT_S = 120.0
CONSTRAINT_VARIABLES = {"UV_CONSTRAINT", "UV_OVERRIDE", "UV_BUILD_CONSTRAINT", "PIP_CONSTRAINT"}
# Cheap tests that import the dependencies without services or subprocess nodes.
TESTS = ["tests/domain", "tests/server/test_versions.py"]
TEST_TOOLS = ["pytest", "pytest-asyncio", "pytest-timeout", "hypothesis"]


def say(message: str) -> None:
    print(f"deps-bounds: {message}", flush=True)  # noqa: T201 (this is a command-line tool)


def run(args: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False, **options
    )
    if result.returncode != 0:
        raise SystemExit(
            f"deps-bounds: failed ({result.returncode}): {' '.join(args)}\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def install_uv(work: Path) -> Path:
    run([sys.executable, "-m", "venv", str(work / "uv")])
    run([str(work / "uv" / "bin" / "python"), "-m", "pip", "install", "--quiet", UV])
    return work / "uv" / "bin" / "uv"


def install(uv: Path, venv: Path, bound: str) -> None:
    # The throwaway venvs get the interpreter running this script, so both bounds are
    # resolved for the Python the suite runs on.
    run([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)])
    run(
        [str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
        + RESOLUTIONS[bound]
        + [f"{ROOT}[redis,postgres]"],
        # The bounds are pyproject.toml's alone: no constraints from the caller's environment.
        env={k: v for k, v in os.environ.items() if k not in CONSTRAINT_VARIABLES},
    )
    frozen = run([str(uv), "pip", "freeze", "--python", str(venv / "bin" / "python")]).stdout
    say(f"{bound}: " + " ".join(line for line in frozen.split() if "==" in line))


def check_versions(venv: Path, cwd: Path) -> None:
    code = (
        "from server.versions import unsupported\n"
        "problems = unsupported()\n"
        "assert not problems, problems\n"
    )
    # Run outside the source tree, so the installed package is what is imported.
    run([str(venv / "bin" / "python"), "-c", code], cwd=cwd)


def run_tests(uv: Path, venv: Path) -> None:
    """The cheap tests, with the test tools at the versions constraints.txt pins.

    Only the tools are pinned, one by one: installing with the whole constraints file would
    move the runtime dependencies off the bound under test.
    """
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.strip().lower()] = version.strip()
    tools = [f"{tool}=={pins[tool]}" for tool in TEST_TOOLS]
    python = str(venv / "bin" / "python")
    run([str(uv), "pip", "install", "--quiet", "--python", python, *tools])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    result = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env
    )
    say(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def smoke(venv: Path, tmp: Path) -> None:
    """Start ``tandem serve`` from the venv, deliver one publication, stop it by PID."""
    import httpx
    import jwt

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_") and k != "PYTHONPATH"}
    env |= {
        "TANDEM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'tandem.db'}",
        "TANDEM_BROKER_URL": "memory://",
        "TANDEM_JWT_SECRET": SECRET,
        "TANDEM_API_KEYS": API_KEY,
        "TANDEM_LOG_LEVEL": "warning",
    }
    log_path = tmp / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "tandem"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise SystemExit(f"deps-bounds: tandem serve exited:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"deps-bounds: not ready in 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        now = time.time()
        token = jwt.encode(
            {"sub": "smoke", "iat": int(now), "exp": now + 600, "channels": ["room:*"]},
            SECRET,
            algorithm="HS256",
        )
        asyncio.run(_deliver(url, token))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    # uvicorn re-raises the signal it stopped on once it has shut down cleanly.
    if process.returncode not in (0, -signal.SIGTERM):
        raise SystemExit(
            f"deps-bounds: tandem serve exited {process.returncode} on SIGTERM:\n"
            f"{log_path.read_text()}"
        )


async def _deliver(url: str, token: str) -> None:
    import httpx
    import socketio

    received: asyncio.Queue[Any] = asyncio.Queue()
    client = socketio.AsyncClient(reconnection=False)
    client.on("smoke.hello", received.put)
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    try:
        ack = await client.call("subscribe", {"channel": "room:smoke"}, timeout=10)
        assert ack.get("ok"), ack
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            response = await http.post(
                "/api/publish",
                json={"channel": "room:smoke", "event": "smoke.hello", "data": {"n": 1}},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
        assert response.status_code == 200, response.text
        async with asyncio.timeout(10):
            envelope = await received.get()
        assert envelope["channel"] == "room:smoke" and envelope["data"] == {"n": 1}, envelope
    finally:
        await client.disconnect()
        await client.shutdown()


def main(bounds: list[str]) -> None:
    unknown = set(bounds) - set(RESOLUTIONS)
    if unknown:
        raise SystemExit(f"usage: deps_bounds.py [{'|'.join(RESOLUTIONS)} ...]")
    with tempfile.TemporaryDirectory(prefix="tandem-deps-") as name:
        work = Path(name)
        started = time.monotonic()
        uv = install_uv(work)
        for bound in bounds or list(RESOLUTIONS):
            venv, tmp = work / f"venv-{bound}", work / f"run-{bound}"
            tmp.mkdir()
            install(uv, venv, bound)
            check_versions(venv, tmp)
            run_tests(uv, venv)
            smoke(venv, tmp)
            say(f"{bound}: installs, passes the version check, serves a publication")
        say(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
