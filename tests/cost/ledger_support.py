"""Shared by the ledger tests and their subprocess worker: a priced model that counts its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.cost.metered import MeteredChatModel
from bastion.cost.pricing import PriceTable
from bastion.cost.sql import SqlCostController
from bastion.cost.tokens import estimate_input_tokens
from bastion.errors import BudgetExceeded
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest, ChatResponse, Usage
from bastion.settings import CostSettings, ModelPrice

MODEL = "test:paid"
PRICE = ModelPrice(input_per_mtok=Decimal("1.00"), output_per_mtok=Decimal("2.00"))
# 30 bytes → 10 tokens, + 4 for the message: 14 input tokens; 100 output tokens at most.
CHAT = ChatRequest(messages=(ChatMessage(role="user", content="x" * 30),), max_tokens=100)
# 14 * 1.00 / 1e6 + 100 * 2.00 / 1e6
WORST = Decimal("0.000214")
NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def cost_settings(**fields: object) -> CostSettings:
    return CostSettings.model_validate({"prices": {MODEL: PRICE}, **fields})


#: Every controller made, so that the tests' fixture closes their writers after each test.
CREATED: list[SqlCostController] = []


def controller(engine: AsyncEngine, clock: Clock, **fields: object) -> SqlCostController:
    settings = cost_settings(**fields)
    made = SqlCostController(
        engine=engine, prices=PriceTable(settings), clock=clock, settings=settings
    )
    CREATED.append(made)
    return made


class CountingModel(ChatModel):
    """Answers every call at exactly its worst case, counting the calls that reach it."""

    def __init__(self, *, name: str = MODEL, gate: asyncio.Event | None = None) -> None:
        self._name = name
        self.calls = 0
        self._gate = gate
        self.behaviour: Callable[[], None] | None = None
        #: Called as each call arrives, before it waits on the gate.
        self.on_enter: Callable[[], None] | None = None

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.on_enter is not None:
            self.on_enter()
        if self._gate is not None:
            await self._gate.wait()
        if self.behaviour is not None:
            self.behaviour()
        return ChatResponse(
            text="ok",
            model=self._name,
            usage=Usage(
                input_tokens=estimate_input_tokens(request), output_tokens=request.max_tokens
            ),
        )


async def one_run(
    cost: SqlCostController,
    model: ChatModel,
    *,
    run_id: str,
    user: str = "u1",
    budget: Decimal = Decimal("1.00"),
) -> bool:
    """Admit a run, make one metered call, finish; True if the call was paid for."""
    request = AgentRequest(
        user_id=user, session_id="s1", message="hi", run_id=run_id, max_budget_usd=budget
    )
    try:
        await cost.admit(request, Principal(id=user))
    except BudgetExceeded:
        return False
    try:
        await MeteredChatModel(wrapped=model, cost=cost, run_id=run_id).complete(CHAT)
    except BudgetExceeded:
        return False
    finally:
        await cost.finish(run_id)
    return True
