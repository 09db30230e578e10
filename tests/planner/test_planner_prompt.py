from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bastion.memory.interface import MemoryContext, Turn
from bastion.messages import (
    AgentRequest,
    PlanStep,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
    Verdict,
)
from bastion.planner.interface import PlanningContext
from bastion.planner.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    STEP_MAX_CHARS,
    TOOL_DESCRIPTION_MAX_CHARS,
    build_messages,
    step_line,
    tool_line,
    type_label,
)
from bastion.router.interface import ToolSpec

AT = datetime(2026, 1, 1, tzinfo=UTC)
REQUEST = "Where is my order A-1001?\n  It was due on Monday."


def _context(tools: tuple[ToolSpec, ...], **kwargs: Any) -> PlanningContext:
    request = AgentRequest(user_id="u1", session_id="s1", message=REQUEST)
    kwargs.setdefault("memory", MemoryContext())
    return PlanningContext(request=request, tools=tools, **kwargs)


def _record(step_id: int, outcome: ToolOutcome, **kwargs: Any) -> StepRecord:
    step = PlanStep(
        step_id=step_id,
        description=f"step {step_id}",
        tool_name="lookup_order",
        tool_args={"order_id": "A-1001"},
    )
    status = StepStatus.SUCCESS if outcome.ok else StepStatus.FAILED
    return StepRecord(step=step, status=kwargs.pop("status", status), outcome=outcome, **kwargs)


def test_system_prompt_has_role_tools_and_rules(lookup, refund):
    system, _ = build_messages(
        _context((lookup, refund)), max_steps=4, system_prompt="You help customers of Acme."
    )

    assert system.role == "system"
    text = system.content
    assert text.startswith("You help customers of Acme.")
    assert DEFAULT_SYSTEM_PROMPT not in text
    assert "- lookup_order(order_id: string): Look up an order by its number." in text
    assert "    order_id: The order number, e.g. A-1001." in text
    assert (
        "- refund_order(order_id: string, amount: number, reason?: string|null): "
        "Refund part or all of an order."
    ) in text
    assert "JSON object and nothing else" in text
    assert '"tool_name"' in text
    assert '"tool_args"' in text
    assert "only the tools listed" in text
    assert "only from the user's words or from earlier results" in text
    assert 'At most 4 steps. If no tool is needed, give an empty "steps" list.' in text


def test_default_role_and_no_tools(lookup):
    system, _ = build_messages(_context(()), max_steps=4)

    assert system.content.startswith(DEFAULT_SYSTEM_PROMPT)
    assert "Tools: none." in system.content
    assert '"steps" must be an empty list' in system.content
    assert "lookup_order" not in system.content


def test_the_prompt_names_only_the_callers_tools(lookup, refund):
    system, _ = build_messages(_context((lookup,)), max_steps=2)

    assert "lookup_order" in system.content
    assert "refund_order" not in system.content


def test_the_request_is_the_last_user_message_verbatim(lookup):
    messages = build_messages(_context((lookup,)), max_steps=2)

    assert [m.role for m in messages] == ["system", "user"]
    assert messages[-1].content.endswith(f"Request:\n{REQUEST}")
    assert "Steps already run" not in messages[-1].content
    assert "Conversation so far" not in messages[-1].content


def test_recent_turns_come_before_the_request_oldest_first(lookup):
    memory = MemoryContext(
        turns=(
            Turn(role="user", content="Hi, I ordered a lamp.", at=AT),
            Turn(role="assistant", content="Thanks, what is the order number?", at=AT),
        ),
        omitted_turns=3,
    )

    _, user = build_messages(_context((lookup,), memory=memory), max_steps=2)

    assert user.content.startswith(
        "Conversation so far, oldest first:\n(3 earlier turn(s) left out)\n"
        "user: Hi, I ordered a lamp.\nassistant: Thanks, what is the order number?"
    )
    assert user.content.endswith(f"Request:\n{REQUEST}")


