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
from typing import Any, Literal

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


class SandboxLimits(BaseModel):
    """What one call on the ``process`` or ``os`` tier may use (`bastion.sandbox.limits`)."""

    #: Memory the tool may allocate, on top of what the interpreter already maps.
    memory_mb: int = Field(default=512, ge=16)
    #: CPU seconds per process; a tool that spins past them ends ``resource_exhausted``.
    cpu_s: int = Field(default=60, ge=1)
    open_files: int = Field(default=256, ge=16)
    #: The largest file the tool may write.
    file_mb: int = Field(default=64, ge=1)
    #: Processes and threads, the sandbox's own included (a pids cgroup: holds as root too).
    processes: int = Field(default=64, ge=4)
    #: The private, in-memory ``/tmp`` holding the workspace.
    workspace_mb: int = Field(default=64, ge=1)
    #: stdout and stderr together, and the result's JSON.
    output_kb: int = Field(default=1024, ge=1)
    result_kb: int = Field(default=1024, ge=1)


class SandboxSettings(BaseModel):
    """Tool execution: time limits, isolation tiers and their limits."""

    default_timeout_s: float = Field(default=30.0, gt=0)
    #: Per-tool timeouts that win over the tool's own declaration (the seed's exercise 26.5.1).
    timeout_overrides: dict[str, float] = Field(default_factory=dict)
    #: The weakest tier any tool runs on: a tool declaring a weaker one is run on this one.
    default_tier: Literal["inline", "process", "os"] = "inline"
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    #: Started, idle workers kept ready per isolated tier, so that a call skips the start-up.
    warm_workers: int = Field(default=2, ge=0, le=64)
    #: Whether ``process``-tier tools may use the network (the ``os`` tier never may).
    process_network: bool = False
    #: The unprivileged user and group ``process``-tier tools run as when the runtime is root.
    sandbox_uid: int = Field(default=65534, ge=1)
    sandbox_gid: int = Field(default=65534, ge=1)
    #: How long a worker may take to start (a cold start imports the tool's module).
    start_timeout_s: float = Field(default=20.0, gt=0)

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


class LocalModelSettings(BaseModel):
    """The embedded llama.cpp model (``local:`` models, `bastion.models.local`)."""

    #: CPU threads; above 1 only helps with ``OMP_WAIT_POLICY=PASSIVE`` (see models/local.py).
    threads: int = Field(default=1, ge=1, le=64)
    #: The context window in tokens: the planner's prompt plus the longest plan must fit.
    context_size: int = Field(default=4096, ge=512, le=131072)
    #: Where weights are assembled and verified; None means ``<data_dir>/models``.
    cache_dir: Path | None = None
    #: Requests that may wait for the model before a call is refused as busy.
    queue_bound: int = Field(default=32, ge=1)


class DurableSettings(BaseModel):
    """Durable execution on DBOS (`bastion.durable`): runs survive crashes and restarts."""

    #: Off runs everything in process with no checkpoints of its progress (tests, benchmarks).
    enabled: bool = True
    #: DBOS's system database; None means SQLite at ``<data_dir>/dbos.sqlite``, or the memory
    #: store's database when that is PostgreSQL (so that workers on many machines share it).
    system_database_url: str | None = None
    #: This process's identity: a restarted worker recovers the runs tagged with it. None gives
    #: a fresh unique id (host, pid, random); workers that must recover their own runs after a
    #: restart are given a stable one (``bastion worker --id``).
    executor_id: str | None = Field(default=None, min_length=1, max_length=64)
    #: ``NORMAL`` survives a kill -9 (WAL); ``FULL`` also survives a power loss, at a cost per step.
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: How often DBOS polls for notifications (approvals, decisions); tests lower it.
    polling_interval_s: float = Field(default=1.0, gt=0)
    #: A worker whose heartbeat is older than this is dead: a live worker takes over its runs.
    heartbeat_s: float = Field(default=5.0, gt=0)
    takeover_after_s: float = Field(default=30.0, gt=0)
    #: Runs a worker process runs at once, and runs one user may have running at once.
    worker_concurrency: int = Field(default=8, ge=1)
    per_user_concurrency: int = Field(default=4, ge=1)
    #: How long a run paused for an operator's decision waits before it is aborted.
    operator_wait_s: float = Field(default=7 * 24 * 3600.0, gt=0)


class GateSettings(BaseModel):
    """The Permissions Gate: its server secret, API keys, principals and audit checkpoints.

    The server secret keys the stored API keys and the audit log's MAC chain: it is
    ``BASTION_GATE__SECRET`` (at least 32 characters) when set, else the file ``secret_file``
    (default ``<data_dir>/gate.secret``), generated with permissions 0600 on first use. Back it up
    apart from the database: without it no API key works and the audit log cannot be verified.
    """

    secret: SecretStr | None = None
    secret_file: Path | None = None
    #: Refuse every request without an API key (any system reachable by others should).
    require_api_key: bool = False
    #: Principals (JSON or TOML, see `bastion.gate.principals`) added to the app's own.
    principals_file: Path | None = None
    #: Field names whose values are always redacted, besides those that look secret.
    secret_fields: list[str] = Field(default_factory=list)
    #: Lifetime of a new API key unless ``bastion keys create`` says otherwise; None: no expiry.
    key_ttl_days: float | None = Field(default=90.0, gt=0)
    #: A checkpoint (size and head of the audit log) is appended every this many entries to
    #: ``audit_checkpoint_file`` (default ``<data_dir>/audit-checkpoints.jsonl``): ship that file
    #: somewhere the database's writers cannot reach.
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_file: Path | None = None


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
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    durable: DurableSettings = Field(default_factory=DurableSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BASTION_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BASTION_OPENAI_API_KEY", "OPENAI_API_KEY")
    )

    @property
    def local_cache_dir(self) -> Path:
        """Where local weights are assembled: ``local.cache_dir``, else ``<data_dir>/models``."""
        return self.local.cache_dir or self.data_dir / "models"

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
