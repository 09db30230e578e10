from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from bastion.cost.default import LedgerCostController
from bastion.cost.pricing import PriceTable
from bastion.cost.tokens import estimate_input_tokens
from bastion.errors import BudgetExceeded
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatMessage, ChatRequest, Usage
from bastion.settings import CostSettings, ModelPrice
from bastion.testing.clock import FakeClock

PRINCIPAL = Principal(id="c1")
MODEL = "test:paid"
PRICES = PriceTable(
    CostSettings(
        prices={MODEL: ModelPrice(input_per_mtok=Decimal("1.00"), output_per_mtok=Decimal("2.00"))}
    )
)
# 30 bytes → 10 tokens, + 4 for the message: 14 input tokens; 100 output tokens at most.
CHAT = ChatRequest(messages=(ChatMessage(role="user", content="x" * 30),), max_tokens=100)
# 14 * 1.00 / 1e6 + 100 * 2.00 / 1e6
WORST = Decimal("0.000214")


def controller() -> tuple[LedgerCostController, FakeClock]:
    clock = FakeClock()
    return LedgerCostController(prices=PRICES, clock=clock), clock


async def admitted(budget: str, run_id: str = "r1") -> LedgerCostController:
    cost, _ = controller()
    await cost.admit(
        AgentRequest(
            user_id="c1",
            session_id="s",
            message="hi",
            run_id=run_id,
            max_budget_usd=Decimal(budget),
        ),
        PRINCIPAL,
    )
    return cost


def test_worst_case_fixture_is_what_the_estimator_says() -> None:
    assert estimate_input_tokens(CHAT) == 14


async def test_admit_opens_the_run_at_its_budget() -> None:
    cost, clock = controller()
    request = AgentRequest(
        user_id="c1", session_id="s", message="hi", run_id="r1", max_budget_usd=Decimal("2.50")
    )
    await cost.admit(request, PRINCIPAL)
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert (snapshot.limit_usd, snapshot.settled_usd, snapshot.opened_at) == (
        Decimal("2.50"),
        Decimal(0),
        clock.now(),
    )
    assert cost.open_runs == 1
    with pytest.raises(ValueError, match="already admitted"):
        await cost.admit(request, PRINCIPAL)


async def test_reserve_holds_the_exact_worst_case() -> None:
    cost = await admitted("1")
    reservation = await cost.reserve("r1", MODEL, CHAT)
    assert (reservation.run_id, reservation.model, reservation.amount_usd) == ("r1", MODEL, WORST)
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert (snapshot.reserved_usd, snapshot.open_holds) == (WORST, 1)


async def test_zero_budget_is_admitted_for_free_models_but_refuses_paid_calls() -> None:
    cost = await admitted("0")
    reservation = await cost.reserve("r1", "scripted:demo", CHAT)
    assert reservation.amount_usd == 0
    assert await cost.settle(reservation, Usage(input_tokens=5, output_tokens=5)) == 0
    with pytest.raises(BudgetExceeded, match=r"budget of \$0"):
        await cost.reserve("r1", MODEL, CHAT)


async def test_unknown_model_is_refused_never_free() -> None:
    cost = await admitted("100")
    with pytest.raises(BudgetExceeded) as info:
        await cost.reserve("r1", "openai:foo", CHAT)
    assert str(info.value) == (
        "no price is known for model 'openai:foo'; add it to settings.cost.prices"
    )
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert snapshot.open_holds == 0


async def test_reserve_on_a_run_that_is_not_open_is_a_bug() -> None:
    cost, _ = controller()
    with pytest.raises(ValueError, match="run 'ghost' has no open budget: admit it first"):
        await cost.reserve("ghost", MODEL, CHAT)


async def test_settle_records_the_actual_cost() -> None:
    cost = await admitted("1")
    reservation = await cost.reserve("r1", MODEL, CHAT)
    actual = await cost.settle(reservation, Usage(input_tokens=10, output_tokens=20))
    assert actual == Decimal("0.00005")  # 10 * 1e-6 + 20 * 2e-6
    assert cost.spent("r1") == actual
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert (snapshot.reserved_usd, snapshot.input_tokens, snapshot.output_tokens) == (
        Decimal(0),
        10,
        20,
    )


async def test_settle_above_the_hold_is_recorded_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cost = await admitted("1")
    reservation = await cost.reserve("r1", MODEL, CHAT)
    with caplog.at_level(logging.WARNING, logger="bastion.cost.default"):
        actual = await cost.settle(reservation, Usage(input_tokens=14, output_tokens=1000))
    assert actual == Decimal("0.002014")
    assert cost.spent("r1") == actual
    [record] = caplog.records
    assert "above the $0.00021400 reserved" in record.getMessage()


async def test_settle_within_the_hold_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    cost = await admitted("1")
    reservation = await cost.reserve("r1", MODEL, CHAT)
    with caplog.at_level(logging.WARNING, logger="bastion.cost.default"):
        await cost.settle(reservation, Usage(input_tokens=14, output_tokens=100))
    assert caplog.records == []


