from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bastion.errors import ModelUnavailable, PlanError
from bastion.memory.interface import MemoryContext
from bastion.messages import AgentRequest, PlanStep, StepRecord, StepStatus, ToolOutcome
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest, ChatResponse
from bastion.planner import ModelPlanner, PlanningContext, build_plan_schema
from bastion.router.interface import ToolSpec
from bastion.settings import PlannerSettings

REQUEST = "Please refund order A-7: it arrived broken."


class FakeModel(ChatModel):
    """Answers from a script, in order; records every request; fails on an unscripted call."""

    def __init__(self, *answers: str | ChatResponse | Exception) -> None:
        self._answers = list(answers)
        self.requests: list[ChatRequest] = []

    @property
    def name(self) -> str:
        return "fake:planner"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        assert self._answers, "the model was called more often than scripted"
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            return ChatResponse(text=answer, model=self.name)
        return answer


def _plan_json(*steps: tuple[str, dict[str, Any]], reasoning: str = "because") -> str:
    return json.dumps(
        {
            "reasoning": reasoning,
            "steps": [
                {"description": f"use {tool}", "tool_name": tool, "tool_args": args}
                for tool, args in steps
            ],
        }
    )


GOOD = _plan_json(
    ("lookup_order", {"order_id": "A-7"}),
    ("refund_order", {"order_id": "A-7", "amount": 12.5}),
    reasoning="check, then refund",
)


def _context(tools: tuple[ToolSpec, ...], **kwargs: Any) -> PlanningContext:
    request = AgentRequest(user_id="u1", session_id="s1", message=REQUEST)
    return PlanningContext(request=request, tools=tools, memory=MemoryContext(), **kwargs)


def _planner(**settings: Any) -> ModelPlanner:
    return ModelPlanner(settings=PlannerSettings(**settings))


async def test_happy_path_one_call_with_the_schema(lookup, refund):
    model = FakeModel(GOOD)
    settings = PlannerSettings(max_steps=4, max_tokens=300)

    plan = await ModelPlanner(settings=settings).plan(_context((lookup, refund)), model=model)

    assert plan.reasoning == "check, then refund"
    assert plan.revision == 0
    assert plan.model == "fake:planner"
    assert plan.steps == (
        PlanStep(
            step_id=0,
            description="use lookup_order",
            tool_name="lookup_order",
            tool_args={"order_id": "A-7"},
        ),
        PlanStep(
            step_id=1,
            description="use refund_order",
            tool_name="refund_order",
            tool_args={"order_id": "A-7", "amount": 12.5},
        ),
    )
    (request,) = model.requests
    assert request.json_schema == build_plan_schema((lookup, refund), max_steps=4, step_refs=True)
    assert request.schema_name == "plan"
    assert request.max_tokens == 300
    assert request.temperature == 0
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[-1].content.endswith(REQUEST)


async def test_the_apps_system_prompt_leads(lookup):
    model = FakeModel(_plan_json())
    planner = ModelPlanner(settings=PlannerSettings(), system_prompt="You are Acme's agent.")

    await planner.plan(_context((lookup,)), model=model)

    assert model.requests[0].messages[0].content.startswith("You are Acme's agent.")


async def test_an_empty_plan_when_no_tool_is_needed(lookup):
    plan = await _planner().plan(_context((lookup,)), model=FakeModel(_plan_json()))

    assert plan.steps == ()


async def test_a_fenced_answer_is_accepted(lookup, refund):
    model = FakeModel(f"```json\n{GOOD}\n```")

    plan = await _planner().plan(_context((lookup, refund)), model=model)

    assert [s.tool_name for s in plan.steps] == ["lookup_order", "refund_order"]
    assert len(model.requests) == 1


