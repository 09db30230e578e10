"""Runaway guards end to end: a looping plan and a call-hungry run are stopped with a message."""

from __future__ import annotations

import json
from typing import Any

from bastion.errors import RunLimitReached
from bastion.messages import RunStatus, StepStatus
from bastion.router.registry import tool


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


async def test_a_looping_plan_is_stopped_by_the_loop_guard(make_harness):
    looping = plan(*[("get_order", {"order_id": "A1"})] * 5)
    settings = {"run": {"max_identical_calls": 3}}
    async with make_harness([looping], [get_order], settings=settings) as h:
        response = await h.ask("Where is A1?")

    assert response.status is RunStatus.ABORTED
    assert response.message == RunLimitReached.user_message
    assert response.error is not None
    assert "loop: get_order with the same args would run for the 4th time" in response.error
    assert response.steps_completed == 3
    assert response.plan is not None
    assert [s.status for s in response.plan.steps] == [StepStatus.SUCCESS] * 3 + [
        StepStatus.SKIPPED
    ] * 2


async def test_the_same_tool_with_other_args_is_no_loop(make_harness):
    varied = plan(*[("get_order", {"order_id": f"A{i}"}) for i in range(5)])
    async with make_harness(
        [varied], [get_order], settings={"run": {"max_identical_calls": 1}}
    ) as h:
        response = await h.ask("Where are my orders?")
    assert response.status is RunStatus.COMPLETED
    assert response.steps_completed == 5


async def test_the_model_call_cap_stops_a_run_before_the_extra_call(make_harness):
    settings = {"run": {"max_model_calls": 1}, "planner": {"max_repairs": 3}}
    # The first answer needs a repair: a second call, which the cap refuses.
    async with make_harness(["not json"], [get_order], settings=settings) as h:
        response = await h.ask("Where is A1?")
        h.model.assert_consumed()

    assert response.status is RunStatus.ABORTED
    assert response.message == RunLimitReached.user_message
    assert "1 model calls, its cap" in (response.error or "")
    assert h.kinds().count("model_call") == 1
