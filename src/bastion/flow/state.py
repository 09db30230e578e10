"""The run's state machine and its checkpoint at every transition.

```
admitted → planning → running ⇄ awaiting_approval → completed | failed | aborted | cancelled
                        ↑   │  ⇄ awaiting_operator
                        └───┘ (replanning goes back to planning)
```

`RunState` is a run's mutable state while one flow owns it. Every transition is checked against
`ALLOWED` and persisted (run row + events) before the flow goes on, so a run is inspectable while it
runs and after a crash. Work per step is constant: a step is one row, its events a few rows; nothing
of the run's history is rewritten or rescanned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bastion.clock import Clock
from bastion.errors import BastionError
from bastion.memory.interface import MemoryManager
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    EventKind,
    Principal,
    RunEvent,
    RunStatus,
    StepRecord,
)
from bastion.models.interface import ChatResponse

logger = logging.getLogger("bastion.flow")

#: Called with every event of a run as it happens (the CLI's live progress, tests). Must not block.
EventSink = Callable[[RunEvent], None]

_S = RunStatus
ALLOWED: Mapping[RunStatus, frozenset[RunStatus]] = {
    _S.ADMITTED: frozenset({_S.PLANNING, _S.FAILED, _S.ABORTED, _S.CANCELLED}),
    _S.PLANNING: frozenset({_S.RUNNING, _S.COMPLETED, _S.FAILED, _S.ABORTED, _S.CANCELLED}),
    _S.RUNNING: frozenset(
        {
            _S.PLANNING,
            _S.AWAITING_APPROVAL,
            _S.AWAITING_OPERATOR,
            _S.COMPLETED,
            _S.FAILED,
            _S.ABORTED,
            _S.CANCELLED,
        }
    ),
    _S.AWAITING_APPROVAL: frozenset({_S.RUNNING, _S.FAILED, _S.ABORTED, _S.CANCELLED}),
    _S.AWAITING_OPERATOR: frozenset({_S.RUNNING, _S.FAILED, _S.ABORTED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.ABORTED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class IllegalTransition(BastionError):
    """A bug: the flow tried a transition the state machine forbids."""


def check_transition(old: RunStatus, new: RunStatus) -> None:
    """Raise `IllegalTransition` unless ``old → new`` is allowed."""
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"run cannot go from {old.value} to {new.value}")


class RunState:
    """One run's state, owned by one flow. Not shared between runs or tasks."""

    def __init__(
        self,
        *,
        request: AgentRequest,
        memory: MemoryManager,
        clock: Clock,
        deadline_at: datetime,
        on_event: EventSink | None = None,
    ) -> None:
        self.request = request
        self.run_id = request.run_id
        self.status = RunStatus.ADMITTED
        #: Wall-clock, so that it means the same after a restart (a monotonic clock does not).
        self.deadline_at = deadline_at
        #: The run's whole-run timer (set by the system), paused while a person is asked.
        self.timer: asyncio.Timeout | None = None
        self.principal: Principal | None = None
        self.plan: AgentPlan | None = None
        self.records: list[StepRecord] = []
        self.replans = 0
        self.model_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.model_name: str | None = None
        #: Why that model plans (set by a model cascade, `bastion.cost.cascade`).
        self.model_reason: str | None = None
        #: Notices of graceful degradation met so far (a fallback model answered).
        self.degraded: list[str] = []
        self._memory = memory
        self._clock = clock
        self._on_event = on_event
        self._seq = 0
        self._pending: list[RunEvent] = []

    @property
    def time_left_s(self) -> float:
        """Seconds before the run's deadline (negative once past it)."""
        return (self.deadline_at - self._clock.now()).total_seconds()

    @property
    def deadline(self) -> float:
        """The deadline on the clock's monotonic scale, for this process (sandbox calls)."""
        return self._clock.monotonic() + self.time_left_s

    def pause_deadline(self) -> None:
        """Stop the run's clock while it waits for a person (that wait has its own limit)."""
        if self.timer is not None:
            self.timer.reschedule(None)

    def restart_deadline(self, timeout_s: float) -> None:
        """After a person answered, give the run its whole time limit again."""
        self.deadline_at = self._clock.now() + timedelta(seconds=timeout_s)
        if self.timer is not None:
            self.timer.reschedule(asyncio.get_running_loop().time() + timeout_s)

    async def begin(self) -> None:
        """Persist the run in status `admitted`, with its first event (one transaction)."""
        at = self._clock.now()
        await self._stored_then_emitted(
            EventKind.STATUS,
            {"status": RunStatus.ADMITTED.value},
            lambda events: self._memory.create_run(self.request, at=at, events=events),
        )

    async def transition(
        self,
        new: RunStatus,
        *,
        answer: str | None = None,
        error: str | None = None,
        total_cost_usd: Decimal | None = None,
    ) -> None:
        """Move to `new` and checkpoint: the run row and the events so far, one transaction."""
        check_transition(self.status, new)
        self.status = new
        at = self._clock.now()
        data: dict[str, Any] = {"status": new.value}
        if error is not None:
            data["error"] = error
        await self._stored_then_emitted(
            EventKind.STATUS,
            data,
            lambda events: self._memory.update_run(
                self.run_id,
                status=new,
                at=at,
                answer=answer,
                error=error,
                total_cost_usd=total_cost_usd,
                model=self.model_name,
                events=events,
            ),
        )

    async def save_plan(self, plan: AgentPlan) -> None:
        """Keep a plan revision and announce it."""
        self.plan = plan
        steps = [
            {"step_id": s.step_id, "tool_name": s.tool_name, "description": s.description}
            for s in plan.steps
        ]
        await self._stored_then_emitted(
            EventKind.PLAN,
            {"revision": plan.revision, "reasoning": plan.reasoning, "steps": steps},
            lambda events: self._memory.save_plan(self.run_id, plan, events=events),
        )

    async def record_step(self, record: StepRecord) -> None:
        """Append a step record (one row) with the events that led to it (one transaction)."""
        index = len(self.records)
        self.records.append(record)
        await self._with_events(
            lambda events: self._memory.save_step(self.run_id, index, record, events=events)
        )

    def count_model_call(
        self, response: ChatResponse, cost: object, *, purpose: str | None = None
    ) -> None:
        """Count one model call of the run (calls, tokens) and emit its ``model_call`` event.

        Args:
            response: what the model answered, with its usage.
            cost: what the call cost (as settled by the cost controller).
            purpose: why the call was made, when not for the plan (``summary``, ``judge``).
        """
        self.model_calls += 1
        self.input_tokens += response.usage.input_tokens
        self.output_tokens += response.usage.output_tokens
        self.emit(
            EventKind.MODEL_CALL,
            **({"purpose": purpose} if purpose is not None else {}),
            model=response.model,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            cost_usd=str(cost),
            latency_s=round(response.latency_s, 4),
            finish_reason=response.finish_reason,
        )

    def emit(self, kind: EventKind, **data: Any) -> RunEvent:
        """Create the next event, hand it to the sink, and queue it for the next flush."""
        event = self._next_event(kind, data)
        self._pending.append(event)
        self._deliver(event)
        return event

    def _next_event(self, kind: EventKind, data: dict[str, Any]) -> RunEvent:
        self._seq += 1
        return RunEvent(
            run_id=self.run_id, seq=self._seq, kind=kind, at=self._clock.now(), data=data
        )

    async def _stored_then_emitted(
        self,
        kind: EventKind,
        data: dict[str, Any],
        write: Callable[[list[RunEvent]], Awaitable[None]],
    ) -> None:
        """Write (with the queued events and a new one), then hand the new one to the sink.

        The sink sees it only once stored with what it announces (a client told of a status
        reads that status). If the write fails, the new event is dropped: it never happened. If
        the run is cancelled meanwhile, the write still completes (`TransactionRunner` shields
        it): the event stays queued (stored once, whoever writes it) and is told, so that the
        events' ``seq`` has no gap.
        """
        event = self._next_event(kind, data)
        self._pending.append(event)
        try:
            await self._with_events(write)
        except asyncio.CancelledError:
            self._deliver(event)
            raise
        except BaseException:
            self._pending.remove(event)
            if self._seq == event.seq:
                self._seq -= 1
            raise
        self._deliver(event)

    def _deliver(self, event: RunEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                # A broken progress display must never break the run it displays.
                logger.exception("event sink failed on %s event of run %s", event.kind, self.run_id)

    async def flush(self) -> None:
        """Persist queued events."""
        if self._pending:
            await self._with_events(self._memory.append_events)

    async def _with_events(self, write: Callable[[list[RunEvent]], Awaitable[None]]) -> None:
        """`write` the queued events (with whatever else it writes); kept queued if it fails."""
        events, self._pending = self._pending, []
        try:
            await write(events)
        except BaseException:
            self._pending[:0] = events
            raise
