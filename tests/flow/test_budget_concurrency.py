"""50 concurrent runs of one user through `AgentSystem`: the budget affords exactly k calls."""

from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal

import sqlalchemy as sa

from bastion.messages import AgentRequest, Principal, RunStatus
from bastion.models.interface import ChatRequest, ChatResponse, Usage
from bastion.models.scripted import ScriptedModel
from bastion.settings import load_settings
from bastion.storage import create_engine
from bastion.storage.tables import cost_counters, cost_reservations
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock

K = 5
MAX_TOKENS = 100
# Only output is priced, and every call answers with all of its max_tokens: each call costs
# exactly its worst case, whatever its prompt.
PER_CALL = Decimal("0.0002")  # 100 tokens at $2 per million


async def test_fifty_concurrent_runs_of_one_user_make_exactly_k_model_calls(tmp_path):
    def answer(request: ChatRequest) -> ChatResponse:
        text = json.dumps({"reasoning": "nothing to do", "steps": []})
        usage = Usage(input_tokens=10, output_tokens=request.max_tokens)
        return ChatResponse(text=text, model="test:paid", usage=usage)

    model = ScriptedModel.matching([(".", answer)], name="test:paid")
    settings = load_settings(
        data_dir=tmp_path,
        durable={"enabled": False},
        planner={"max_tokens": MAX_TOKENS},
        cost={
            "prices": {"test:paid": {"input_per_mtok": "0", "output_per_mtok": "2"}},
            "user_daily_usd": str(PER_CALL * K),
        },
    )
    system = AgentSystem.from_settings(
        settings,
        principals=[Principal(id="alice")],
        model=model,
        clock=FakeClock(),
        rng=random.Random(7),
    )
    async with system, asyncio.TaskGroup() as group:
        runs = [
            group.create_task(
                system.run(AgentRequest(user_id="alice", session_id=f"s{i}", message="hi"))
            )
            for i in range(50)
        ]
    responses = [run.result() for run in runs]

    assert len(model.calls) == K
    assert sum(r.status is RunStatus.COMPLETED for r in responses) == K
    refused = [r for r in responses if r.status is not RunStatus.COMPLETED]
    assert all("ran out of budget" in r.message for r in refused)
    assert sum((r.total_cost_usd for r in responses), Decimal(0)) == PER_CALL * K

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            [user_day] = (
                await connection.execute(
                    sa.select(cost_counters).where(cost_counters.c.scope == "user")
                )
            ).all()
            held = await connection.scalar(
                sa.select(sa.func.count()).where(cost_reservations.c.status == "held")
            )
    finally:
        await engine.dispose()
    assert Decimal(user_day.settled_usd) == PER_CALL * K
    assert Decimal(user_day.reserved_usd) == 0
    assert held == 0
