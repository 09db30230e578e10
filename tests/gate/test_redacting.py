"""RedactingMemory stores nothing secret; AuditedCostController audits budget denials."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bastion.cost.default import LedgerCostController
from bastion.cost.pricing import PriceTable
from bastion.errors import BudgetExceeded
from bastion.gate.audit import InMemoryAuditLog
from bastion.gate.redact import REDACTED, Redactor
from bastion.gate.redacting import (
    AuditedCostController,
    RedactingMemory,
    redact_response,
    redacting_sink,
)
from bastion.memory.default import SqlMemory
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    AgentResponse,
    EventKind,
    PlanStep,
    Principal,
    RunEvent,
    RunStatus,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
    Verdict,
)
from bastion.models.interface import ChatMessage, ChatRequest
from bastion.settings import CostSettings
from bastion.testing.clock import FakeClock

CANARY = "sk-canary-0123456789abcdefghij"


@pytest.fixture
async def memory(tmp_path) -> AsyncIterator[RedactingMemory]:
    clock = FakeClock()
    wrapped = SqlMemory.from_url(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", clock=clock)
    async with RedactingMemory(wrapped, redactor=Redactor(secret_fields=["note"])) as redacting:
        yield redacting


def request() -> AgentRequest:
    return AgentRequest(
        user_id="c1",
        session_id="s1",
        message=f"my key is {CANARY}",
        run_id="run_r",
        api_key="bst_" + "a" * 12 + "_" + "b" * 43,
    )


def step() -> PlanStep:
    return PlanStep(
        step_id=0,
        description=f"use {CANARY}",
        tool_name="t",
        tool_args={"q": CANARY, "note": "declared secret"},
    )


async def test_everything_stored_about_a_run_is_redacted(memory):
    clock = FakeClock()
    await memory.create_run(request(), at=clock.now())
    await memory.save_plan("run_r", AgentPlan(steps=(step(),), reasoning=f"because {CANARY}"))
    await memory.save_step(
        "run_r",
        0,
        StepRecord(
            step=step(),
            status=StepStatus.FAILED,
            outcome=ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, f"boom {CANARY}"),
            verdict=Verdict(passed=False, reason=f"bad {CANARY}"),
        ),
    )
    await memory.append_events(
        [RunEvent(run_id="run_r", seq=1, kind=EventKind.STATUS, at=clock.now(), data={"e": CANARY})]
    )
    await memory.update_run(
        "run_r", status=RunStatus.FAILED, at=clock.now(), answer=f"a {CANARY}", error=f"e {CANARY}"
    )
    response = AgentResponse(run_id="run_r", status=RunStatus.FAILED, message=f"m {CANARY}")
    await memory.persist_turns(request(), response)

    record = await memory.get_run("run_r")
    context = await memory.load_context(request(), token_budget=1000)
    stored = repr(record) + repr(context)
    assert CANARY not in stored
    assert "declared secret" not in stored
    assert stored.count(REDACTED) >= 9
    assert record is not None
    assert record.steps[0].step.tool_args == {"q": REDACTED, "note": REDACTED}
    assert (await memory.list_runs(user_id="c1"))[0].run_id == "run_r"


async def test_a_successful_outcome_value_is_redacted_too(memory):
    await memory.create_run(request(), at=FakeClock().now())
    await memory.save_step(
        "run_r",
        0,
        StepRecord(
            step=step(),
            status=StepStatus.SUCCESS,
            outcome=ToolOutcome.success({"token": "abc", "text": CANARY}),
        ),
    )
    record = await memory.get_run("run_r")
    assert record is not None
    assert record.steps[0].outcome == ToolOutcome.success({"token": REDACTED, "text": REDACTED})


async def test_extras_of_the_wrapped_store_stay_reachable(memory):
    assert memory.engine is memory.wrapped.engine


def test_the_response_and_live_events_are_redacted():
    plan = AgentPlan(steps=(replace(step(), result={"k": CANARY}, error=CANARY),), reasoning="r")
    response = AgentResponse(
        run_id="r", status=RunStatus.COMPLETED, message=CANARY, plan=plan, error=CANARY
    )
    assert CANARY not in repr(redact_response(Redactor(), response))
    seen: list[RunEvent] = []
    sink = redacting_sink(Redactor(), seen.append)
    sink(
        RunEvent(run_id="r", seq=1, kind=EventKind.DENIED, at=FakeClock().now(), data={"x": CANARY})
    )
    assert seen[0].data == {"x": REDACTED}


class _ClosedForTheDay(LedgerCostController):
    """A controller whose budgets refuse new runs (the ledger of issue 7 will, per user and day)."""

    async def admit(self, request, principal):
        raise BudgetExceeded(f"daily budget of {principal.id} is spent")


async def test_budget_denials_are_audited_at_admission_and_reservation():
    audit, clock = InMemoryAuditLog(), FakeClock()
    prices = PriceTable(CostSettings())
    principal = Principal(id="c1")
    base = AgentRequest(user_id="c1", session_id="s", message="hi", run_id="run_p")
    closed = AuditedCostController(
        _ClosedForTheDay(prices=prices, clock=clock), audit=audit, clock=clock
    )
    with pytest.raises(BudgetExceeded, match="daily budget"):
        await closed.admit(base, principal)

    cost = AuditedCostController(
        LedgerCostController(prices=prices, clock=clock), audit=audit, clock=clock
    )
    tiny = replace(base, run_id="run_q", max_budget_usd=Decimal("0.000001"))
    await cost.admit(tiny, principal)
    chat = ChatRequest(messages=(ChatMessage(role="user", content="x" * 4000),), max_tokens=4000)
    with pytest.raises(BudgetExceeded):
        await cost.reserve("run_q", "openai:gpt-4o", chat)
    assert cost.spent("run_q") == 0
    assert await cost.finish("run_q") == 0
    assert [
        (e.action, e.decision, e.principal_id, e.run_id, e.details["stage"]) for e in audit.entries
    ] == [
        ("budget", "deny", "c1", "run_p", "admit"),
        ("budget", "deny", "c1", "run_q", "reserve"),
    ]
    assert "daily budget of c1 is spent" in audit.entries[0].reason


def test_a_record_with_nothing_to_hide_is_kept_as_it_is_and_one_with_a_secret_is_copied():
    from bastion.gate.redacting import redact_event, redact_plan, redact_record

    redactor = Redactor()
    step = PlanStep(step_id=1, description="look up", tool_name="lookup", tool_args={"o": "A-1"})
    record = StepRecord(
        step=step,
        status=StepStatus.SUCCESS,
        outcome=ToolOutcome(ok=True, value={"status": "shipped"}),
        verdict=Verdict(passed=True, reason="fine"),
    )
    assert redact_record(redactor, record) is record
    plan = AgentPlan(steps=(step,), reasoning="plain")
    assert redact_plan(redactor, plan) is plan
    at = datetime(2026, 3, 1, tzinfo=UTC)
    event = RunEvent(run_id="r", seq=1, kind=EventKind.STEP_FINISHED, at=at, data={"a": 1})
    assert redact_event(redactor, event) is event

    leaky_outcome = ToolOutcome(ok=True, value={"token": CANARY})
    leaky = replace(record, outcome=leaky_outcome)
    hidden = redact_record(redactor, leaky)
    assert hidden is not leaky
    assert hidden.outcome == ToolOutcome(ok=True, value={"token": REDACTED})
    assert hidden.step is step  # the parts with nothing to hide are shared
    assert leaky_outcome.value == {"token": CANARY}
