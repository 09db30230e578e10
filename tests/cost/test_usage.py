"""`usage_report`: what the ledger charged, grouped, filtered, exact."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from tests.cost.ledger_support import NOON, WORST, CountingModel, controller, one_run

from bastion.cost.metered import MeteredChatModel
from bastion.cost.usage import usage_report
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatMessage, ChatRequest, Usage
from bastion.models.openai_compat import OpenAIChatModel
from bastion.storage.tables import cost_reservations
from bastion.testing.clock import FakeClock
from bastion.testing.fake_openai import FakeOpenAIServer


async def test_report_groups_spend_tokens_calls_and_denials(db_engine):
    clock = FakeClock(wall_start=NOON)
    cost = controller(db_engine, clock, user_daily_usd=WORST * 2)
    paid, local = CountingModel(), CountingModel(name="local:tiny")
    assert await one_run(cost, paid, run_id="a1", user="ann")
    assert await one_run(cost, paid, run_id="a2", user="ann")
    assert not await one_run(cost, paid, run_id="a3", user="ann")  # day spent: refused at admit
    assert await one_run(cost, local, run_id="b1", user="bob")
    clock.advance(86400)
    assert await one_run(cost, paid, run_id="b2", user="bob")

    by_model = {line.key: line for line in await usage_report(db_engine)}
    assert by_model["test:paid"].calls == 3
    assert by_model["test:paid"].cost_usd == WORST * 3
    assert (by_model["test:paid"].input_tokens, by_model["test:paid"].output_tokens) == (42, 300)
    assert by_model["local:tiny"].calls == 1
    assert by_model["local:tiny"].cost_usd == 0
    assert by_model["-"].denials == 1  # the admission refusal names no model

    by_user = await usage_report(db_engine, by="user")
    assert [(line.key, line.calls, line.denials, line.cost_usd) for line in by_user] == [
        ("ann", 2, 1, WORST * 2),
        ("bob", 2, 0, WORST),
    ]
    [ann] = await usage_report(db_engine, user="ann", by="app")
    assert (ann.key, ann.calls) == ("default", 2)
    since = await usage_report(db_engine, since=NOON + timedelta(hours=1), by="user")
    assert [(line.key, line.calls, line.cost_usd) for line in since] == [("bob", 1, WORST)]


async def test_report_of_an_empty_ledger_is_empty(db_engine):
    assert await usage_report(db_engine) == []


async def test_report_refuses_unknown_groupings_and_naive_dates(db_engine):
    with pytest.raises(ValueError, match="cannot group usage by 'tool'"):
        await usage_report(db_engine, by="tool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware"):
        await usage_report(db_engine, since=NOON.replace(tzinfo=None))
    assert Decimal(0) == sum((line.cost_usd for line in await usage_report(db_engine)), Decimal(0))


async def test_cached_input_the_provider_reports_is_settled_cheaper_and_reported(db_engine):
    cost = controller(db_engine, FakeClock(wall_start=NOON))  # gpt-4o from the shipped table
    request = AgentRequest(
        user_id="ann", session_id="s", message="hi", run_id="r1", max_budget_usd=Decimal(1)
    )
    await cost.admit(request, Principal(id="ann"))
    chat = ChatRequest(messages=(ChatMessage(role="user", content="hi"),), max_tokens=100)
    with FakeOpenAIServer() as server:
        server.ok("hi", usage=Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=100))
        async with OpenAIChatModel(
            model="gpt-4o", base_url=server.base_url, api_key="sk-test", clock=FakeClock()
        ) as gpt:
            metered = MeteredChatModel(wrapped=gpt, cost=cost, run_id="r1")
            await metered.complete(chat)
    # 600 * 2.50 / 1e6 + 400 * 1.25 / 1e6 + 100 * 10.00 / 1e6 (0.0035 with nothing cached)
    assert metered.cost_usd == Decimal("0.003")
    assert await cost.finish("r1") == Decimal("0.003")
    async with db_engine.connect() as connection:
        row = (await connection.execute(sa.select(cost_reservations))).one()
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens) == (1000, 400, 100)
    [line] = await usage_report(db_engine)
    assert (line.key, line.input_tokens, line.cached_input_tokens, line.cost_usd) == (
        "openai:gpt-4o",
        1000,
        400,
        Decimal("0.003"),
    )
