"""The runaway guards alone: `CallCap` and `LoopGuard`."""

from __future__ import annotations

import pytest

from bastion.cost.guards import CallCap, LoopGuard
from bastion.errors import BudgetExceeded, RunLimitReached
from bastion.messages import PlanStep
from bastion.models.interface import ChatMessage, ChatRequest
from bastion.models.scripted import ScriptedModel

CHAT = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))


async def test_call_cap_passes_calls_up_to_its_limit_then_refuses_without_calling():
    model = ScriptedModel(["a", "b"])
    capped = CallCap(model, limit=2)
    assert capped.name == "scripted:test"
    assert (await capped.complete(CHAT)).text == "a"
    assert (await capped.complete(CHAT)).text == "b"
    with pytest.raises(RunLimitReached, match="2 model calls, its cap") as caught:
        await capped.complete(CHAT)
    assert isinstance(caught.value, BudgetExceeded)  # the flow stops on it like a budget
    assert len(model.calls) == 2


def step(tool: str, **args: object) -> PlanStep:
    return PlanStep(step_id=0, description="d", tool_name=tool, tool_args=args)


def test_loop_guard_allows_n_identical_calls_then_names_the_loop():
    guard = LoopGuard(max_identical=2)
    assert guard.check(step("t", a=1, b=2)) is None
    assert guard.check(step("t", b=2, a=1)) is None  # same args, other order: the same call
    reason = guard.check(step("t", a=1, b=2))
    assert reason is not None
    assert "loop: t with the same args would run for the 3th time" in reason
    assert guard.check(step("t", a=2)) is None
    assert guard.check(step("u", a=1, b=2)) is None
