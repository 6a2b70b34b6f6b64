from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.config import DEV_API_KEY, DEV_WEBHOOK_SECRET, Settings

STRONG = "s" * 40


def test_development_defaults_work_out_of_the_box() -> None:
    settings = Settings()
    assert settings.is_development
    assert settings.broker_url == "memory://"
    assert settings.database_url.startswith("sqlite+aiosqlite")
    assert settings.effective_api_keys() == [DEV_API_KEY]


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_API_KEYS", "k1, k2")
    monkeypatch.setenv("TANDEM_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings()
    assert settings.effective_api_keys() == ["k1", "k2"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"api_keys": "k"}, "TANDEM_JWT_SECRET"),
        ({"jwt_secret": "short", "api_keys": "k"}, "TANDEM_JWT_SECRET"),
        ({"jwt_secret": STRONG, "api_keys": DEV_API_KEY}, "development key"),
        ({"jwt_secret": STRONG, "api_keys": "k", "cors_origins": "*"}, "TANDEM_CORS_ORIGINS"),
    ],
)
def test_production_refuses_insecure_settings(overrides: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(env="production", **overrides)  # type: ignore[arg-type]


def test_production_with_real_secrets_starts() -> None:
    settings = Settings(env="production", jwt_secret=STRONG, api_keys="k1")
    assert settings.effective_api_keys() == ["k1"]
    # Named keys made with `tandem keys create` are enough: no admin key in the environment.
    assert Settings(env="production", jwt_secret=STRONG).effective_api_keys() == []


def test_algorithm_none_can_never_be_configured() -> None:
    with pytest.raises(ValidationError, match="none"):
        Settings(jwt_algorithms="none")


def test_key_algorithms_need_a_public_key() -> None:
    with pytest.raises(ValidationError, match="PUBLIC_KEY"):
        Settings(jwt_algorithms="RS256")


def test_flights_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().effective_webhook_secret() == DEV_WEBHOOK_SECRET.encode()
    # Outside development an unset secret turns the webhook off; it does not stop the node.
    production = Settings(env="production", jwt_secret=STRONG, api_keys="k1")
    assert production.effective_webhook_secret() is None
    monkeypatch.setenv("TANDEM_FLIGHTS_WEBHOOK_SECRET", "hook-secret")
    configured = Settings(env="production", jwt_secret=STRONG, api_keys="k1")
    assert configured.effective_webhook_secret() == b"hook-secret"