async def test_invalid_json_is_repaired(lookup, refund, caplog):
    bad = '{"reasoning": "oops", "steps": ['
    model = FakeModel(bad, GOOD)
    caplog.set_level(logging.DEBUG, logger="bastion.planner.default")

    plan = await _planner().plan(_context((lookup, refund)), model=model)

    assert len(plan.steps) == 2
    first, second = model.requests
    assert second.messages[: len(first.messages)] == first.messages
    assistant, repair = second.messages[len(first.messages) :]
    assert assistant == ChatMessage(role="assistant", content=bad)
    assert repair.role == "user"
    assert "your answer is not valid JSON" in repair.content
    assert repair.content.endswith(REQUEST)
    assert second.json_schema == first.json_schema
    assert "took 1 repair round(s)" in caplog.text


async def test_a_schema_failure_is_repaired_with_the_problem(lookup, refund):
    wrong = _plan_json(("cancel_order", {"order_id": "A-7"}))
    model = FakeModel(wrong, GOOD)

    await _planner().plan(_context((lookup, refund)), model=model)

    repair = model.requests[1].messages[-1]
    assert (
        "- steps[0].tool_name: unknown tool 'cancel_order'; available: lookup_order, refund_order"
        in repair.content
    )
    assert repair.content.endswith(REQUEST)


async def test_a_length_cut_is_repaired(lookup, refund):
    cut = ChatResponse(text=GOOD[:40], model="fake:planner", finish_reason="length")
    model = FakeModel(cut, GOOD)

    await _planner().plan(_context((lookup, refund)), model=model)

    assert len(model.requests) == 2
    assert model.requests[1].messages[-2] == ChatMessage(role="assistant", content=GOOD[:40])
    assert "cut off at the length limit" in model.requests[1].messages[-1].content


async def test_plan_error_after_the_repair_bound_lists_the_last_problems(lookup, refund):
    model = FakeModel("not json", "still not json", _plan_json(("drop_table", {})))

    with pytest.raises(PlanError) as caught:
        await _planner(max_repairs=2).plan(_context((lookup, refund)), model=model)

    assert len(model.requests) == 3
    message = str(caught.value)
    assert message == (
        "model 'fake:planner' gave no valid plan in 3 attempt(s) (2 repair round(s)); the last "
        "answer's problems: steps[0].tool_name: unknown tool 'drop_table'; available: "
        "lookup_order, refund_order"
    )
    assert caught.value.user_message == PlanError.user_message


async def test_no_repairs_allowed_means_one_call(lookup):
    model = FakeModel("nope")

    with pytest.raises(PlanError, match=r"in 1 attempt\(s\) \(0 repair round\(s\)\)"):
        await _planner(max_repairs=0).plan(_context((lookup,)), model=model)

    assert len(model.requests) == 1


async def test_plan_error_quotes_at_most_ten_problems(lookup):
    wrong = json.dumps({"reasoning": "r", "steps": list(range(13))})
    planner = _planner(max_repairs=0, max_steps=20)

    with pytest.raises(PlanError) as caught:
        await planner.plan(_context((lookup,)), model=FakeModel(wrong))

    assert str(caught.value).endswith("; and 3 more")


async def test_model_errors_propagate_untouched(lookup):
    error = ModelUnavailable("503 from provider", model="fake:planner")

    with pytest.raises(ModelUnavailable) as caught:
        await _planner().plan(_context((lookup,)), model=FakeModel(error))

    assert caught.value is error


async def test_a_model_error_during_repair_propagates(lookup):
    error = ModelUnavailable("503 from provider")
    model = FakeModel("not json", error)

    with pytest.raises(ModelUnavailable):
        await _planner().plan(_context((lookup,)), model=model)

    assert len(model.requests) == 2


async def test_step_ids_continue_after_the_history_on_a_replan(lookup, refund):
    done = tuple(
        StepRecord(
            step=PlanStep(step_id=i, description="d", tool_name="lookup_order"),
            status=StepStatus.SUCCESS,
            outcome=ToolOutcome.success({"ok": True}),
        )
        for i in range(2)
    )
    context = _context((lookup, refund), history=done, feedback="try again", revision=1)

    plan = await _planner().plan(context, model=FakeModel(GOOD))

    assert [s.step_id for s in plan.steps] == [2, 3]
    assert plan.revision == 1
