from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from bastion.cost.default import LedgerCostController
from bastion.cost.metered import MeteredChatModel
from bastion.cost.pricing import PriceTable
from bastion.errors import BudgetExceeded, ModelTimeout, ModelUnavailable
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatMessage, ChatRequest, ChatResponse, Usage
from bastion.settings import CostSettings, ModelPrice
from bastion.testing.clock import FakeClock

MODEL = "test:paid"
CHAT = ChatRequest(messages=(ChatMessage(role="user", content="x" * 30),), max_tokens=100)
WORST = Decimal("0.000214")  # 14 input tokens at $1/Mtok + 100 output at $2/Mtok
FULL_USAGE = Usage(input_tokens=14, output_tokens=100)


class FakeModel:
    """Answers with `usage`; or raises `error`; or, with `block`, waits until cancelled."""

    def __init__(
        self,
        *,
        usage: Usage = FULL_USAGE,
        error: BaseException | None = None,
        block: bool = False,
        clock: FakeClock | None = None,
    ) -> None:
        self.usage = usage
        self.error = error
        self.block = block
        self.clock = clock
        self.calls = 0
        self.started = asyncio.Event()

    @property
    def name(self) -> str:
        return MODEL

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        self.started.set()
        if self.block:
            await asyncio.Event().wait()
        if self.clock is not None:
            await self.clock.sleep(0)  # let the other calls in flight interleave
        if self.error is not None:
            raise self.error
        return ChatResponse(text="ok", model=MODEL, usage=self.usage)


async def admitted(budget: Decimal = Decimal(1)) -> LedgerCostController:
    prices = PriceTable(
        CostSettings(
            prices={
                MODEL: ModelPrice(input_per_mtok=Decimal("1.00"), output_per_mtok=Decimal("2.00"))
            }
        )
    )
    cost = LedgerCostController(prices=prices, clock=FakeClock())
    await cost.admit(
        AgentRequest(
            user_id="c1", session_id="s", message="hi", run_id="r1", max_budget_usd=budget
        ),
        Principal(id="c1"),
    )
    return cost


def assert_nothing_held(cost: LedgerCostController) -> None:
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert (snapshot.open_holds, snapshot.reserved_usd) == (0, Decimal(0))


async def test_a_call_is_reserved_made_and_settled() -> None:
    cost = await admitted()
    seen: list[tuple[ChatResponse, Decimal]] = []
    model = FakeModel(usage=Usage(input_tokens=10, output_tokens=20))
    metered = MeteredChatModel(
        wrapped=model, cost=cost, run_id="r1", on_call=lambda r, c: seen.append((r, c))
    )
    response = await metered.complete(CHAT)
    assert metered.name == MODEL
    assert response.text == "ok"
    assert seen == [(response, Decimal("0.00005"))]
    assert cost.spent("r1") == Decimal("0.00005")
    assert_nothing_held(cost)


async def test_totals_are_kept_across_calls() -> None:
    cost = await admitted()
    metered = MeteredChatModel(
        wrapped=FakeModel(usage=Usage(input_tokens=10, output_tokens=20)), cost=cost, run_id="r1"
    )
    for _ in range(3):
        await metered.complete(CHAT)
    assert (metered.calls, metered.input_tokens, metered.output_tokens) == (3, 30, 60)
    assert metered.cost_usd == Decimal("0.00015") == cost.spent("r1")


async def test_over_budget_call_never_reaches_the_model() -> None:
    cost = await admitted(WORST - Decimal("0.00000001"))
    model = FakeModel()
    metered = MeteredChatModel(wrapped=model, cost=cost, run_id="r1")
    with pytest.raises(BudgetExceeded):
        await metered.complete(CHAT)
    assert model.calls == 0
    assert metered.calls == 0


@pytest.mark.parametrize(
    "error", [ModelUnavailable("503", model=MODEL), ModelTimeout("slow"), RuntimeError("bug")]
)
async def test_a_failed_call_releases_its_hold(error: Exception) -> None:
    cost = await admitted()
    metered = MeteredChatModel(wrapped=FakeModel(error=error), cost=cost, run_id="r1")
    with pytest.raises(type(error)):
        await metered.complete(CHAT)
    assert_nothing_held(cost)
    assert cost.spent("r1") == 0
    assert (metered.calls, metered.cost_usd) == (0, Decimal(0))


