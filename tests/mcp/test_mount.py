"""MCP tools in a whole run: planned, gated and referenced like the app's own tools."""

from __future__ import annotations

import json
import random
from typing import Any

from tests.mcp.conftest import time_server

from bastion.clock import SystemClock
from bastion.gate.interface import Decision, PolicyInput
from bastion.messages import AgentRequest, Principal, RunStatus, StepStatus
from bastion.models.scripted import ScriptedModel
from bastion.router.registry import tool
from bastion.settings import load_settings
from bastion.system import AgentSystem

CLOCK_USER = Principal(id="ann", roles=frozenset(), scopes=frozenset({"clock", "basic"}))
NO_CLOCK = Principal(id="bob", roles=frozenset(), scopes=frozenset({"basic"}))


def plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            "reasoning": "r",
            "steps": [
                {"description": f"call {n}", "tool_name": n, "tool_args": a} for n, a in steps
            ],
        }
    )


def build(tmp_path, responses, *, policies=None, tools=()) -> tuple[AgentSystem, ScriptedModel]:
    model = ScriptedModel(responses, name="scripted:test")
    settings = load_settings(data_dir=tmp_path, mcp={"servers": [time_server().model_dump()]})
    system = AgentSystem.from_settings(
        settings,
        tools=tools,
        principals=[CLOCK_USER, NO_CLOCK],
        policies=policies,
        model=model,
        clock=SystemClock(),
        rng=random.Random(1),
    )
    return system, model


def ask(user: str, message: str = "what time is it in Paris?") -> AgentRequest:
    return AgentRequest(user_id=user, session_id="s", message=message)


async def test_a_run_plans_and_calls_an_mcp_tool_and_references_its_result(tmp_path):
    said: list[str] = []

    @tool(permissions=("basic",))
    def tell(day: str) -> str:
        """Tell the user the day."""
        said.append(day)
        return f"it is {day}"

    responses = [
        plan(
            ("time.get_current_time", {"timezone": "Europe/Paris"}),
            ("tell", {"day": {"$from": "steps[0].result.day_of_week"}}),
        )
    ]
    system, model = build(tmp_path, responses, tools=[tell])
    async with system:
        response = await system.run(ask("ann"))
    model.assert_consumed()
    assert response.status is RunStatus.COMPLETED, response.error
    # The planner was offered the MCP tool, with its arguments, like any other.
    schema = json.dumps(model.calls[0].json_schema)
    assert '"const": "time.get_current_time"' in schema
    assert len(said) == 1
    assert said[0] in {
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    }
    assert response.plan is not None
    assert response.plan.steps[0].result["timezone"] == "Europe/Paris"


async def test_mcp_tools_are_denied_like_native_ones(tmp_path):
    async def not_tokyo(call: PolicyInput) -> Decision | None:
        if call.args.get("timezone") == "Asia/Tokyo":
            return Decision.deny("Tokyo is off limits")
        return None

    responses = [
        plan(("time.get_current_time", {"timezone": "Asia/Tokyo"})),
        plan(),  # the replan after the denial
        plan(),  # bob's run: no clock scope, so no time tool on offer
    ]
    system, model = build(tmp_path, responses, policies={"time.get_current_time": [not_tokyo]})
    async with system:
        denied = await system.run(ask("ann", "time in Tokyo?"))
        unoffered = await system.run(ask("bob"))
    model.assert_consumed()
    assert denied.plan is not None
    assert denied.plan.steps[0].status is StepStatus.DENIED
    assert "Tokyo is off limits" in (denied.plan.steps[0].error or "")
    assert "time.get_current_time" not in json.dumps(model.calls[2].json_schema)
    assert unoffered.status is RunStatus.COMPLETED
