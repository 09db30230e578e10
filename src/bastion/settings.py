"""`Settings`: one pydantic model, one section per component, loaded once at the edge.

The CLI and the HTTP app load it (environment variables prefixed ``BASTION_``, sections separated by
``__``, e.g. ``BASTION_RECOVERY__MAX_ATTEMPTS=5``) and pass it down; components never read the
environment or files themselves. A bad value fails at start, naming the key and the value.
Defaults are local and safe: SQLite under the data directory, in-process limits.

`OPENAI_BASE_URL` and `OPENAI_API_KEY` are honoured as users of the `openai` SDK expect.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bastion.errors import ConfigError


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bastion"


class ModelSettings(BaseModel):
    """Which model plans, and how to reach OpenAI-compatible providers."""

    #: ``provider:model``; None lets the app choose its default.
    name: str | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    request_timeout_s: float = Field(default=60.0, gt=0)


class PlannerSettings(BaseModel):
    """Plan generation limits."""

    max_repairs: int = Field(default=2, ge=0, le=10)
    max_steps: int = Field(default=8, ge=1, le=50)
    max_tokens: int = Field(default=1024, ge=16)
    context_token_budget: int = Field(default=2000, ge=0)


class SandboxSettings(BaseModel):
    """Tool execution limits."""

    default_timeout_s: float = Field(default=30.0, gt=0)
    #: Per-tool timeouts that win over the tool's own declaration (the seed's exercise 26.5.1).
    timeout_overrides: dict[str, float] = Field(default_factory=dict)

    @field_validator("timeout_overrides")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: t for name, t in value.items() if t <= 0}
        if bad:
            raise ValueError(f"timeouts must be positive: {bad}")
        return value


class MemorySettings(BaseModel):
    """Where sessions and runs are stored."""

    #: SQLAlchemy URL; None means SQLite at ``<data_dir>/bastion.db``.
    database_url: str | None = None


class RecoverySettings(BaseModel):
    """Retry and replan bounds."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    max_replans: int = Field(default=2, ge=0, le=20)


class BreakerSettings(BaseModel):
    """Circuit breakers, one per tool and per model."""

    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)


class CostSettings(BaseModel):
    """Prices that override or extend the shipped table."""

    prices: dict[str, ModelPrice] = Field(default_factory=dict)


class RunSettings(BaseModel):
    """Limits on a whole run."""

    timeout_s: float = Field(default=120.0, gt=0)
    max_steps: int = Field(default=20, ge=1)


class Settings(BaseSettings):
    """All of Bastion's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BASTION_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    model: ModelSettings = Field(default_factory=ModelSettings)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    cost: CostSettings = Field(default_factory=CostSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BASTION_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BASTION_OPENAI_API_KEY", "OPENAI_API_KEY")
    )

    @property
    def database_url(self) -> str:
        """The storage URL, defaulting to SQLite in the data directory."""
        if self.memory.database_url:
            return self.memory.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'bastion.db'}"

    @property
    def effective_openai_base_url(self) -> str | None:
        """The model section's base URL, else ``OPENAI_BASE_URL``."""
        return self.model.openai_base_url or self.openai_base_url

    @property
    def effective_openai_api_key(self) -> SecretStr | None:
        """The model section's key, else ``OPENAI_API_KEY``."""
        return self.model.openai_api_key or self.openai_api_key


def load_settings(**overrides: Any) -> Settings:
    """Load settings from the environment (plus `overrides`); a one-line `ConfigError` if bad.

    Raises:
        ConfigError: naming each bad key and its value.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
