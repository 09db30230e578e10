"""Through `AgentSystem`: facts remembered in one session reach the next one's plan; the final
answer is checked by the Evaluator, a false refund claim withheld, the judge's verdict recorded."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.memory import MemoryTools
from bastion.messages import AgentRequest, Principal, RunStatus, StepRecord
from bastion.models.scripted import ScriptedModel
from bastion.router.registry import tool
from bastion.settings import load_settings
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock

from .conftest import ALICE, plan

BOB = Principal(
    id="bob", roles=frozenset({"customer"}), scopes=frozenset({"basic", "memory:write"})
)


@tool(permissions=("basic",))
async def get_order(order_id: str) -> dict[str, str]:
    """Look up an order.

    Args:
        order_id: The order's id.
    """
    return {"order_id": order_id, "status": "delivered"}


async def test_a_fact_remembered_in_one_session_is_in_the_next_sessions_plan(make_harness):
    memory_tools = MemoryTools()
    responses = [
        plan(("remember", {"fact": "Prefers to be contacted by email"})),
        plan(("get_order", {"order_id": "A1"})),
        plan(("get_order", {"order_id": "A2"})),
    ]
    tools = [get_order, *memory_tools.tools()]
    async with make_harness(responses, tools, principals=(BOB, ALICE)) as h:
        memory_tools.bind(h.system.components.memory)
        first = await h.ask("Please email me from now on", user="bob", session="s1")
        assert first.ok, first.error
        second = await h.ask("Where is order A1?", user="bob", session="s2")
        assert second.ok
        prompt = h.model.calls[1].messages[-1].content
        assert "What we know about this user" in prompt
        assert "- Prefers to be contacted by email" in prompt
        # Another user never sees it, whatever they ask.
        await h.ask("contacted by email?", user="alice", session="s1")
        assert "Prefers to be contacted" not in h.model.calls[2].messages[-1].content
    h.model.assert_consumed()


def _claims_a_refund(request: AgentRequest, records: Sequence[StepRecord]) -> str:
    return "I have refunded 20.00 EUR on your order."


async def _system(
    tmp_path: Path, model: ScriptedModel, *, answer: Any, **settings: Any
) -> AgentSystem:
    config = load_settings(data_dir=tmp_path, durable={"enabled": False}, **settings)
    return AgentSystem.from_settings(
        config,
        tools=[get_order],
        principals=[ALICE],
        model=model,
        clock=FakeClock(),
        rng=random.Random(1),
        answer=answer,
    )


async def test_a_final_answer_claiming_a_refund_no_step_issued_is_withheld(tmp_path):
    model = ScriptedModel([plan(("get_order", {"order_id": "A1"}))])
    events: list[Any] = []
    async with await _system(tmp_path, model, answer=_claims_a_refund) as system:
        request = AgentRequest(user_id="alice", session_id="s", message="Refund order A1")
        response = await system.run(request, on_event=events.append)
        record = await system.components.memory.get_run(request.run_id)
        context = await system.components.memory.load_context(
            AgentRequest(user_id="alice", session_id="s", message="next"), token_budget=2000
        )
    assert response.status is RunStatus.FAILED
    assert "refunded" not in response.message
    assert "reliable answer" in response.message
    assert response.error is not None
    assert "claims a refund" in response.error
    [evaluation] = [e for e in events if e.kind.value == "evaluation"]
    assert evaluation.data["passed"] is False
    assert "claims a refund" in evaluation.data["reason"]
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert any(e.kind.value == "evaluation" for e in record.events)
    # The session remembers what the user was told, not the withheld claim.
    assert "refunded" not in context.turns[-1].content


async def test_the_judge_verdict_is_recorded_as_a_run_event_when_on(tmp_path):
    verdict = json.dumps({"verdict": "pass", "reason": "matches the lookup"})
    model = ScriptedModel([plan(("get_order", {"order_id": "A1"})), verdict])
    events: list[Any] = []
    system = await _system(
        tmp_path,
        model,
        answer=lambda request, records: "Order A1 is delivered.",
        evaluator={"judge": True},
    )
    async with system:
        request = AgentRequest(user_id="alice", session_id="s", message="Where is order A1?")
        response = await system.run(request, on_event=events.append)
    assert response.ok, response.error
    [evaluation] = [e for e in events if e.kind.value == "evaluation"]
    assert evaluation.data["judged"] is True
    assert evaluation.data["judge_passed"] is True
    assert evaluation.data["judge_reason"] == "matches the lookup"
    assert [e.data.get("purpose") for e in events if e.kind.value == "model_call"] == [
        None,
        "judge",
    ]
    model.assert_consumed()


async def test_a_recovery_that_answers_replan_to_a_rejected_answer_still_withholds_it(tmp_path):
    import dataclasses

    from bastion.messages import Replan

    class Replanner:
        async def decide(self, failure: Any) -> Replan:
            return Replan(reason="try again")

    model = ScriptedModel([plan(("get_order", {"order_id": "A1"}))])
    async with await _system(tmp_path, model, answer=_claims_a_refund) as system:
        system.components = dataclasses.replace(system.components, recovery=Replanner())
        request = AgentRequest(user_id="alice", session_id="s", message="Refund order A1")
        response = await system.run(request)
    assert response.status is RunStatus.FAILED
    assert "reliable answer" in response.message
    assert response.error is not None
    assert "cannot follow the final answer" in response.error


async def test_the_system_prompt_and_tools_count_against_the_context_budget(tmp_path):
    from bastion.flow.admit import fixed_prompt_tokens

    message = "Where is order A1?"
    seen: dict[int, str] = {}
    for extra in (5, 400):
        probe = await _system(tmp_path, ScriptedModel([]), answer=_claims_a_refund)
        fixed = fixed_prompt_tokens(probe.components, ALICE, message)
        assert fixed > 100  # the generic system prompt, the rules and get_order's line
        model = ScriptedModel([plan()])
        config = {"planner": {"context_token_budget": fixed + extra}}
        async with await _system(tmp_path, model, answer=_claims_a_refund, **config) as system:
            await system.components.memory.remember("alice", "Prefers email")
            await system.run(AgentRequest(user_id="alice", session_id=f"s{extra}", message=message))
        seen[extra] = model.calls[0].messages[-1].content
    assert "Prefers email" not in seen[5]
    assert "- Prefers email" in seen[400]
