"""A tool's declared price per call is paid from the run's budget, through the same ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

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


CALLS: list[str] = []


@tool(permissions=("basic",), cost_usd="0.25")
async def paid_search(query: str) -> dict[str, str]:
    """Search a paid index.

    Args:
        query: What to look for.
    """
    CALLS.append(query)
    return {"query": query, "hit": "found"}


async def test_a_priced_tool_is_charged_to_the_run(make_harness):
    CALLS.clear()
    async with make_harness([plan(("paid_search", {"query": "a"}))], [paid_search]) as h:
        response = await h.ask("Find a", max_budget_usd=Decimal("1.00"))
    assert response.status is RunStatus.COMPLETED
    assert response.total_cost_usd == Decimal("0.25")  # the scripted model is free
    assert CALLS == ["a"]


async def test_a_tool_the_budget_cannot_pay_for_is_never_called(make_harness):
    CALLS.clear()
    responses = [plan(("paid_search", {"query": "a"})), plan()]  # the replan gives up
    async with make_harness(responses, [paid_search]) as h:
        response = await h.ask("Find a", max_budget_usd=Decimal("0.10"))
    assert CALLS == []
    assert response.total_cost_usd == 0
    assert response.plan is not None
    assert response.plan.steps[0].status is StepStatus.DENIED
    assert "budget" in (response.plan.steps[0].error or "")
    denied = [e for e in h.events if e.kind.value == "denied"]
    assert denied
    assert "needs up to $0.25" in str(denied[0].data["reason"])
