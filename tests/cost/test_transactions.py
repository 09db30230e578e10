"""The ledger's write paths: PostgreSQL's one-statement steps, and what both backends agree on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from tests.cost.ledger_support import CHAT, MODEL, NOON, WORST, CountingModel, controller, one_run

from bastion.cost.metered import MeteredChatModel
from bastion.errors import BudgetExceeded, ModelUnavailable
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import Usage
from bastion.storage.tables import cost_counters, cost_reservations
from bastion.testing.clock import FakeClock

ALL_BUDGETS = {
    "session_usd": "1",
    "user_daily_usd": "1",
    "user_monthly_usd": "1",
    "app_daily_usd": "1",
    "app_monthly_usd": "1",
}


def request(run_id: str, *, user: str = "u1") -> AgentRequest:
    return AgentRequest(
        user_id=user, session_id="s1", message="hi", run_id=run_id, max_budget_usd=Decimal(1)
    )


async def counters(engine) -> dict[str, tuple[Decimal, Decimal]]:
    """Every counter: ``scope|subject|period`` → (settled, reserved)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(sa.select(cost_counters))).all()
    return {
        f"{r.scope}|{r.subject}|{r.period}": (Decimal(r.settled_usd), Decimal(r.reserved_usd))
        for r in rows
    }


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_on_postgres_each_step_is_one_statement_committed_at_once(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), **ALL_BUDGETS)
    await cost.admit(request("r1"), Principal(id="u1"))
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _many) -> None:
        statements.append(statement)

    event.listen(db_engine.sync_engine, "before_cursor_execute", count)

    async def statements_of(step: Awaitable[object]) -> int:
        statements.clear()
        await step
        return len(statements)

    try:
        held = await cost.reserve("r1", MODEL, CHAT)
        assert len(statements) == 1
        # Committed by that statement: the hold is on all six counters (run, session, user and
        # app by day and month), as another connection sees them.
        assert set((await counters(db_engine)).values()) == {(Decimal(0), WORST)}
        assert (
            await statements_of(cost.settle(held, Usage(input_tokens=14, output_tokens=100))) == 1
        )
        assert set((await counters(db_engine)).values()) == {(WORST, Decimal(0))}
        released = await cost.reserve("r1", MODEL, CHAT)
        assert await statements_of(cost.release(released)) == 1
        assert await statements_of(cost.charge("r1", "tool", Decimal("0.01"), key="t:0:1")) == 1
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", count)
    assert set((await counters(db_engine)).values()) == {(WORST + Decimal("0.01"), Decimal(0))}


async def test_many_shared_counters_under_concurrency_hold_release_and_settle_exactly(db_engine):
    # Five counters shared by every run (session, user and app by day and month), one of them
    # affording k calls: every statement locks several shared rows, in the same order.
    k = 7
    budgets = {**ALL_BUDGETS, "app_daily_usd": str(WORST * k)}
    cost = controller(db_engine, FakeClock(wall_start=NOON), **budgets)
    failing = CountingModel()

    def fail() -> None:
        raise ModelUnavailable("provider down", model=MODEL)

    failing.behaviour = fail

    async def try_run(model: CountingModel, run_id: str) -> bool:
        try:
            return await one_run(cost, model, run_id=run_id)
        except ModelUnavailable:
            return False

    async with asyncio.TaskGroup() as group:  # held, then released as each call fails
        for i in range(50):
            group.create_task(try_run(failing, f"f{i}"))
    assert failing.calls > 0
    assert set((await counters(db_engine)).values()) == {(Decimal(0), Decimal(0))}

    model = CountingModel()
    async with asyncio.TaskGroup() as group:
        for i in range(50):
            group.create_task(one_run(cost, model, run_id=f"p{i}"))
    assert model.calls == k
    totals = await counters(db_engine)
    shared = {key: value for key, value in totals.items() if not key.startswith("run|")}
    assert len(shared) == 5
    assert set(shared.values()) == {(WORST * k, Decimal(0))}
    assert all(reserved == 0 for _, reserved in totals.values())


async def test_a_window_that_turns_between_admission_and_call_gets_its_counter(db_engine):
    clock = FakeClock(wall_start=NOON)
    clock.advance(12 * 3600 - 1)  # 23:59:59 on the 27th
    cost = controller(db_engine, clock, user_daily_usd=WORST)
    await cost.admit(request("r1"), Principal(id="u1"))
    clock.advance(1)  # the call is made on the 28th, whose counter does not exist yet
    await MeteredChatModel(wrapped=CountingModel(), cost=cost, run_id="r1").complete(CHAT)
    totals = await counters(db_engine)
    assert totals["user|u1|d:2026-11-28"] == (WORST, Decimal(0))
    assert totals.get("user|u1|d:2026-11-27", (Decimal(0), Decimal(0))) == (Decimal(0), Decimal(0))


async def test_a_subject_with_the_key_separator_is_charged_to_its_own_counter(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=WORST)
    model = CountingModel()
    assert await one_run(cost, model, run_id="r|1", user="a|b")
    assert not await one_run(cost, model, run_id="r|2", user="a|b")
    assert await one_run(cost, model, run_id="r|3", user="a")
    totals = await counters(db_engine)
    assert totals["user|a|b|d:2026-11-27"] == (WORST, Decimal(0))
    assert totals["user|a|d:2026-11-27"] == (WORST, Decimal(0))
    assert totals["run|r|1|all"] == (WORST, Decimal(0))


async def test_a_denial_is_recorded_with_its_reason_and_holds_nothing(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=WORST * 2)
    await cost.admit(request("r1"), Principal(id="u1"))
    await cost.reserve("r1", MODEL, CHAT)
    await cost.reserve("r1", MODEL, CHAT)
    with pytest.raises(BudgetExceeded, match=r"\$0 spent and \$0.00042800 held"):
        await cost.reserve("r1", MODEL, CHAT)
    async with db_engine.connect() as connection:
        rows = (await connection.execute(sa.select(cost_reservations))).all()
    denied = [r for r in rows if r.status == "denied"]
    assert len(denied) == 1
    assert denied[0].id == "r1:2"
    assert denied[0].amount_usd == 0
    assert denied[0].reason.startswith("run 'r1' would exceed the user 'u1' daily budget")
    assert (await counters(db_engine))["user|u1|d:2026-11-27"] == (Decimal(0), WORST * 2)
