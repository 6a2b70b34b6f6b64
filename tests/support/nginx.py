"""The repository's nginx config, run with the machine's nginx on loopback (Docker cannot)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.live import ROOT, free_port

TEMPLATE = ROOT / "server" / "deploy" / "nginx.conf.template"


def render(listen: int, upstreams: Sequence[str]) -> str:
    servers = " ".join(f"server {address} max_fails=1 fail_timeout=5s;" for address in upstreams)
    return (
        TEMPLATE.read_text()
        .replace("${TANDEM_UPSTREAM_SERVERS}", servers)
        .replace("${TANDEM_LISTEN}", f"127.0.0.1:{listen}")
    )


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def nginx(workdir: Path, upstreams: Sequence[str]) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is required for these tests (make installs nginx-light)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (workdir / "tandem.conf").write_text(render(port, upstreams))
    temp = {name: workdir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (workdir / "nginx.conf").write_text(
        f"""
daemon off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {workdir / "tandem.conf"};
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = Nginx(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{proxy.url}/health/live", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log = (
                        (workdir / "error.log").read_text()
                        if (workdir / "error.log").exists()
                        else ""
                    )
                    raise RuntimeError(f"nginx did not start:\n{log}") from None
                time.sleep(0.05)
        yield proxy
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
