"""The database ledger: a hard cap across tasks and processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.cost.ledger_support import CHAT, MODEL, NOON, WORST, CountingModel, controller, one_run

from bastion.cost.metered import MeteredChatModel
from bastion.errors import BudgetExceeded, ModelUnavailable, PriceUnknown
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import Usage
from bastion.storage.tables import cost_counters, cost_reservations
from bastion.testing.clock import FakeClock

WORKER = Path(__file__).parent / "ledger_worker.py"


async def ledger_state(engine) -> tuple[dict[str, int], Decimal, Decimal]:
    """Reservations by status, the largest reserved total of any counter, and settled spend."""
    async with engine.connect() as connection:
        statuses: dict[str, int] = {}
        for (status,) in await connection.execute(sa.select(cost_reservations.c.status)):
            statuses[status] = statuses.get(status, 0) + 1
        counters = (await connection.execute(sa.select(cost_counters))).all()
    reserved = max((Decimal(r.reserved_usd) for r in counters), default=Decimal(0))
    user_day = [r for r in counters if r.scope == "user" and r.period.startswith("d:")]
    settled = Decimal(user_day[0].settled_usd) if user_day else Decimal(0)
    return statuses, reserved, settled


def request(run_id: str, *, user: str = "u1", budget: str = "1.00") -> AgentRequest:
    return AgentRequest(
        user_id=user, session_id="s1", message="hi", run_id=run_id, max_budget_usd=Decimal(budget)
    )


async def test_fifty_concurrent_runs_get_exactly_the_calls_the_budget_affords(db_engine):
    k = 7
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=WORST * k)
    gate = asyncio.Event()
    model = CountingModel(gate=gate)
    refused = 0

    def all_decided() -> None:
        # The calls that got through wait at the model until every run got its answer from
        # the ledger: all k holds are held while the other runs try to reserve.
        if model.calls + refused == 50:
            gate.set()

    model.on_enter = all_decided

    async def run(i: int) -> bool:
        nonlocal refused
        paid = await one_run(cost, model, run_id=f"r{i}")
        if not paid:
            refused += 1
            all_decided()
        return paid

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(run(i)) for i in range(50)]

    assert model.calls == k
    assert sum(t.result() for t in tasks) == k
    statuses, reserved, settled = await ledger_state(db_engine)
    assert settled == WORST * k  # exactly the limit, never above
    assert reserved == 0
    assert statuses.get("settled") == k
    assert "held" not in statuses


@pytest.mark.slow
async def test_two_processes_share_one_budget(database_url, db_engine):
    k, runs = 5, 25
    cost = controller(db_engine, FakeClock(wall_start=NOON))
    await cost.start()  # migrate once, before both workers start
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            database_url,
            prefix,
            str(runs),
            str(WORST * k),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for prefix in ("a", "b")
    ]
    try:
        for proc in procs:  # both started and connected before either makes a call
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready"
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate(b"go\n") for proc in procs)), 120
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0]
    assert sum(int(out.strip()) for out, _ in outputs) == k
    statuses, reserved, settled = await ledger_state(db_engine)
    assert settled == WORST * k
    assert reserved == 0
    assert "held" not in statuses


async def test_no_hold_leaks_after_error_timeout_and_cancellation(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=WORST * 2)
    failing = CountingModel()

    def fail() -> None:
        raise ModelUnavailable("provider down", model=MODEL)

    failing.behaviour = fail
    assert not await _try(one_run(cost, failing, run_id="err"))

    await cost.admit(request("slow"), Principal(id="u1"))
    hanging = CountingModel(gate=asyncio.Event())  # never set: the call never returns
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await MeteredChatModel(wrapped=hanging, cost=cost, run_id="slow").complete(CHAT)

    await cost.admit(request("cancel"), Principal(id="u1"))
    arrived = asyncio.Event()
    hanging.on_enter = arrived.set
    call = asyncio.create_task(
        MeteredChatModel(wrapped=hanging, cost=cost, run_id="cancel").complete(CHAT)
    )
    await arrived.wait()  # the call holds its reservation and is at the model
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    statuses, reserved, settled = await ledger_state(db_engine)
    assert statuses == {"released": 3}
    assert reserved == 0
    assert settled == 0
    # The budget is whole again: two calls still fit.
    model = CountingModel()
    assert await one_run(cost, model, run_id="after1")
    assert await one_run(cost, model, run_id="after2")
    assert not await one_run(cost, model, run_id="after3")


async def _try(coro) -> bool:
    try:
        return bool(await coro)
    except ModelUnavailable:
        return False


async def test_holds_of_a_killed_process_are_freed_by_the_reconciler(db_engine):
    clock = FakeClock(wall_start=NOON)
    crashed = controller(db_engine, clock, user_daily_usd=WORST, reservation_ttl_s=60)
    await crashed.admit(request("dead"), Principal(id="u1"))
    await crashed.reserve("dead", MODEL, CHAT)  # then the process "dies": never settled
    survivor = controller(db_engine, clock, user_daily_usd=WORST, reservation_ttl_s=60)
    assert not await one_run(survivor, CountingModel(), run_id="blocked")  # the hold is real

    clock.advance(61)
    assert await survivor.reconcile() == 1
    statuses, reserved, _ = await ledger_state(db_engine)
    assert statuses["expired"] == 1
    assert reserved == 0
    assert await one_run(survivor, CountingModel(), run_id="freed")
    assert await survivor.reconcile() == 0


async def test_a_restarted_process_reconciles_when_it_starts(sqlite_engine):
    clock = FakeClock(wall_start=NOON)
    crashed = controller(sqlite_engine, clock, reservation_ttl_s=60)
    await crashed.admit(request("dead"), Principal(id="u1"))
    await crashed.reserve("dead", MODEL, CHAT)
    clock.advance(61)
    restarted = controller(sqlite_engine, clock, reservation_ttl_s=60)
    await restarted.start()
    statuses, reserved, _ = await ledger_state(sqlite_engine)
    assert statuses == {"expired": 1}
    assert reserved == 0


async def test_admission_reconciles_at_most_every_period(sqlite_engine):
    clock = FakeClock(wall_start=NOON)
    cost = controller(sqlite_engine, clock, reservation_ttl_s=10, reconcile_every_s=100)
    await cost.admit(request("r1"), Principal(id="u1"))
    await cost.reserve("r1", MODEL, CHAT)
    clock.advance(50)  # expired, but the last reconciliation is recent
    await cost.admit(request("r2"), Principal(id="u1"))
    assert (await ledger_state(sqlite_engine))[0] == {"held": 1}
    clock.advance(60)
    await cost.admit(request("r3"), Principal(id="u1"))
    assert (await ledger_state(sqlite_engine))[0] == {"expired": 1}


async def test_daily_window_resets_at_midnight_utc(db_engine):
    clock = FakeClock(wall_start=NOON)
    cost = controller(db_engine, clock, user_daily_usd=WORST)
    model = CountingModel()
    assert await one_run(cost, model, run_id="d1")
    assert not await one_run(cost, model, run_id="d2")  # refused at admission: day spent
    clock.advance(11 * 3600 + 3599)  # 23:59:59, still the same day
    assert not await one_run(cost, model, run_id="d3")
    clock.advance(1)  # midnight: a new window
    assert await one_run(cost, model, run_id="d4")
    assert model.calls == 2


async def test_monthly_budget_spans_days_and_resets_with_the_month(sqlite_engine):
    clock = FakeClock(wall_start=NOON)  # 27 November
    cost = controller(sqlite_engine, clock, user_monthly_usd=WORST)
    model = CountingModel()
    assert await one_run(cost, model, run_id="m1")
    clock.advance(86400)
    assert not await one_run(cost, model, run_id="m2")
    clock.advance(4 * 86400)  # 2 December
    assert await one_run(cost, model, run_id="m3")


async def test_per_user_override_wins_over_the_default(sqlite_engine):
    cost = controller(
        sqlite_engine,
        FakeClock(wall_start=NOON),
        user_daily_usd=WORST,
        user_budgets={"vip": {"daily_usd": str(WORST * 2)}},
    )
    model = CountingModel()
    assert await one_run(cost, model, run_id="v1", user="vip")
    assert await one_run(cost, model, run_id="v2", user="vip")
    assert not await one_run(cost, model, run_id="v3", user="vip")
    assert await one_run(cost, model, run_id="o1", user="other")
    assert not await one_run(cost, model, run_id="o2", user="other")


async def test_session_and_app_budgets_cap_across_users(sqlite_engine):
    cost = controller(sqlite_engine, FakeClock(wall_start=NOON), app_daily_usd=WORST * 2)
    model = CountingModel()
    assert await one_run(cost, model, run_id="a1", user="x")
    assert await one_run(cost, model, run_id="a2", user="y")
    assert not await one_run(cost, model, run_id="a3", user="z")

    session = controller(sqlite_engine, FakeClock(wall_start=NOON), app="other", session_usd=WORST)
    assert await one_run(session, model, run_id="s1")
    with pytest.raises(BudgetExceeded, match="session 's1' budget"):
        await session.admit(request("s2"), Principal(id="u1"))


async def test_run_budget_denies_with_a_clear_message_and_records_it(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON))
    await cost.admit(request("r1", budget="0.0001"), Principal(id="u1"))
    with pytest.raises(BudgetExceeded, match=r"run 'r1' budget of \$0.0001.*needs up to"):
        await cost.reserve("r1", MODEL, CHAT)
    assert (await ledger_state(db_engine))[0] == {"denied": 1}


async def test_unknown_model_price_is_denied_never_free(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON))
    await cost.admit(request("r1"), Principal(id="u1"))
    model = CountingModel(name="acme:mystery")
    with pytest.raises(PriceUnknown, match=r"no price is known for model 'acme:mystery'"):
        await MeteredChatModel(wrapped=model, cost=cost, run_id="r1").complete(CHAT)
    assert model.calls == 0
    assert "no price configured" in PriceUnknown.user_message


async def test_local_model_costs_nothing_but_its_tokens_are_recorded(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=Decimal(0))
    model = CountingModel(name="local:qwen2.5-0.5b")
    assert await one_run(cost, model, run_id="l1")
    async with db_engine.connect() as connection:
        row = (await connection.execute(sa.select(cost_reservations))).one()
    assert (row.status, row.model) == ("settled", "local:qwen2.5-0.5b")
    assert Decimal(row.cost_usd) == 0
    assert (row.input_tokens, row.output_tokens) == (14, 100)


async def test_replayed_run_finds_its_settled_call_and_is_not_charged_twice(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON))
    await cost.admit(request("r1"), Principal(id="u1"))
    first = await cost.reserve("r1", MODEL, CHAT)
    assert await cost.settle(first, Usage(input_tokens=14, output_tokens=50)) == Decimal("0.000114")
    # The process crashes before finishing; the run is recovered and replays from the top.
    replayer = controller(db_engine, FakeClock(wall_start=NOON))
    await replayer.admit(request("r1"), Principal(id="u1"))
    again = await replayer.reserve("r1", MODEL, CHAT)
    assert again.id == first.id
    assert await replayer.settle(again, Usage(input_tokens=14, output_tokens=50)) == Decimal(
        "0.000114"
    )
    assert await replayer.finish("r1") == Decimal("0.000114")
    assert (await ledger_state(db_engine))[0] == {"settled": 1}


async def test_replay_takes_over_the_hold_a_crash_left(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=WORST)
    await cost.admit(request("r1"), Principal(id="u1"))
    held = await cost.reserve("r1", MODEL, CHAT)
    replayer = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=WORST)
    await replayer.admit(request("r1"), Principal(id="u1"))
    again = await replayer.reserve("r1", MODEL, CHAT)  # would not fit twice in the budget
    assert again.id == held.id
    await replayer.release(again)
    await replayer.release(again)  # idempotent
    assert (await ledger_state(db_engine))[0] == {"released": 1}


async def test_finish_releases_holds_left_and_returns_the_settled_total(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON))
    await cost.admit(request("r1"), Principal(id="u1"))
    paid = await cost.reserve("r1", MODEL, CHAT)
    await cost.settle(paid, Usage(input_tokens=14, output_tokens=100))
    await cost.reserve("r1", MODEL, CHAT)
    assert cost.spent("r1") == WORST
    assert await cost.finish("r1") == WORST
    statuses, reserved, _ = await ledger_state(db_engine)
    assert statuses == {"settled": 1, "released": 1}
    assert reserved == 0
    assert cost.spent("r1") == 0
    with pytest.raises(ValueError, match="no open budget"):
        await cost.reserve("r1", MODEL, CHAT)


async def test_settling_an_unknown_reservation_is_refused(sqlite_engine):
    from bastion.cost.interface import Reservation

    cost = controller(sqlite_engine, FakeClock(wall_start=NOON))
    await cost.start()
    ghost = Reservation(id="nope", run_id="r", model=MODEL, amount_usd=WORST)
    with pytest.raises(ValueError, match="not in the ledger"):
        await cost.settle(ghost, Usage())


async def test_a_late_settlement_after_expiry_is_still_charged(sqlite_engine, caplog):
    clock = FakeClock(wall_start=NOON)
    cost = controller(sqlite_engine, clock, reservation_ttl_s=10)
    await cost.admit(request("r1"), Principal(id="u1"))
    held = await cost.reserve("r1", MODEL, CHAT)
    clock.advance(11)
    assert await cost.reconcile() == 1
    assert await cost.settle(held, Usage(input_tokens=14, output_tokens=100)) == WORST
    assert "settled after it was expired" in caplog.text
    statuses, reserved, _ = await ledger_state(sqlite_engine)
    assert statuses == {"settled": 1}
    assert reserved == 0


async def test_a_priced_tool_call_is_charged_once_per_key_and_capped(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON), user_daily_usd=Decimal("0.05"))
    await cost.admit(request("r1"), Principal(id="u1"))
    assert await cost.charge("r1", "tool:search", Decimal("0.03"), key="tool:0:1") == Decimal(
        "0.03"
    )
    # The same step replayed: charged once.
    assert await cost.charge("r1", "tool:search", Decimal("0.03"), key="tool:0:1") == Decimal(
        "0.03"
    )
    with pytest.raises(BudgetExceeded, match=r"user 'u1' daily budget .* needs up to \$0.03"):
        await cost.charge("r1", "tool:search", Decimal("0.03"), key="tool:1:1")
    assert await cost.finish("r1") == Decimal("0.03")
    statuses, reserved, settled = await ledger_state(db_engine)
    assert statuses == {"settled": 1, "denied": 1}
    assert reserved == 0
    assert settled == Decimal("0.03")


async def test_a_replayed_run_is_not_charged_again_for_a_priced_tool(sqlite_engine):
    cost = controller(sqlite_engine, FakeClock(wall_start=NOON))
    await cost.admit(request("r1"), Principal(id="u1"))
    await cost.charge("r1", "tool:search", Decimal("0.03"), key="tool:0:1")
    replayer = controller(sqlite_engine, FakeClock(wall_start=NOON))
    await replayer.admit(request("r1"), Principal(id="u1"))
    await replayer.charge("r1", "tool:search", Decimal("0.03"), key="tool:0:1")
    assert await replayer.finish("r1") == Decimal("0.03")
