"""Settings: read once from ``TANDEM_*`` variables (and ``.env``), then passed down as values."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_JWT_SECRET = "tandem-development-secret-do-not-use-in-production"
DEV_API_KEY = "tandem-dev-key"
DEV_WEBHOOK_SECRET = "tandem-dev-webhook-secret"
# Room for a document event's envelope around its update (event name, document id, framing).
DOC_FRAME_OVERHEAD = 64 * 1024
_HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
_KEY_ALGORITHMS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"}


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TANDEM_", env_file=".env", extra="ignore", frozen=True
    )

    env: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite+aiosqlite:///./tandem.db"
    broker_url: str = "memory://"
    node_id: str = ""

    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithms: CommaList = Field(default_factory=lambda: ["HS256"])
    jwt_public_key: SecretStr | None = None
    jwt_private_key: SecretStr | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = 0.0
    # Keys with every scope, for the first hour; named, scoped keys: ``tandem keys create``.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Requests per second a named key may make to one node, unless the key sets its own.
    api_key_rate_per_s: float = Field(default=100.0, gt=0)
    # How long a node trusts what it read of a named key: a rotation or revocation made
    # through another node reaches this one within that time.
    api_key_cache_s: float = Field(default=5.0, ge=0, le=300)
    cors_origins: CommaList = Field(default_factory=list)
    # Signs POST /api/webhooks/flights; unset outside development disables that route.
    webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TANDEM_FLIGHTS_WEBHOOK_SECRET", "webhook_secret"),
    )

    serializer: Literal["json", "msgpack"] = "json"
    max_payload_bytes: int = Field(default=64 * 1024, ge=1024)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Above the document size cap: a client's first sync after offline work can carry it all.
    engine_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    # An Engine.IO connection that has not sent its Socket.IO CONNECT (its token) by then is
    # closed.
    connect_timeout_s: float = Field(default=15.0, gt=0, le=300)

    # A TOML file of channel namespaces (server.namespaces), on top of the built-in ones.
    channels_file: Path | None = None
    # The defaults of every namespace that does not set its own (README: Channel namespaces).
    history_size: int = Field(default=300, ge=0)
    history_ttl_s: float = Field(default=300.0, ge=0)
    idempotency_ttl_s: float = Field(default=300.0, ge=0)
    recovery_max_publications: int = Field(default=300, ge=0)
    max_channels_per_connection: int = Field(default=128, ge=1)
    presence_ttl_s: float = Field(default=30.0, gt=0)
    presence_max_members: int = Field(default=1000, ge=1)
    # A connection that drops (not one that says goodbye) stays present this long, so a page
    # reload or a network blip does not flap leave/join.
    presence_grace_s: float = Field(default=5.0, ge=0)
    # A typing indicator not renewed within this long is cleared (presence.typing false).
    typing_timeout_s: float = Field(default=5.0, gt=0)
    # typing and status requests, per connection, on top of the general limit.
    presence_rate_per_s: float = Field(default=2.0, gt=0)
    presence_burst: int = Field(default=10, ge=1)
    client_rate_per_s: float = Field(default=20.0, gt=0)
    client_burst: int = Field(default=40, ge=1)
    # Bytes a websocket client may fall behind by (queued here and in the kernel's send
    # buffer) before it is disconnected as slow; it recovers its position on reconnect.
    client_buffer_bytes: int = Field(default=1024 * 1024, ge=16 * 1024)
    # Event types where only the newest value matters: coalesced for clients that lag.
    latest_value_events: CommaList = Field(
        default_factory=lambda: ["job.progress", "flight.position"]
    )
    protocol_error_limit: int = Field(default=3, ge=1)
    # Collaborative documents (doc.* events, /api/docs).
    doc_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    doc_unload_grace_s: float = Field(default=30.0, ge=0)
    doc_flush_interval_s: float = Field(default=0.25, gt=0, le=10)
    doc_reconcile_interval_s: float = Field(default=60.0, gt=0)
    doc_anti_entropy_interval_s: float = Field(default=30.0, gt=0)
    # doc.join/update/sync per connection (typing is ~10 updates/s), and doc.awareness.
    doc_rate_per_s: float = Field(default=100.0, gt=0)
    doc_burst: int = Field(default=300, ge=1)
    awareness_rate_per_s: float = Field(default=30.0, gt=0)
    awareness_burst: int = Field(default=60, ge=1)
    token_max_ttl_s: int = Field(default=7 * 86_400, ge=60)
    shutdown_timeout_s: float = 10.0
    job_retention_s: float = Field(default=7 * 86_400, ge=60)
    # Read notifications are deleted this long after they were read; unread ones never expire.
    notification_retention_s: float = Field(default=30 * 86_400, ge=60)
    # The checkout demo (/demo/checkout); unset means on in development, off in production.
    demo: bool | None = None
    demo_step_s: float = Field(default=0.8, ge=0, le=10)
    demo_failure_rate: float = Field(default=0.1, ge=0, le=1)
    log_level: str = "info"
    # Outgoing webhooks: a failed delivery is retried after a random delay of up to
    # base * 2^(attempt-1) seconds (at most the max), and dead after max_attempts attempts.
    webhook_backoff_base_s: float = Field(default=1.0, gt=0)
    webhook_backoff_max_s: float = Field(default=600.0, gt=0)
    webhook_max_attempts: int = Field(default=15, ge=1, le=100)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Requests in flight per node, and per endpoint per node.
    webhook_concurrency: int = Field(default=16, ge=1, le=1000)
    webhook_per_endpoint: int = Field(default=4, ge=1, le=1000)
    webhook_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Delivered and dead deliveries are deleted this long after they were made.
    webhook_retention_s: float = Field(default=7 * 86_400, ge=60)
    # The admin API: nodes announce themselves this often on the control plane, a request
    # to every node waits this long for their answers, and every node re-reads the token
    # revocations this often (besides being told of each new one at once).
    admin_heartbeat_s: float = Field(default=2.0, gt=0, le=60)
    admin_request_timeout_s: float = Field(default=2.0, gt=0, le=30)
    revocation_refresh_s: float = Field(default=30.0, gt=0)
    # Each node publishes its numbers on admin:stats this often (the admin console).
    admin_stats_interval_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("jwt_algorithms", "cors_origins", "latest_value_events", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("channels_file", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [SecretStr(part.strip()) for part in value.split(",") if part.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        unknown = set(value) - _HMAC_ALGORITHMS - _KEY_ALGORITHMS
        if unknown or not value:
            raise ValueError(
                f"TANDEM_JWT_ALGORITHMS must list algorithms from "
                f"{sorted(_HMAC_ALGORITHMS | _KEY_ALGORITHMS)}; 'none' is never allowed"
            )
        return value

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Self:
        if set(self.jwt_algorithms) & _KEY_ALGORITHMS and self.jwt_public_key is None:
            raise ValueError("TANDEM_JWT_PUBLIC_KEY is required for RS/ES/PS/EdDSA algorithms")
        if self.engine_max_bytes < self.doc_max_bytes + DOC_FRAME_OVERHEAD:
            raise ValueError(
                "TANDEM_ENGINE_MAX_BYTES must be at least TANDEM_DOC_MAX_BYTES + "
                f"{DOC_FRAME_OVERHEAD}: a client's sync of a whole document must fit in a message"
            )
        if self.env is not Environment.PRODUCTION:
            return self
        problems = []
        secret = self.jwt_secret.get_secret_value()
        if set(self.jwt_algorithms) & _HMAC_ALGORITHMS and (
            secret == DEV_JWT_SECRET or len(secret) < 32
        ):
            problems.append("set TANDEM_JWT_SECRET to a random value of at least 32 characters")
        if any(key.get_secret_value() == DEV_API_KEY for key in self.api_keys):
            problems.append("TANDEM_API_KEYS contains the development key")
        if "*" in self.cors_origins:
            problems.append("TANDEM_CORS_ORIGINS must list origins, not '*'")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def is_development(self) -> bool:
        return self.env is Environment.DEVELOPMENT

    @property
    def demo_enabled(self) -> bool:
        return self.is_development if self.demo is None else self.demo

    def effective_webhook_secret(self) -> bytes | None:
        """The flights webhook secret; in development with none configured, a well-known one."""
        if self.webhook_secret is not None and self.webhook_secret.get_secret_value():
            return self.webhook_secret.get_secret_value().encode()
        return DEV_WEBHOOK_SECRET.encode() if self.is_development else None

    def effective_api_keys(self) -> list[str]:
        """Configured keys; in development with none configured, the well-known dev key."""
        keys = [key.get_secret_value() for key in self.api_keys]
        if not keys and self.is_development:
            return [DEV_API_KEY]
        return keys