async def test_a_timed_out_call_releases_its_hold() -> None:
    cost = await admitted()
    metered = MeteredChatModel(wrapped=FakeModel(block=True), cost=cost, run_id="r1")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await metered.complete(CHAT)
    assert_nothing_held(cost)


async def test_a_cancelled_call_releases_its_hold() -> None:
    cost = await admitted()
    model = FakeModel(block=True)
    metered = MeteredChatModel(wrapped=model, cost=cost, run_id="r1")
    task = asyncio.create_task(metered.complete(CHAT))
    await model.started.wait()
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    assert snapshot.reserved_usd == WORST  # held while the call is in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_held(cost)


async def test_cancellation_wins_even_when_the_run_was_finished_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cost = await admitted()
    model = FakeModel(block=True)
    metered = MeteredChatModel(wrapped=model, cost=cost, run_id="r1")
    task = asyncio.create_task(metered.complete(CHAT))
    await model.started.wait()
    assert await cost.finish("r1") == 0  # drops the hold under the call's feet
    task.cancel()
    with (
        caplog.at_level(logging.WARNING, logger="bastion.cost.metered"),
        pytest.raises(asyncio.CancelledError),
    ):
        await task
    assert "was already gone" in caplog.records[-1].getMessage()


async def test_fifty_concurrent_calls_on_a_budget_for_k_make_exactly_k() -> None:
    k = 5
    cost = await admitted(WORST * k)
    model = FakeModel(clock=FakeClock())
    metered = MeteredChatModel(wrapped=model, cost=cost, run_id="r1")
    results = await asyncio.gather(
        *(metered.complete(CHAT) for _ in range(50)), return_exceptions=True
    )
    answered = [r for r in results if isinstance(r, ChatResponse)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert (len(answered), len(refused), model.calls) == (k, 50 - k, k)
    assert cost.spent("r1") == WORST * k
    assert_nothing_held(cost)


async def test_cheaper_actual_usage_leaves_room_for_more_calls() -> None:
    cost = await admitted(WORST * 2)
    metered = MeteredChatModel(
        wrapped=FakeModel(usage=Usage(input_tokens=14, output_tokens=0)), cost=cost, run_id="r1"
    )
    for _ in range(3):
        await metered.complete(CHAT)
    assert cost.spent("r1") == Decimal("0.000042")


class CountingModel(FakeModel):
    """A model with its own tokenizer: counts every request as `count` input tokens."""

    def __init__(self, *, count: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.count = count

    async def count_input_tokens(self, request: ChatRequest) -> int:
        return self.count


async def test_a_model_that_counts_its_tokens_sizes_the_hold_by_its_count() -> None:
    cost = await admitted()
    model = CountingModel(count=500, block=True)
    metered = MeteredChatModel(wrapped=model, cost=cost, run_id="r1")
    task = asyncio.create_task(metered.complete(CHAT))
    await model.started.wait()
    snapshot = cost.snapshot("r1")
    assert snapshot is not None
    # 500 counted + 8 + 8 of margin input tokens at $1/Mtok, 100 output at $2/Mtok (the byte
    # rule would have held 14 input tokens: WORST).
    assert snapshot.reserved_usd == Decimal("0.000716") != WORST
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_model_is_asked_with_the_request_and_answers_the_original() -> None:
    cost = await admitted()
    model = CountingModel(count=1000)
    seen: list[ChatRequest] = []
    original = model.complete

    async def complete(request: ChatRequest) -> ChatResponse:
        seen.append(request)
        return await original(request)

    model.complete = complete  # type: ignore[method-assign]
    metered = MeteredChatModel(wrapped=model, cost=cost, run_id="r1")
    await metered.complete(CHAT)

    assert seen == [CHAT]
    assert type(seen[0]) is ChatRequest