def test_a_replan_shows_the_steps_so_far_and_the_feedback(lookup):
    history = (
        _record(0, ToolOutcome.success({"status": "shipped"})),
        _record(1, ToolOutcome.failure(ToolErrorKind.TIMEOUT, "timed out after 5s")),
        _record(
            2,
            ToolOutcome.success([]),
            verdict=Verdict(passed=False, reason="result is empty"),
            tool_name="search_orders",
        ),
    )
    context = _context((lookup,), history=history, feedback="step 1 timed out", revision=1)

    _, user = build_messages(context, max_steps=2)

    lines = user.content.split("\n")
    start = lines.index("Steps already run, one JSON object per line:")
    steps = [json.loads(line) for line in lines[start + 1 : start + 4]]
    assert steps[0] == {
        "step_id": 0,
        "description": "step 0",
        "tool_name": "lookup_order",
        "tool_args": {"order_id": "A-1001"},
        "status": "success",
        "result": {"status": "shipped"},
    }
    assert steps[1]["status"] == "failed"
    assert steps[1]["error"] == "timed out after 5s"
    assert "result" not in steps[1]
    assert steps[2]["tool_name"] == "search_orders"  # the tool actually run (a fallback)
    assert steps[2]["rejected"] == "result is empty"
    assert "Why a new plan is needed: step 1 timed out" in user.content
    assert "Plan only the remaining steps" in user.content
    assert user.content.endswith(f"Request:\n{REQUEST}")


def test_a_failed_step_without_an_error_text_shows_its_kind():
    outcome = ToolOutcome(ok=False, error_kind=ToolErrorKind.CRASHED)

    assert json.loads(step_line(_record(0, outcome)))["error"] == "crashed"


def test_a_big_result_is_cut_and_the_line_stays_json():
    big = {"rows": [{"id": i, "text": "x" * 50} for i in range(200)]}

    line = step_line(_record(0, ToolOutcome.success(big)))

    assert len(line) <= STEP_MAX_CHARS + 50
    entry = json.loads(line)
    assert entry["status"] == "success"
    assert entry["result"].startswith('{"rows":[{"id":0,')
    assert "more characters cut)" in entry["result"]


def test_a_big_error_is_cut_too():
    outcome = ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, "boom " * 1000)

    line = step_line(_record(0, outcome))

    assert len(line) <= STEP_MAX_CHARS + 50
    assert json.loads(line)["error"].startswith("boom boom")


def test_a_step_too_big_even_without_its_result_is_cut_hard():
    step = PlanStep(step_id=0, description="d", tool_name="t", tool_args={"q": "y" * 5000})
    record = StepRecord(step=step, status=StepStatus.SKIPPED)

    line = step_line(record)

    assert len(line) <= STEP_MAX_CHARS + 50
    assert line.endswith("more characters cut)")


def test_long_feedback_is_cut(lookup):
    context = _context((lookup,), feedback="z" * 5000)

    _, user = build_messages(context, max_steps=2)

    assert "z" * 1000 in user.content
    assert "z" * 1001 not in user.content


def test_a_docstring_description_is_squashed_and_capped(tool_factory, lookup):
    spec = tool_factory(
        "long", lookup.args_model, description="First line.\n\n    " + "word " * 200
    )

    line = tool_line(spec).split("\n")[0]

    assert line.startswith("- long(order_id: string): First line. word word")
    assert len(line) < TOOL_DESCRIPTION_MAX_CHARS + 80


def test_type_labels():
    assert type_label({"type": "string"}) == "string"
    assert type_label({"type": ["integer", "null"]}) == "integer|null"
    assert type_label({"type": "array", "items": {"type": "integer"}}) == "list[integer]"
    assert type_label({"type": "array"}) == "array"
    assert type_label({"$ref": "#/$defs/Address"}) == "Address"
    assert type_label({"enum": ["low", "high"]}) == '"low"|"high"'
    assert type_label({"const": 3}) == "3"
    assert type_label({"oneOf": [{"type": "string"}, {"type": "null"}]}) == "string|null"
    assert type_label({}) == "any"
    item = {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}
    assert type_label({"type": "array", "items": {**item, "required": ["sku"]}}) == (
        "list[{sku: string, qty?: integer}]"
    )
    assert type_label(True) == "any"
