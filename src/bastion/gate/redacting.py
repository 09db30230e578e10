"""Wrappers that pass what a run keeps and shows through the redactor, and audit budget denials.

The flow persists a run as it goes (events, plans, step records, the answer, errors) and hands
events to a live sink and the response to the caller. Rather than redact at each of those places
inside the flow, the system wraps the two seams everything passes through:

* `RedactingMemory` wraps the Memory Manager: every plan, step record, event, run error, answer
  and turn is redacted before it is stored (so the run store and the session history the planner
  reads later hold no secret);
* `redact_response` and `redacting_sink` do the same for the response returned to the caller and
  for the events shown live (the CLI's progress display).

What is deliberately NOT redacted: what the planner sees of the steps run so far, in the same
run. A tool result is the agent's working data (an order's details, a ticket id), and the model
needs it verbatim to plan the next step. Secrets a tool returns therefore reach the model; keep
them out of tool results, or declare their fields secret so every record of them is hidden.

`AuditedCostController` records every budget denial in the audit log (DESIGN.md: every decision
is audited), around whichever Cost Controller the system uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from bastion.clock import Clock
from bastion.cost.interface import CostController, Reservation
from bastion.errors import BudgetExceeded
from bastion.gate.interface import AuditEntry, AuditLog
from bastion.gate.redact import Redactor
from bastion.memory.facts import Fact, FactSource
from bastion.memory.interface import ForgetReport, MemoryContext, MemoryManager, RunRecord
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    AgentResponse,
    PlanStep,
    Principal,
    RunEvent,
    RunStatus,
    StepRecord,
    ToolOutcome,
    Verdict,
)
from bastion.models.interface import ChatModel, ChatRequest, Usage


def redact_plan(redactor: Redactor, plan: AgentPlan) -> AgentPlan:
    """`plan` with its reasoning and every step's description, args, result and error redacted.

    Like every function here, it gives back the object itself where redacting changed nothing
    (most records hold no secret): no copy, no re-validation.
    """
    reasoning = redactor.text(plan.reasoning)
    steps = tuple(redact_step(redactor, step) for step in plan.steps)
    if reasoning == plan.reasoning and all(a is b for a, b in zip(steps, plan.steps, strict=True)):
        return plan
    return replace(plan, reasoning=reasoning, steps=steps)


def redact_step(redactor: Redactor, step: PlanStep) -> PlanStep:
    """`step` with its description, args, result and error redacted."""
    description = redactor.text(step.description)
    args = redactor.value(step.tool_args)
    result = redactor.value(step.result)
    error = None if step.error is None else redactor.text(step.error)
    if _same(
        description, step.description, args, step.tool_args, result, step.result, error, step.error
    ):
        return step
    return replace(step, description=description, tool_args=args, result=result, error=error)


def redact_record(redactor: Redactor, record: StepRecord) -> StepRecord:
    """`record` with its step, outcome (value and error) and verdict reason redacted."""
    outcome: ToolOutcome | None = record.outcome
    if outcome is not None:
        value = redactor.value(outcome.value)
        error = None if outcome.error is None else redactor.text(outcome.error)
        if not _same(value, outcome.value, error, outcome.error):
            outcome = replace(outcome, value=value, error=error)
    verdict: Verdict | None = record.verdict
    if verdict is not None:
        reason = redactor.text(verdict.reason)
        if reason != verdict.reason:
            verdict = replace(verdict, reason=reason)
    step = redact_step(redactor, record.step)
    if step is record.step and outcome is record.outcome and verdict is record.verdict:
        return record
    return replace(record, step=step, outcome=outcome, verdict=verdict)


def redact_event(redactor: Redactor, event: RunEvent) -> RunEvent:
    """`event` with its data redacted."""
    data = redactor.value(event.data)
    return event if _same(data, event.data) else replace(event, data=data)


def _same(*pairs: Any) -> bool:
    """Whether each (redacted, original) pair in `pairs` is unchanged.

    `Redactor.value` returns what it was given where it changed nothing; texts compare equal.
    """
    return all(
        new is old or (type(new) is str and new == old)
        for new, old in zip(pairs[::2], pairs[1::2], strict=True)
    )


def redact_response(redactor: Redactor, response: AgentResponse) -> AgentResponse:
    """`response` with its message, error and plan redacted: what the caller gets back."""
    return replace(
        response,
        message=redactor.text(response.message),
        error=None if response.error is None else redactor.text(response.error),
        plan=None if response.plan is None else redact_plan(redactor, response.plan),
    )


def redacting_sink(
    redactor: Redactor, sink: Callable[[RunEvent], None]
) -> Callable[[RunEvent], None]:
    """An event sink that hands `sink` each event redacted."""

    def redacted(event: RunEvent) -> None:
        sink(redact_event(redactor, event))

    return redacted


def _opt(redactor: Redactor, text: str | None) -> str | None:
    return None if text is None else redactor.text(text)


class RedactingMemory(MemoryManager):
    """A Memory Manager that stores everything through a redactor; reads pass through.

    Args:
        wrapped: the memory that stores.
        redactor: what to hide.
    """

    def __init__(self, wrapped: MemoryManager, *, redactor: Redactor) -> None:
        self.wrapped = wrapped
        self._redactor = redactor

    def __getattr__(self, name: str) -> Any:
        # Extras of the wrapped store (its engine, say) stay reachable. A write method added to
        # the MemoryManager protocol must be added above, redacted, not reached through here.
        return getattr(self.wrapped, name)

    def _request(self, request: AgentRequest) -> AgentRequest:
        return replace(request, message=self._redactor.text(request.message), api_key=None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.wrapped.start()

    async def close(self) -> None:
        await self.wrapped.close()

    async def load_context(
        self,
        request: AgentRequest,
        *,
        token_budget: int,
        reserved_tokens: int = 0,
        model: ChatModel | None = None,
    ) -> MemoryContext:
        return await self.wrapped.load_context(
            request, token_budget=token_budget, reserved_tokens=reserved_tokens, model=model
        )

    async def remember(
        self,
        user_id: str,
        content: str,
        *,
        source: FactSource = "app",
        source_key: str | None = None,
        run_id: str | None = None,
    ) -> Fact:
        # A fact is kept for months and shown to every later run: never with a secret in it.
        return await self.wrapped.remember(
            user_id,
            self._redactor.text(content),
            source=source,
            source_key=source_key,
            run_id=run_id,
        )

    async def recall(self, user_id: str, query: str, *, limit: int = 5) -> list[Fact]:
        return await self.wrapped.recall(user_id, query, limit=limit)

    async def forget_user(self, user_id: str) -> ForgetReport:
        return await self.wrapped.forget_user(user_id)

    async def purge_expired(self) -> int:
        return await self.wrapped.purge_expired()

    async def persist_turns(self, request: AgentRequest, response: AgentResponse) -> None:
        await self.wrapped.persist_turns(
            self._request(request), redact_response(self._redactor, response)
        )

    async def create_run(
        self, request: AgentRequest, *, at: datetime, events: Sequence[RunEvent] = ()
    ) -> None:
        await self.wrapped.create_run(self._request(request), at=at, events=self._events(events))

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
        await self.wrapped.update_run(
            run_id,
            status=status,
            at=at,
            answer=_opt(self._redactor, answer),
            error=_opt(self._redactor, error),
            total_cost_usd=total_cost_usd,
            model=model,
            events=self._events(events),
        )

    async def save_plan(
        self, run_id: str, plan: AgentPlan, *, events: Sequence[RunEvent] = ()
    ) -> None:
        await self.wrapped.save_plan(
            run_id, redact_plan(self._redactor, plan), events=self._events(events)
        )

    async def save_step(
        self, run_id: str, index: int, record: StepRecord, *, events: Sequence[RunEvent] = ()
    ) -> None:
        await self.wrapped.save_step(
            run_id, index, redact_record(self._redactor, record), events=self._events(events)
        )

    async def append_events(self, events: Sequence[RunEvent]) -> None:
        await self.wrapped.append_events(self._events(events))

    def _events(self, events: Sequence[RunEvent]) -> list[RunEvent]:
        return [redact_event(self._redactor, e) for e in events]

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.wrapped.get_run(run_id)

    async def list_runs(
        self, *, user_id: str | None = None, status: RunStatus | None = None, limit: int = 50
    ) -> list[RunRecord]:
        return await self.wrapped.list_runs(user_id=user_id, status=status, limit=limit)


class AuditedCostController(CostController):
    """A Cost Controller that records each budget denial (admission or reservation) in the audit.

    Args:
        wrapped: the controller that decides.
        audit: where denials are recorded.
        clock: stamps the entries.
    """

    def __init__(self, wrapped: CostController, *, audit: AuditLog, clock: Clock) -> None:
        self.wrapped = wrapped
        self._audit = audit
        self._clock = clock
        self._principals: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    async def _denied(self, run_id: str, exc: BudgetExceeded, **details: Any) -> None:
        await self._audit.append(
            AuditEntry(
                at=self._clock.now(),
                action="budget",
                decision="deny",
                principal_id=self._principals.get(run_id),
                reason=str(exc),
                run_id=run_id,
                details=details,
            )
        )

    async def admit(self, request: AgentRequest, principal: Principal) -> None:
        self._principals[request.run_id] = principal.id
        try:
            await self.wrapped.admit(request, principal)
        except BudgetExceeded as exc:
            await self._denied(request.run_id, exc, stage="admit")
            self._principals.pop(request.run_id, None)
            raise

    async def reserve(self, run_id: str, model: str, request: ChatRequest) -> Reservation:
        try:
            return await self.wrapped.reserve(run_id, model, request)
        except BudgetExceeded as exc:
            await self._denied(run_id, exc, stage="reserve", model=model)
            raise

    async def settle(self, reservation: Reservation, usage: Usage) -> Decimal:
        return await self.wrapped.settle(reservation, usage)

    async def charge(self, run_id: str, item: str, amount_usd: Decimal, *, key: str) -> Decimal:
        try:
            return await self.wrapped.charge(run_id, item, amount_usd, key=key)
        except BudgetExceeded as exc:
            await self._denied(run_id, exc, stage="charge", item=item)
            raise

    async def release(self, reservation: Reservation) -> None:
        await self.wrapped.release(reservation)

    def spent(self, run_id: str) -> Decimal:
        return self.wrapped.spent(run_id)

    async def finish(self, run_id: str) -> Decimal:
        self._principals.pop(run_id, None)
        return await self.wrapped.finish(run_id)
