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
from typing import Any, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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
    #: Models tried in order when the one before is down (breaker open, 5xx, timeout, 429),
    #: e.g. ``["local:qwen2.5-1.5b"]`` behind a hosted model (`bastion.models.fallback`).
    fallbacks: list[str] = Field(default_factory=list)


class PlannerSettings(BaseModel):
    """Plan generation limits."""

    max_repairs: int = Field(default=2, ge=0, le=10)
    max_steps: int = Field(default=8, ge=1, le=50)
    max_tokens: int = Field(default=1024, ge=16)
    #: Tokens of the whole planning prompt (system prompt, tools, facts, summary, turns, request)
    #: as estimated before the call; the memory context gets what the fixed parts leave.
    context_token_budget: int = Field(default=3000, ge=0)
    #: Whether a step's args may take an earlier step's result, ``{"$from": "steps[0].result.x"}``
    #: (`bastion.planner.references`).
    step_references: bool = True
    #: Revise the remaining steps after every successful step, given its result (one more
    #: model call per step); failed steps are replanned regardless (``recovery.max_replans``).
    replan_after_each_step: bool = False
    #: The most revisions after successful steps in one run.
    max_revisions: int = Field(default=5, ge=0, le=50)


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
    """Where sessions, runs and long-term facts are stored, and for how long."""

    #: SQLAlchemy URL; None means SQLite at ``<data_dir>/bastion.db``.
    database_url: str | None = None
    #: How facts are searched: ``fts`` (full text in the database: SQLite FTS5 / PostgreSQL) or
    #: ``embedding`` (the in-memory reference backend: per process, lost at exit).
    facts_backend: Literal["fts", "embedding"] = "fts"
    #: Most long-term facts put in the planner's context.
    facts_in_context: int = Field(default=5, ge=0, le=50)
    #: Days a new fact is kept; None keeps facts until deleted (``bastion memory forget``).
    fact_ttl_days: float | None = Field(default=None, gt=0)
    #: Days a session's turns (and summaries) are kept; None keeps them.
    turn_ttl_days: float | None = Field(default=None, gt=0)
    #: Summarise a session's older turns with the planning model when they no longer fit.
    summarise: bool = True


class RecoverySettings(BaseModel):
    """Retry and replan bounds."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    max_replans: int = Field(default=2, ge=0, le=20)
    #: Retries (of steps and model calls together) one run may make.
    max_run_retries: int = Field(default=10, ge=0)
    #: Process-wide retry budget (Finagle's defaults): retries at most this share of calls ...
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    #: ... plus this many retries a second, so that a quiet system may still retry ...
    retry_budget_min_per_s: float = Field(default=10.0, ge=0)
    #: ... and no more banked than this, so that a long healthy spell cannot fund a storm.
    retry_budget_max: float = Field(default=100.0, ge=1)


class BreakerSettings(BaseModel):
    """Circuit breakers, one per tool, per model and per provider endpoint (rate-based).

    See `bastion.resilience.breaker` for the algorithm; the defaults open a breaker when half of
    the last 20 calls (at least 10 seen) failed, or when all of them took 60 s or more.
    """

    #: ``count``: the last ``window_size`` calls; ``time``: the calls of the last
    #: ``window_size`` seconds.
    window: Literal["count", "time"] = "count"
    window_size: int = Field(default=20, ge=1)
    #: Calls the window must hold before a rate may open the breaker.
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    slow_call_rate: float = Field(default=1.0, gt=0, le=1)
    slow_call_s: float = Field(default=60.0, gt=0)
    #: How long an open breaker refuses calls before it admits probes.
    cooldown_s: float = Field(default=30.0, gt=0)
    #: Probe calls admitted while half-open; the rest are refused at once.
    half_open_probes: int = Field(default=1, ge=1)


class RateLimitSettings(BaseModel):
    """Rate limits (GCRA), per user, per app and per provider, on requests and on tokens.

    Each limit is a rate per minute with a burst; None leaves it off. A request over a limit is
    rejected with the exact time after which it would pass, or, with ``mode = "queue"``, waits
    that long when it is at most ``max_queue_s`` (and within the run's deadline).
    """

    mode: Literal["reject", "queue"] = "reject"
    max_queue_s: float = Field(default=5.0, ge=0)
    #: The name of this app's shared limit (several apps may share one Redis).
    app: str = "default"
    user_requests_per_min: float | None = Field(default=None, gt=0)
    user_request_burst: int = Field(default=10, ge=1)
    user_tokens_per_min: float | None = Field(default=None, gt=0)
    user_token_burst: int = Field(default=20_000, ge=1)
    app_requests_per_min: float | None = Field(default=None, gt=0)
    app_request_burst: int = Field(default=100, ge=1)
    app_tokens_per_min: float | None = Field(default=None, gt=0)
    app_token_burst: int = Field(default=200_000, ge=1)
    provider_requests_per_min: float | None = Field(default=None, gt=0)
    provider_request_burst: int = Field(default=60, ge=1)
    provider_tokens_per_min: float | None = Field(default=None, gt=0)
    provider_token_burst: int = Field(default=200_000, ge=1)


class ResilienceSettings(BaseModel):
    """Where breaker and rate-limit state lives, and graceful degradation."""

    #: None: in process (one worker). ``redis://127.0.0.1:6379/0``: shared by every worker.
    #: If Redis is down, limits fall back to in-process ones, with a warning.
    state_url: str | None = None
    #: Prefix of every Redis key (one per deployment sharing a Redis).
    key_prefix: str = "bastion"
    #: How long a worker reuses Redis's answer about a breaker: an opening elsewhere is adopted
    #: at most this late, and a call makes one round trip to Redis instead of two.
    breaker_refresh_s: float = Field(default=1.0, ge=0)
    #: How long a read-only, idempotent tool's last result may be served while the tool is down.
    tool_cache_ttl_s: float = Field(default=600.0, ge=0)
    tool_cache_entries: int = Field(default=1024, ge=0)


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    #: Input tokens the provider served from its prompt cache; None: the model has no discount
    #: (they cost `input_per_mtok`).
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)


class UserBudget(BaseModel):
    """One principal's own spending limits (USD), winning over the defaults; None: no limit."""

    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)


