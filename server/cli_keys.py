"""``tandem keys``: named, scoped API keys, straight in the database (no server needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from domain.api_keys import SCOPES, ApiKey
from domain.errors import DomainError
from server.auth.api_keys import KeyRing
from server.config import Settings
from storage.database import Database
from storage.migrate import upgrade

T = TypeVar("T")

app = typer.Typer(
    no_args_is_help=True,
    help="Create, list, rotate and revoke API keys.\n\nScopes: "
    + "; ".join(f"{name}: {what}" for name, what in SCOPES.items())
    + "; publish:<channel or prefix*>: publish there.",
)


def _run(settings: Settings, work: Callable[[KeyRing], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(settings.database_url)
        try:
            return await work(KeyRing(settings, db))
        finally:
            await db.dispose()

    if settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)  # as `tandem serve` does for the embedded default
    try:
        return asyncio.run(main())
    except DomainError as exc:
        typer.echo(f"{exc.code.value}: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _settings() -> Settings:
    from server.cli import load_settings

    return load_settings()


def _show(key: ApiKey, secret: str | None = None) -> None:
    state = "revoked" if key.revoked_at else "active"
    rate = f"{key.rate_per_s:g}/s" if key.rate_per_s else "default rate"
    typer.echo(f"{key.name}  {state}  {rate}  scopes: {' '.join(key.scopes)}")
    if secret is not None:
        typer.echo(secret)


@app.command()
def create(
    name: str,
    scope: Annotated[list[str], typer.Option(help="A scope; repeatable.")],
    rate: Annotated[
        float | None, typer.Option(help="Requests per second per node (default: the node's).")
    ] = None,
) -> None:
    """Make a key and print it: it is shown this once."""
    if rate is not None and rate <= 0:
        raise typer.BadParameter("--rate must be positive")
    key, secret = _run(_settings(), lambda keys: keys.create(name, scope, rate))
    _show(key, secret)


@app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """Every key with its scopes (never its secret)."""
    for key in _run(_settings(), lambda keys: keys.list()):
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "name": key.name,
                        "scopes": list(key.scopes),
                        "rate_per_s": key.rate_per_s,
                        "created_at": key.created_at.isoformat(),
                        "revoked": key.revoked_at is not None,
                    }
                )
            )
        else:
            _show(key)


@app.command()
def rotate(
    name: str,
    grace: Annotated[
        float, typer.Option(help="Seconds the old secret keeps working.", min=0)
    ] = 3600,
) -> None:
    """Give a key a new secret and print it; the old one works for --grace seconds."""
    key, secret = _run(_settings(), lambda keys: keys.rotate(name, grace))
    _show(key, secret)


@app.command()
def revoke(name: str) -> None:
    """Revoke a key for good."""
    _show(_run(_settings(), lambda keys: keys.revoke(name)))
