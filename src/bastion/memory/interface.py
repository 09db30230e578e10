"""The Memory Manager's contract: session history for the planner's context, and run persistence.

It persists three things: turns of a session (what users asked and were answered), runs (status,
plan, steps, events; written at every state transition so a run is inspectable while it goes), and,
in later issues, long-term facts. Writes are small and constant per step: a step is one row,
an event one row; nothing rewrites a run's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from bastion.messages import (
    AgentPlan,
    AgentRequest,
    AgentResponse,
    RunEvent,
    RunStatus,
    StepRecord,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One message of a session's history."""

    role: str  # "user" | "assistant"
    content: str
    at: datetime
    run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryContext:
    """What the planner sees of the past: recent turns, oldest first, within a token budget."""

    turns: tuple[Turn, ...] = ()
    #: Estimated tokens of `turns` (never above the budget it was assembled for).
    token_count: int = 0
    #: How many older turns were left out to keep within the budget.
    omitted_turns: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A run as persisted: its header, latest plan, step records and events."""

    run_id: str
    user_id: str
    session_id: str
    request_message: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    answer: str | None = None
    error: str | None = None
    total_cost_usd: Decimal = Decimal(0)
    model: str | None = None
    plan: AgentPlan | None = None
    steps: tuple[StepRecord, ...] = ()
    events: tuple[RunEvent, ...] = field(default_factory=tuple)


class MemoryManager(Protocol):
    """Persists sessions and runs; assembles the planner's context.

    `start` must be awaited before any other method (it opens connections and runs migrations;
    safe to call twice); `close` releases them.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def load_context(self, request: AgentRequest, *, token_budget: int) -> MemoryContext:
        """The session's most recent turns whose estimated tokens fit `token_budget`."""
        ...

    async def persist_turns(self, request: AgentRequest, response: AgentResponse) -> None:
        """Append the user's message and the answer to the session."""
        ...

    async def create_run(self, request: AgentRequest, *, at: datetime) -> None:
        """Insert a run in status `admitted`."""
        ...

    async def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        at: datetime,
        answer: str | None = None,
        error: str | None = None,
        total_cost_usd: Decimal | None = None,
        model: str | None = None,
    ) -> None:
        """Record a state transition (and, at the end, the answer and cost)."""
        ...

    async def save_plan(self, run_id: str, plan: AgentPlan) -> None:
        """Keep a plan revision (every revision is kept; the latest is the run's plan)."""
        ...

    async def save_step(self, run_id: str, index: int, record: StepRecord) -> None:
        """Insert or replace the `index`-th step record of the run."""
        ...

    async def append_events(self, events: Sequence[RunEvent]) -> None:
        """Append events (their ``seq`` is unique per run)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its latest plan, steps and events; None if unknown."""
        ...

    async def list_runs(
        self, *, user_id: str | None = None, status: RunStatus | None = None, limit: int = 50
    ) -> list[RunRecord]:
        """Runs, newest first (headers only: no plan, steps or events)."""
        ...