class CostSettings(BaseModel):
    """Prices, budgets beyond the run's own, the reservation ledger and the model cascade.

    Budgets are hard caps kept in the database (`bastion.cost.sql`): a run's ``max_budget_usd``,
    and, when set here, a session's total, a user's and the app's spend per UTC day and month.
    """

    #: Prices (USD per million tokens) that override or extend the shipped table.
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    #: The app's name in the ledger (its per-app budgets and ``bastion usage --by app``).
    app: str = Field(default="default", min_length=1, max_length=64)
    #: A session's total spend over all its runs; None: no limit.
    session_usd: Decimal | None = Field(default=None, ge=0)
    #: Each user's spend per UTC day and per calendar month; None: no limit.
    user_daily_usd: Decimal | None = Field(default=None, ge=0)
    user_monthly_usd: Decimal | None = Field(default=None, ge=0)
    #: Per-user limits winning over ``user_daily_usd`` / ``user_monthly_usd``.
    user_budgets: dict[str, UserBudget] = Field(default_factory=dict)
    #: The whole app's spend per UTC day and per calendar month; None: no limit.
    app_daily_usd: Decimal | None = Field(default=None, ge=0)
    app_monthly_usd: Decimal | None = Field(default=None, ge=0)
    #: A hold not settled within this long belongs to a crashed process: the reconciler frees it.
    #: Keep it above the longest model call (``model.request_timeout_s``).
    reservation_ttl_s: float = Field(default=600.0, gt=0)
    #: How often (at most) admitting a run also frees expired holds.
    reconcile_every_s: float = Field(default=60.0, gt=0)
    #: Models cheap to strong (``provider:model``): the first plans, the next takes over when
    #: the plan fails validation after repair or a step's result is rejected. Empty: no cascade.
    cascade: list[str] = Field(default_factory=list)
    #: Declared escalations: a regex searched (case-insensitively) in the request's message,
    #: mapped to the cascade model the run starts on when it matches.
    cascade_rules: dict[str, str] = Field(default_factory=dict)


class EvaluatorSettings(BaseModel):
    """Checks on step results and on the final answer."""

    #: Ask the model to judge each final answer against a short rubric (one extra call a run).
    judge: bool = False
    #: A judge's failing verdict withholds the answer (else it is only recorded).
    judge_blocks: bool = False