async def test_double_settle_is_refused_and_charges_once() -> None:
    cost = await admitted("1")
    reservation = await cost.reserve("r1", MODEL, CHAT)
    await cost.settle(reservation, Usage(output_tokens=10))
    with pytest.raises(ValueError, match="already settled or released"):
        await cost.settle(reservation, Usage(output_tokens=10))
    assert cost.spent("r1") == Decimal("0.00002")


async def test_release_then_settle_or_release_again_is_refused() -> None:
    cost = await admitted("1")
    reservation = await cost.reserve("r1", MODEL, CHAT)
    await cost.release(reservation)
    assert cost.spent("r1") == 0
    with pytest.raises(ValueError, match="already settled or released"):
        await cost.release(reservation)
    with pytest.raises(ValueError, match="already settled or released"):
        await cost.settle(reservation, Usage())


async def test_finish_releases_holds_returns_the_total_and_forgets_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cost = await admitted("1")
    settled = await cost.reserve("r1", MODEL, CHAT)
    await cost.settle(settled, Usage(output_tokens=10))
    await cost.reserve("r1", MODEL, CHAT)
    with caplog.at_level(logging.WARNING, logger="bastion.cost.default"):
        assert await cost.finish("r1") == Decimal("0.00002")
    assert "still held; released" in caplog.records[0].getMessage()
    assert cost.snapshot("r1") is None
    assert cost.open_runs == 0
    assert cost.spent("r1") == 0
    with pytest.raises(ValueError, match="has no open budget"):
        await cost.release(settled)


async def test_finish_without_holds_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    cost = await admitted("1")
    with caplog.at_level(logging.WARNING, logger="bastion.cost.default"):
        assert await cost.finish("r1") == 0
    assert caplog.records == []


async def test_finish_is_safe_for_a_run_that_is_not_open() -> None:
    cost = await admitted("1")
    await cost.finish("r1")
    assert await cost.finish("r1") == 0
    assert await cost.finish("never-admitted") == 0


async def test_memory_does_not_grow_with_runs_served() -> None:
    cost, _ = controller()
    for n in range(500):
        request = AgentRequest(user_id="c1", session_id="s", message="hi", run_id=f"r{n}")
        await cost.admit(request, PRINCIPAL)
        await cost.settle(await cost.reserve(f"r{n}", MODEL, CHAT), Usage(output_tokens=1))
        await cost.finish(f"r{n}")
    assert cost.open_runs == 0


async def test_runs_have_separate_budgets() -> None:
    cost, _ = controller()
    for run_id in ("a", "b"):
        await cost.admit(
            AgentRequest(
                user_id="c1", session_id="s", message="hi", run_id=run_id, max_budget_usd=WORST
            ),
            PRINCIPAL,
        )
    await cost.reserve("a", MODEL, CHAT)
    await cost.reserve("b", MODEL, CHAT)
    with pytest.raises(BudgetExceeded):
        await cost.reserve("a", MODEL, CHAT)


@pytest.mark.parametrize("k", [1, 3, 7])
async def test_a_budget_for_exactly_k_calls_lets_exactly_k_through(k: int) -> None:
    cost = await admitted(str(WORST * k))
    for _ in range(k):
        await cost.settle(
            await cost.reserve("r1", MODEL, CHAT), Usage(input_tokens=14, output_tokens=100)
        )
    with pytest.raises(BudgetExceeded):
        await cost.reserve("r1", MODEL, CHAT)
    assert cost.spent("r1") == WORST * k


async def test_fifty_concurrent_reserves_on_one_run_hold_exactly_k() -> None:
    k = 7
    cost = await admitted(str(WORST * k))
    results = await asyncio.gather(
        *(cost.reserve("r1", MODEL, CHAT) for _ in range(50)), return_exceptions=True
    )
    held = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert (len(held), len(refused)) == (k, 50 - k)
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert snapshot.reserved_usd == WORST * k == snapshot.limit_usd


async def test_a_released_hold_makes_room_again() -> None:
    cost = await admitted(str(WORST))
    reservation = await cost.reserve("r1", MODEL, CHAT)
    with pytest.raises(BudgetExceeded):
        await cost.reserve("r1", MODEL, CHAT)
    await cost.release(reservation)
    await cost.reserve("r1", MODEL, CHAT)


async def test_charge_pays_a_fixed_price_once_per_key_within_the_budget() -> None:
    cost = await admitted("0.05")
    assert await cost.charge("r1", "tool:search", Decimal("0.03"), key="k1") == Decimal("0.03")
    assert await cost.charge("r1", "tool:search", Decimal("0.03"), key="k1") == Decimal("0.03")
    assert cost.spent("r1") == Decimal("0.03")
    with pytest.raises(BudgetExceeded, match="tool:search"):
        await cost.charge("r1", "tool:search", Decimal("0.03"), key="k2")
    assert await cost.finish("r1") == Decimal("0.03")
