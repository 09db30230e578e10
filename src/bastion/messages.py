"""The typed messages on every arrow of the request flow (DESIGN.md §1).

All are frozen, slotted, keyword-only dataclasses, validated in ``__post_init__`` where a value can
be wrong. Variants are unions with a ``kind`` literal (`RecoveryAction`). Persisted or displayed
states are `StrEnum`s. Money is `Decimal`; durations are float seconds named ``*_s``; timestamps are
aware UTC datetimes. pydantic is used only where data crosses a boundary (the model's plan, HTTP,
settings, persisted JSON via `TypeAdapter`).

The seed's public names are kept: `AgentRequest`, `PlanStep`, `StepStatus`, `AgentPlan`,
`AgentResponse`. Two departures from the seed, on purpose:

* `AgentRequest` carries no ``permissions``: a caller must not be able to grant itself scopes. The
  Permissions Gate resolves the caller's scopes from ``user_id`` (and, later, its credentials).
* A `PlanStep` is immutable. The plan is what the model proposed; what happened to each step is a
  `StepRecord` appended as the run goes (constant work per step, no rewriting of the plan), and the
  response's `PlanStep`s carry the final status, result and cost.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

#: A JSON value as parsed by `json.loads` (kept loose on purpose: tools return what they like).
Json = Any
#: A JSON object: the args of a tool call, a tool's result when it is a mapping.
JsonObject = Mapping[str, Any]


def new_id(prefix: str = "run") -> str:
    """A fresh, URL-safe identifier such as ``run_5f2c...``."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class StepStatus(StrEnum):
    """Where one plan step stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    DENIED = "denied"


class RunStatus(StrEnum):
    """Where a run stands. Allowed transitions live in `bastion.flow.state`."""

    ADMITTED = "admitted"
    PLANNING = "planning"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    #: A non-idempotent tool's outcome is unknown after a crash: a person decides what next.
    AWAITING_OPERATOR = "awaiting_operator"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether nothing more will happen to a run in this status."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.CANCELLED}
)


class ToolErrorKind(StrEnum):
    """Why a tool call did not produce a value. Recovery decides by this."""

    TIMEOUT = "timeout"
    TOOL_ERROR = "tool_error"
    CRASHED = "crashed"
    INVALID_ARGS = "invalid_args"
    UNKNOWN_TOOL = "unknown_tool"
    DENIED = "denied"
    CIRCUIT_OPEN = "circuit_open"
    TRANSIENT = "transient"
    #: The process died during the call of a non-idempotent tool: whether it took effect is
    #: unknown, and it is never run again without a person's decision.
    UNKNOWN_OUTCOME = "unknown_outcome"
    #: An isolated call went over a limit (memory, CPU seconds, processes, files, output size).
    #: Running it again would hit the same limit: never retried.
    RESOURCE_EXHAUSTED = "resource_exhausted"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    """What a user asked, and the limits the run must keep."""

    user_id: str
    session_id: str
    message: str
    max_budget_usd: Decimal = Decimal("1.00")
    run_id: str = field(default_factory=new_id)
    #: Wall-clock limit for the whole run; ``None`` takes the settings' default.
    timeout_s: float | None = None
    #: The caller's API key, checked by the Permissions Gate; never shown, logged nor persisted.
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _require(bool(self.user_id.strip()), "user_id must not be empty")
        _require(bool(self.session_id.strip()), "session_id must not be empty")
        _require(bool(self.message.strip()), "message must not be empty")
        _require(len(self.message) <= 20_000, "message is longer than 20,000 characters")
        _require(self.max_budget_usd >= 0, "max_budget_usd must not be negative")
        _require(self.timeout_s is None or self.timeout_s > 0, "timeout_s must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanStep:
    """One tool call the plan proposes; in a response, also what became of it."""

    step_id: int
    description: str
    tool_name: str
    tool_args: JsonObject = field(default_factory=dict)
    #: Checks the Evaluator applies to the result (`bastion.evaluator`), e.g. ``{"keys": [...]}``.
    expect: JsonObject = field(default_factory=dict)
    status: StepStatus = StepStatus.PENDING
    result: Json = None
    error: str | None = None
    cost_usd: Decimal = Decimal(0)
    #: The result is a cached one, this many seconds old (its tool was down).
    cached_age_s: float | None = None

    def __post_init__(self) -> None:
        _require(self.step_id >= 0, "step_id must not be negative")
        _require(bool(self.tool_name), "tool_name must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentPlan:
    """An ordered list of steps and the model's reasoning for it."""

    steps: tuple[PlanStep, ...]
    reasoning: str
    #: 0 for the first plan, +1 for each replan.
    revision: int = 0
    model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is acting: resolved by the Permissions Gate, never taken from the request."""

    id: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    display_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """One concrete call of a tool, as the sandbox runs it."""

    run_id: str
    step_id: int
    tool_name: str
    args: JsonObject
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        """Stable for a step across retries and restarts: run id + step number."""
        return f"{self.run_id}:{self.step_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """What one tool call produced. The sandbox never raises; it returns one of these."""

    ok: bool
    value: Json = None
    error_kind: ToolErrorKind | None = None
    error: str | None = None
    duration_s: float = 0.0
    #: Set when a failure may pass on a retry (a timeout, a transient upstream error).
    transient: bool = False
    #: Set when the tool was down and this is its last good result for the same args, served
    #: from the cache (`bastion.sandbox.cache`): how old that result is, in seconds.
    cached_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.ok:
            _require(self.error_kind is None, "a successful outcome has no error_kind")
        else:
            _require(self.error_kind is not None, "a failed outcome needs an error_kind")

    @classmethod
    def success(cls, value: Json, *, duration_s: float = 0.0) -> ToolOutcome:
        """A call that returned `value`."""
        return cls(ok=True, value=value, duration_s=duration_s)

    @classmethod
    def failure(
        cls, kind: ToolErrorKind, error: str, *, duration_s: float = 0.0, transient: bool = False
    ) -> ToolOutcome:
        """A call that failed; `error` is safe to show the planner and the operator."""
        return cls(
            ok=False, error_kind=kind, error=error, duration_s=duration_s, transient=transient
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The Evaluator's judgement of one step's outcome."""

    passed: bool
    reason: str = ""
    #: Whether running the same step again might pass (a flaky result, not a wrong plan).
    retryable: bool = False

    @classmethod
    def ok(cls) -> Verdict:
        """A passing verdict."""
        return cls(passed=True, reason="ok")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Run the same step again after a delay."""

    kind: Literal["retry"] = "retry"
    delay_s: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UseFallback:
    """Run the step with another tool (the failing tool's declared fallback)."""

    kind: Literal["use_fallback"] = "use_fallback"
    tool_name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Replan:
    """Ask the planner for new remaining steps, telling it why."""

    kind: Literal["replan"] = "replan"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort:
    """Stop the run. `user_message` is shown to the end user; `reason` to operators."""

    kind: Literal["abort"] = "abort"
    reason: str
    user_message: str
    status: Literal[RunStatus.FAILED, RunStatus.ABORTED] = RunStatus.ABORTED


RecoveryAction = Retry | UseFallback | Replan | Abort


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """What happened to one step of a plan: appended as the run goes, never rewritten."""

    step: PlanStep
    status: StepStatus
    outcome: ToolOutcome | None = None
    verdict: Verdict | None = None
    attempts: int = 1
    plan_revision: int = 0
    tool_name: str | None = None
    """The tool actually run, when a fallback replaced the planned one."""


class EventKind(StrEnum):
    """What a `RunEvent` reports."""

    STATUS = "status"
    PLAN = "plan"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    RETRY = "retry"
    REPLAN = "replan"
    FALLBACK = "fallback"
    MODEL_CALL = "model_call"
    #: The run moved up its model cascade (`bastion.cost.cascade`), with the reason.
    ESCALATE = "escalate"
    DENIED = "denied"
    OPERATOR = "operator"
    #: A human approval was requested, or settled (granted, denied, expired, refused).
    APPROVAL = "approval"
    #: The Evaluator's checks (and the model judge, when on) of the final answer.
    EVALUATION = "evaluation"
    ANSWER = "answer"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent:
    """One thing that happened in a run, in order (``seq`` starts at 1 for each run)."""

    run_id: str
    seq: int
    kind: EventKind
    at: datetime
    data: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResponse:
    """The end of a run: always produced, whatever happened. `message` speaks to the end user."""

    run_id: str
    status: RunStatus
    message: str
    plan: AgentPlan | None = None
    total_cost_usd: Decimal = Decimal(0)
    steps_completed: int = 0
    steps_failed: int = 0
    model: str | None = None
    #: For operators: why a run did not complete (never shown to the end user as is).
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    #: Notices of graceful degradation (a fallback model answered, a cached result was used);
    #: empty when every dependency was up. Also appended to `message`.
    degraded: tuple[str, ...] = ()
    #: Why `model` planned this run (its cascade rung: first, a rule, or an escalation).
    model_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the run completed."""
        return self.status is RunStatus.COMPLETED