class RunSettings(BaseModel):
    """Limits on a whole run."""

    timeout_s: float = Field(default=120.0, gt=0)
    max_steps: int = Field(default=20, ge=1)
    #: Model calls a run may make (plans, repairs, replans), whatever its budget.
    max_model_calls: int = Field(default=30, ge=1)
    #: The same tool with the same args may run this many times in a run; one more is a loop.
    max_identical_calls: int = Field(default=3, ge=1)


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
    #: A worker whose heartbeat is older than ``takeover_after_s`` is dead: a live worker takes
    #: over its runs (and a worker that learns it was presumed dead stops: see `DurableEngine`).
    #: At least three beats must fit in the timeout, so that one late beat is not a death.
    heartbeat_s: float = Field(default=5.0, gt=0)
    takeover_after_s: float = Field(default=30.0, gt=0)
    #: A process starting (DBOS launching, before its first beat) is not taken for dead before
    #: this; one that dies while starting has its runs taken over after it.
    startup_grace_s: float = Field(default=60.0, ge=0)
    #: Runs a worker process runs at once, and runs one user may have running at once.
    worker_concurrency: int = Field(default=8, ge=1)
    per_user_concurrency: int = Field(default=4, ge=1)
    #: How long a run paused for an operator's decision waits before it is aborted.
    operator_wait_s: float = Field(default=7 * 24 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _beats_fit_in_the_timeout(self) -> Self:
        if self.takeover_after_s < 3 * self.heartbeat_s:
            raise ValueError(
                f"takeover_after_s ({self.takeover_after_s}) must be at least 3 heartbeats "
                f"(heartbeat_s = {self.heartbeat_s}): one late beat must not count as a death"
            )
        return self


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
    #: How long a human approval may wait for its decision (and, once approved, for its use);
    #: a run waits durably that long at most, then the call is treated as denied. Default 3 days.
    approval_ttl_s: float = Field(default=3 * 24 * 3600.0, gt=0)


class ServerSettings(BaseModel):
    """The HTTP service (``bastion serve``, `bastion.server`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: uvicorn worker processes (each runs its own runs; share PostgreSQL between them).
    workers: int = Field(default=1, ge=1, le=64)
    #: How often an event stream looks at the store when nothing happens live (runs of other
    #: processes show up this way).
    stream_poll_s: float = Field(default=1.0, gt=0)
    #: An idle event stream sends a comment this often, so that proxies keep it open.
    stream_ping_s: float = Field(default=15.0, gt=0)


class ObservabilitySettings(BaseModel):
    """Traces (OpenTelemetry), metrics and logs of the HTTP service (`bastion.server.telemetry`)."""

    #: ``off`` (default), ``console`` (spans printed to stderr) or ``otlp`` (to ``otlp_endpoint``).
    traces: Literal["off", "console", "otlp"] = "off"
    #: The OTLP/HTTP endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``.
    otlp_endpoint: str | None = None
    service_name: str = "bastion"
    #: Logs as one JSON object per line (run id included, secrets redacted) instead of text.
    json_logs: bool = True


class McpToolPolicy(BaseModel):
    """Overrides of a mounted server's policies for one of its tools (by its name on the server)."""

    model_config = {"extra": "forbid"}

    scopes: list[str] | None = None
    side_effects: bool | None = None
    idempotent: bool | None = None
    timeout_s: float | None = Field(default=None, gt=0)


class McpServerSettings(BaseModel):
    """One MCP server mounted as tools (`bastion.mcp`): a stdio ``command`` or an HTTP ``url``.

    The policies are declared here, never taken from the server's own hints: a server's tools
    need ``scopes``, and are treated as having side effects (never re-run after a timeout) unless
    ``side_effects`` says otherwise.
    """

    model_config = {"extra": "forbid"}

    #: Tools are named ``<prefix>.<tool>``, e.g. ``time.get_current_time``.
    prefix: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]{0,30}$")
    #: A stdio server: the program and its arguments (launched with the limits below).
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    #: A streamable HTTP server, e.g. ``http://127.0.0.1:8000/mcp``.
    url: str | None = Field(default=None, validate_default=True)
    scopes: list[str] = Field(default_factory=list)
    side_effects: bool = True
    idempotent: bool = False
    timeout_s: float = Field(default=30.0, gt=0)
    #: Only these tools (names on the server); None mounts every tool it lists.
    include: list[str] | None = None
    tools: dict[str, McpToolPolicy] = Field(default_factory=dict)
    #: How long connecting (and listing the tools) may take, at start and on reconnect.
    connect_timeout_s: float = Field(default=20.0, gt=0)
    #: A stdio server's address space (``RLIMIT_AS``); 0 leaves it unlimited. Open files and
    #: file size follow ``sandbox.limits``.
    memory_mb: int = Field(default=4096, ge=0)
    #: Whether the system refuses to start when this server cannot be reached.
    required: bool = True

    @field_validator("url")
    @classmethod
    def _one_transport(cls, url: str | None, info: Any) -> str | None:
        command = info.data.get("command")
        if (url is None) == (command is None):
            raise ValueError("set exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        return url


class McpSettings(BaseModel):
    """MCP servers whose tools are mounted next to the app's own (`bastion.mcp`)."""

    servers: list[McpServerSettings] = Field(default_factory=list)

    @field_validator("servers")
    @classmethod
    def _unique_prefixes(cls, servers: list[McpServerSettings]) -> list[McpServerSettings]:
        prefixes = [server.prefix for server in servers]
        duplicated = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if duplicated:
            raise ValueError(f"two MCP servers share a prefix: {', '.join(duplicated)}")
        return servers


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
    evaluator: EvaluatorSettings = Field(default_factory=EvaluatorSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    resilience: ResilienceSettings = Field(default_factory=ResilienceSettings)
    cost: CostSettings = Field(default_factory=CostSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    durable: DurableSettings = Field(default_factory=DurableSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
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
