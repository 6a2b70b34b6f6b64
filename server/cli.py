"""``tandem``: serve, migrate, token, keys, publish, demo."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
import uvicorn
from pydantic import ValidationError

from server import cli_keys as keys_cli
from server.auth.tokens import mint_token
from server.config import Settings
from server.logs import configure_logging
from server.namespaces import ChannelsFileError
from server.transport.websocket import WebSocketProtocol
from server.versions import unsupported
from storage.migrate import upgrade

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Tandem real-time server.")
cli.add_typer(keys_cli.app, name="keys")


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


class DrainingServer(uvicorn.Server):
    """Tells every client to reconnect (``server.notice`` shutdown) before uvicorn closes."""

    def __init__(self, config: uvicorn.Config, drain: Any) -> None:
        super().__init__(config)
        self._drain = drain

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        # Only now is the port bound (uvicorn starts the application first).
        if self.started:
            log = logging.getLogger("server.app")
            log.info("tandem node listening on %s:%s", self.config.host, self.config.port)

    async def shutdown(self, sockets: Any = None) -> None:
        try:
            await self._drain()
        except Exception:
            logging.getLogger(__name__).exception("drain failed")
        await super().shutdown(sockets)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (0 picks a free one).")] = None,
    migrate: Annotated[
        bool | None, typer.Option(help="Run migrations first (default: on for SQLite).")
    ] = None,
) -> None:
    """Run one node."""
    from server.app import create_app

    settings = load_settings(host=host, port=port)
    problems = unsupported()
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        raise typer.Exit(2)
    configure_logging(settings.log_level, json_lines=not settings.is_development)
    refused = _refused_broker(settings.broker_url)
    if refused:
        typer.echo(f"TANDEM_BROKER_URL: {refused}", err=True)
        raise typer.Exit(2)
    try:
        app = create_app(settings)  # constructs; nothing connects before the server starts
    except ChannelsFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if migrate if migrate is not None else settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # Tandem's own websocket protocol (server.transport.websocket): the fan-out writes frames.
        ws=WebSocketProtocol,
        # Compressing each message for each recipient would cost more CPU than all the rest
        # of a delivery (Node's socket.io turns it off by default for the same reason).
        ws_per_message_deflate=False,
        lifespan="on",
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        ws_max_size=settings.engine_max_bytes,
        # Engine.IO pings every client already; a second, websocket-level ping would cost a
        # timer per connection (~0.5 KiB) and wake-ups for nothing.
        ws_ping_interval=None,
        proxy_headers=True,
        # uvicorn's own loggers go through the handler configured above.
        log_config=None,
    )
    tune_garbage_collector()
    server = DrainingServer(config, app.runtime.gateway.drain)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind, after logging why
        if exc.code:
            typer.echo(f"tandem could not listen on {settings.host}:{settings.port}", err=True)
            raise typer.Exit(1) from None
        raise


def _refused_broker(url: str) -> str | None:
    """Why a Redis broker URL cannot work with the server it names, in one line (the broker
    checks the same when it starts; here it stops ``tandem serve`` without a traceback)."""
    if urlsplit(url).scheme not in ("redis", "rediss"):
        return None
    from realtime.redis_connection import RedisConfigError, RedisTarget, check_server

    try:
        asyncio.run(check_server(RedisTarget.parse(url)))
    except RedisConfigError as exc:
        return str(exc)
    return None


def tune_garbage_collector() -> None:
    """Keep the cyclic collector's pauses short on a node that holds many connections.

    Full collections walk every tracked object: with 1,000 clients (~200 objects each) they
    took 120-290 ms on this machine, every few seconds under load, and were the whole p99 of
    bench.jobs. What imports and startup built (~160k objects) lives as long as the process, so
    it is frozen out of the collector's sight. And a young collection every 700 allocations
    promoted everything merely in flight (a request, a batch) to the old generation, which
    grew it fast enough to trigger a full collection every 4-10 s; every 10,000 allocations,
    what is promoted has really lived. bench.jobs at 500 updates/s: no full collection in 40 s
    (young ones 10-20 ms), p99 22 ms and max 126 ms instead of 35-56 ms and 220-490 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic)."""
    settings = load_settings()
    upgrade(settings.database_url)
    typer.echo("database is up to date")


@cli.command()
def token(
    sub: Annotated[str, typer.Option(help="User id (the token's 'sub').")],
    channel: Annotated[
        list[str] | None, typer.Option(help="Grant a channel or 'prefix:*'; repeatable.")
    ] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.", min=1)] = 3600,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    admin: Annotated[bool, typer.Option(help="Grant the admin scope.")] = False,
    doc: Annotated[
        list[str] | None,
        typer.Option(help="Grant a document: 'ID' or 'prefix*' (editor), 'ID=viewer'; repeatable."),
    ] = None,
) -> None:
    """Print a signed user token (for development and scripts)."""
    settings = load_settings()
    docs: dict[str, str] = {}
    for grant in doc or []:
        pattern, _, role = grant.partition("=")
        if role not in ("", "editor", "viewer"):
            raise typer.BadParameter(f"{grant!r}: the role is 'editor' or 'viewer'")
        docs[pattern] = role or "editor"
    value, _ = mint_token(
        settings,
        sub=sub,
        ttl_s=ttl,
        channels=channel or [],
        name=name,
        scope="admin" if admin else None,
        docs=docs,
    )
    typer.echo(value)


@cli.command()
def publish(
    channel: str,
    event: str,
    data: Annotated[str, typer.Argument(help="JSON data, e.g. '{\"progress\": 40}'.")] = "null",
    url: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(help="API key (default: from settings).")] = None,
) -> None:
    """Publish an event through a running server's HTTP API."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        typer.echo(f"data is not valid JSON: {exc}", err=True)
        raise typer.Exit(2) from None
    keys = load_settings().effective_api_keys()
    key = api_key or (keys[0] if keys else None)
    if key is None:
        typer.echo("no API key: pass --api-key or set TANDEM_API_KEYS", err=True)
        raise typer.Exit(2)
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/api/publish",
            json={"channel": channel, "event": event, "data": payload},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach Tandem at {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(response.text)
    if response.is_error:
        raise typer.Exit(1)


@cli.command()
def demo(
    url: Annotated[str, typer.Option(help="Server base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(help="API key (default: from settings).")] = None,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds.")] = 120.0,
    flights: Annotated[int, typer.Option(help="Departures on the board (1-200).")] = 50,
    seed: Annotated[int, typer.Option(help="Same seed, same simulated day.")] = 1,
    speed: Annotated[float, typer.Option(help="Simulated minutes per real second.")] = 2.0,
    tick: Annotated[float, typer.Option(help="Seconds between updates.")] = 1.0,
) -> None:
    """Feed a running server with simulated flights, notifications and jobs (/demo/board)."""
    import asyncio

    from client_sdk import TandemError
    from server.demo.airport import FeedOptions, run_feed

    keys = load_settings().effective_api_keys()
    key = api_key or (keys[0] if keys else None)
    if key is None:
        typer.echo("no API key: pass --api-key or set TANDEM_API_KEYS", err=True)
        raise typer.Exit(2)
    try:
        options = FeedOptions(
            url=url.rstrip("/"),
            api_key=key,
            duration_s=duration,
            flights=flights,
            seed=seed,
            speed=speed,
            tick_s=tick,
        )
    except ValueError as exc:
        typer.echo(f"invalid option: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"feeding {url} for {duration:g}s: {flights} flights; board at {url}/demo/board")
    try:
        stats = asyncio.run(run_feed(options))
    except TandemError as exc:
        typer.echo(f"the server refused the feed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"done: {stats.summary()}")


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmark against python-socketio and Node socket.io (bench/; `tandem bench --help`)."""
    # A subprocess, not an import: bench/ lives in the source checkout, outside the package.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "cli.py").is_file():
        typer.echo("tandem bench needs the source checkout (its bench/ directory)", err=True)
        raise typer.Exit(2)
    command = [sys.executable, "-m", "bench", *ctx.args]
    raise typer.Exit(subprocess.run(command, cwd=root, check=False).returncode)


def main() -> None:
    cli(prog_name="tandem")


if __name__ == "__main__":  # pragma: no cover
    main()
