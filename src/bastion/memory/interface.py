"""The Memory Manager's contract: session history for the planner's context, and run persistence.

It persists four things: turns of a session (what users asked and were answered), runs (status,
plan, steps, events; written at every state transition so a run is inspectable while it goes),
long-term facts per user (`bastion.memory.facts`), and summaries of sessions' older turns. Writes
are small and constant per step: a step is one row, an event one row; nothing rewrites a run's
history.

Retention: `forget_user` removes everything stored about one user; expired facts and turns (a
TTL in `MemorySettings`) are never read, and `purge_expired` deletes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from bastion.memory.facts import Fact, FactSource
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    AgentResponse,
    RunEvent,
    RunStatus,
    StepRecord,
)
from bastion.models.interface import ChatModel


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One message of a session's history."""

    role: str  # "user" | "assistant"
    content: str
    at: datetime
    run_id: str | None = None
    #: The turn's row id in the store (orders turns; a summary covers turns up to one). Not
    #: part of equality: the same turn read from two stores is the same turn.
    turn_id: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryContext:
    """What the planner sees of the past, within a token budget.

    The user's most relevant long-term facts, a summary of the session's older turns (when a
    model summarised them) and the recent turns verbatim, oldest first.
    """

    turns: tuple[Turn, ...] = ()
    #: Estimated tokens of `facts`, `summary` and `turns` (never above the budget given).
    token_count: int = 0
    #: How many older turns are not shown verbatim (summarised or left out).
    omitted_turns: int = 0
    facts: tuple[Fact, ...] = ()
    #: The model's summary of the session's older turns, or None.
    summary: str | None = None
    #: How many of the omitted turns `summary` covers.
    summarised_turns: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetReport:
    """What `MemoryManager.forget_user` deleted, by table."""

    user_id: str
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows deleted in all."""
        return sum(self.deleted.values())


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

    async def load_context(
        self,
        request: AgentRequest,
        *,
        token_budget: int,
        reserved_tokens: int = 0,
        model: ChatModel | None = None,
    ) -> MemoryContext:
        """Facts, summary and recent turns of the request's user and session, within budget.

        Args:
            request: whose context (its user and session; its message is the facts' query).
            token_budget: the most tokens the whole prompt may take.
            reserved_tokens: what the rest of the prompt takes (system prompt, tools, request);
                the context gets ``token_budget - reserved_tokens``.
            model: summarises older turns that no longer fit (charged to the caller's run);
                None never summarises (older turns are only left out).
        """
        ...

    async def remember(
        self,
        user_id: str,
        content: str,
        *,
        source: FactSource = "app",
        source_key: str | None = None,
        run_id: str | None = None,
    ) -> Fact:
        """Store a long-term fact about `user_id` (idempotent per ``source_key``)."""
        ...

    async def recall(self, user_id: str, query: str, *, limit: int = 5) -> list[Fact]:
        """`user_id`'s facts matching `query`, most relevant first; never another user's."""
        ...

    async def forget_user(self, user_id: str) -> ForgetReport:
        """Delete everything stored about `user_id`: runs, turns, facts, summaries."""
        ...

    async def purge_expired(self) -> int:
        """Delete facts and turns past their TTL; return how many rows went."""
        ...

    async def persist_turns(self, request: AgentRequest, response: AgentResponse) -> None:
        """Append the user's message and the answer to the session."""
        ...

    async def create_run(
        self, request: AgentRequest, *, at: datetime, events: Sequence[RunEvent] = ()
    ) -> None:
        """Insert a run in status `admitted` (with `events`, in the same transaction)."""
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
        events: Sequence[RunEvent] = (),
    ) -> None:
        """Record a state transition (and, at the end, the answer and cost), with `events`."""
        ...

    async def save_plan(
        self, run_id: str, plan: AgentPlan, *, events: Sequence[RunEvent] = ()
    ) -> None:
        """Keep a plan revision, with `events` (every revision is kept; the latest is the plan)."""
        ...

    async def save_step(
        self, run_id: str, index: int, record: StepRecord, *, events: Sequence[RunEvent] = ()
    ) -> None:
        """Insert or replace the `index`-th step record of the run, with `events`."""
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
