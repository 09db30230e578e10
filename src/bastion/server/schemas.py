"""The HTTP API's bodies: pydantic models, where data crosses the boundary (STYLE.md §3).

Money is a decimal string (``"0.0123"``), never a float; times are ISO 8601 UTC. A run's view is
built from the `RunRecord` the run store keeps, so a run reads the same over HTTP, in
``bastion runs show`` and on the dashboard.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.memory.interface import RunRecord
from bastion.messages import EventKind, RunEvent, StepRecord


def usd(amount: Decimal) -> str:
    """An exact amount as plain decimal text: ``0``, ``0.000123`` (never ``0E-8``)."""
    return format(amount.normalize(), "f")


class CreateRun(BaseModel):
    """Start a run: what the user asks, and how long to wait for its end."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=20_000, pattern=r"\S")
    #: The conversation this run belongs to; a new one when omitted.
    session_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^\S+$")
    max_budget_usd: Decimal | None = Field(default=None, ge=0, le=1000)
    #: The run's own time limit (the server's default when omitted).
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    #: Wait for the run to end (up to `wait_timeout_s`), or answer at once with its id (202).
    wait: bool = False
    wait_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, message: str) -> str:
        # The pattern's \S is the regex engine's idea of a non-blank; the run's own check is
        # Python's (`str.strip`), which also strips control separators such as U+001F.
        if not message.strip():
            raise ValueError("message must not be blank")
        return message


class EventView(BaseModel):
    """One event of a run."""

    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: RunEvent) -> EventView:
        """The view of `event`."""
        return cls(seq=event.seq, kind=event.kind.value, at=event.at, data=dict(event.data))


class PlanStepView(BaseModel):
    """One step the plan proposes."""

    step_id: int
    description: str
    tool_name: str
    tool_args: dict[str, Any]


class PlanView(BaseModel):
    """The run's latest plan."""

    revision: int
    reasoning: str
    model: str | None
    steps: list[PlanStepView]


class StepView(BaseModel):
    """What happened to one step."""

    index: int
    step_id: int
    description: str
    tool_name: str
    status: str
    attempts: int
    plan_revision: int
    result: Any = None
    error: str | None = None
    duration_s: float | None = None
    #: Set when the result came from the cache (its tool was down): how old it is.
    cached_age_s: float | None = None

    @classmethod
    def of(cls, index: int, record: StepRecord) -> StepView:
        """The view of the `index`-th step record."""
        outcome = record.outcome
        return cls(
            index=index,
            step_id=record.step.step_id,
            description=record.step.description,
            tool_name=record.tool_name or record.step.tool_name,
            status=record.status.value,
            attempts=record.attempts,
            plan_revision=record.plan_revision,
            result=outcome.value if outcome is not None and outcome.ok else None,
            error=outcome.error if outcome is not None and not outcome.ok else record.step.error,
            duration_s=outcome.duration_s if outcome is not None else None,
            cached_age_s=outcome.cached_age_s if outcome is not None else None,
        )


class RunSummary(BaseModel):
    """A run's header."""

    run_id: str
    status: str
    terminal: bool
    user_id: str
    session_id: str
    request: str
    created_at: datetime
    updated_at: datetime
    answer: str | None
    error: str | None
    total_cost_usd: str
    model: str | None

    @classmethod
    def of(cls, record: RunRecord) -> RunSummary:
        """The header of `record`."""
        return cls(
            run_id=record.run_id,
            status=record.status.value,
            terminal=record.status.is_terminal,
            user_id=record.user_id,
            session_id=record.session_id,
            request=record.request_message,
            created_at=record.created_at,
            updated_at=record.updated_at,
            answer=record.answer,
            error=record.error,
            total_cost_usd=usd(record.total_cost_usd),
            model=record.model,
        )


class RunView(RunSummary):
    """A run with its plan, steps and events."""

    plan: PlanView | None
    steps: list[StepView]
    events: list[EventView]
    #: What was degraded: cached results, models other than the first that answered.
    degraded: list[str]

    @classmethod
    def full(cls, record: RunRecord) -> RunView:
        """The whole view of `record`."""
        plan = None
        if record.plan is not None:
            plan = PlanView(
                revision=record.plan.revision,
                reasoning=record.plan.reasoning,
                model=record.plan.model,
                steps=[
                    PlanStepView(
                        step_id=s.step_id,
                        description=s.description,
                        tool_name=s.tool_name,
                        tool_args=dict(s.tool_args),
                    )
                    for s in record.plan.steps
                ],
            )
        steps = [StepView.of(i, s) for i, s in enumerate(record.steps)]
        return cls(
            **RunSummary.of(record).model_dump(),
            plan=plan,
            steps=steps,
            events=[EventView.of(e) for e in record.events],
            degraded=_degraded(record, steps),
        )


def _degraded(record: RunRecord, steps: list[StepView]) -> list[str]:
    notices = [
        f"step {s.step_id} ({s.tool_name}): cached result, {s.cached_age_s:.0f} s old"
        for s in steps
        if s.cached_age_s is not None
    ]
    models = [str(e.data.get("model")) for e in record.events if e.kind is EventKind.MODEL_CALL]
    for model in dict.fromkeys(models[1:]):
        if models and model != models[0]:
            notices.append(f"model {model} answered after {models[0]} (fallback or escalation)")
    return notices


class RunList(BaseModel):
    """A page of runs, newest first; `next_cursor` fetches the next page."""

    data: list[RunSummary]
    next_cursor: str | None


class UsageRow(BaseModel):
    """One group's usage, from the cost ledger."""

    key: str
    calls: int
    denials: int
    input_tokens: int
    output_tokens: int
    cost_usd: str


class Usage(BaseModel):
    """Model calls, tokens and spend grouped by model, user or app, and the total spend."""

    by: str
    rows: list[UsageRow]
    total_cost_usd: str


class AuditEntryView(BaseModel):
    """One audit entry (its canonical body, parsed)."""

    seq: int
    at: datetime
    action: str
    decision: str
    principal_id: str | None
    run_id: str | None
    tool_name: str | None
    reason: str
    details: dict[str, Any]


class AuditList(BaseModel):
    """Audit entries, oldest first."""

    data: list[AuditEntryView]


class AuditVerification(BaseModel):
    """Whether the audit chain (and its checkpoint file) is intact, and where it breaks if not."""

    ok: bool
    entries: int
    first_bad: int | None
    problem: str | None
    checkpoints: int
    checkpoints_matched: int
    checkpoint_problems: list[str]


class Check(BaseModel):
    """One readiness check."""

    ok: bool
    detail: str


class Readiness(BaseModel):
    """Whether the server can take runs, check by check."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"
