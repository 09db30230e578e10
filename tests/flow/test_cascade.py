"""Cascade routing end to end with scripted models: escalation, its events, and the response."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bastion.cost.cascade import Cascade
from bastion.errors import ConfigError
from bastion.messages import AgentRequest, AgentResponse, Principal, RunEvent, RunStatus
from bastion.models.scripted import ScriptedModel
from bastion.router.registry import tool
from bastion.settings import load_settings
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock

ALICE = Principal(id="alice", scopes=frozenset({"basic"}))


def plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            "reasoning": "because",
            "steps": [
                {"description": f"call {name}", "tool_name": name, "tool_args": args}
                for name, args in steps
            ],
        }
    )


@tool(permissions=("basic",))
async def get_order(order_id: str) -> dict[str, str]:
    """Look up an order.

    Args:
        order_id: The order's id.
    """
    return {"order_id": order_id, "status": "shipped"}


@tool(permissions=("basic",))
async def count_orders() -> int:
    """Count the orders (broken: answers with text, which the Evaluator rejects)."""
    return "many"  # type: ignore[return-value]


@pytest.fixture(params=["in-process", "durable"])
def cascade_system(tmp_path: Path, request: pytest.FixtureRequest):
    durable = {"enabled": request.param == "durable", "polling_interval_s": 0.01}

    @asynccontextmanager
    async def factory(
        cheap: Sequence[Any], strong: Sequence[Any], **cost: Any
    ) -> AsyncIterator[tuple[AgentSystem, ScriptedModel, ScriptedModel]]:
        models = (
            ScriptedModel(cheap, name="scripted:cheap"),
            ScriptedModel(strong, name="scripted:strong"),
        )
        settings = load_settings(
            data_dir=tmp_path, durable=durable, planner={"max_repairs": 1}, cost=cost
        )
        system = AgentSystem.from_settings(
            settings,
            tools=[get_order, count_orders],
            principals=[ALICE],
            cascade=models,
            clock=FakeClock(),
            rng=random.Random(7),
        )
        async with system:
            yield system, *models

    return factory


async def ask(system: AgentSystem, message: str) -> tuple[AgentResponse, list[RunEvent]]:
    events: list[RunEvent] = []
    request = AgentRequest(user_id="alice", session_id="s1", message=message)
    return await system.run(request, on_event=events.append), events


async def test_an_invalid_plan_from_the_cheap_model_escalates_and_completes(cascade_system):
    good = plan(("get_order", {"order_id": "A1"}))
    async with cascade_system(["not json", "still not json"], [good]) as (system, cheap, strong):
        response, events = await ask(system, "Where is A1?")
        cheap.assert_consumed()
        strong.assert_consumed()

    assert response.status is RunStatus.COMPLETED
    assert response.model == "scripted:strong"
    assert response.model_reason is not None
    assert response.model_reason.startswith(
        "escalated from scripted:cheap: its plan failed validation after repair"
    )
    [escalation] = [e for e in events if e.kind == "escalate"]
    assert escalation.data["from_model"] == "scripted:cheap"
    assert escalation.data["to_model"] == "scripted:strong"
    calls = [e.data["model"] for e in events if e.kind == "model_call"]
    assert calls == ["scripted:cheap", "scripted:cheap", "scripted:strong"]


async def test_a_rejected_step_result_escalates_the_replan(cascade_system):
    weak = plan(("count_orders", {}))
    good = plan(("get_order", {"order_id": "A1"}))
    async with cascade_system([weak], [good]) as (system, cheap, strong):
        response, events = await ask(system, "How many orders, and where is A1?")
        cheap.assert_consumed()
        strong.assert_consumed()

    assert response.model == "scripted:strong"
    assert response.model_reason is not None
    assert "the evaluator rejected step 0" in response.model_reason
    assert [e.kind.value for e in events].count("escalate") == 1


async def test_a_declared_rule_starts_the_run_on_the_strong_model(cascade_system):
    good = plan(("get_order", {"order_id": "A1"}))
    rules = {"cascade_rules": {r"\brefund\b": "scripted:strong"}}
    async with cascade_system([], [good], **rules) as (system, cheap, strong):
        response, events = await ask(system, "I want a REFUND for A1")
        strong.assert_consumed()

    assert response.status is RunStatus.COMPLETED
    assert response.model == "scripted:strong"
    assert response.model_reason == r'the request matched the rule "\brefund\b"'
    [escalation] = [e for e in events if e.kind == "escalate"]
    assert escalation.data["to_model"] == "scripted:strong"
    assert cheap.calls == []


async def test_without_escalation_the_cheap_model_plans_and_says_so(cascade_system):
    good = plan(("get_order", {"order_id": "A1"}))
    async with cascade_system([good], []) as (system, _, _):
        response, events = await ask(system, "Where is A1?")
    assert response.model == "scripted:cheap"
    assert response.model_reason == "the cascade's first (cheapest) model"
    assert "escalate" not in [e.kind for e in events]


async def test_at_the_top_of_the_cascade_a_bad_plan_fails_as_usual(cascade_system):
    async with cascade_system(["x", "x"], ["y", "y"]) as (system, _, _):
        response, events = await ask(system, "Where is A1?")
    assert response.status is RunStatus.FAILED
    assert [e.kind.value for e in events].count("escalate") == 1


def test_a_cascade_is_checked_when_it_is_built():
    cheap = ScriptedModel([], name="scripted:cheap")
    with pytest.raises(ConfigError, match="at least one model"):
        Cascade([])
    with pytest.raises(ConfigError, match="names a model twice"):
        Cascade([cheap, cheap])
    with pytest.raises(ConfigError, match="not in the cascade"):
        Cascade([cheap], rules={"x": "scripted:other"})
    with pytest.raises(ConfigError, match="not a valid regex"):
        Cascade([cheap], rules={"(": "scripted:cheap"})
