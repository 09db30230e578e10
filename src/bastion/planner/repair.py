"""Reading a model's plan answer, and the message that asks it to mend a bad one.

A model's answer can fail three ways: it was cut at ``max_tokens`` (``finish_reason ==
"length"``), it is not JSON, or it does not fit the plan schema (or a tool's own argument checks,
which can be stricter than its JSON schema). Each failure becomes a sentence the model can act on;
`repair_message` hands them back with the request repeated, so the next answer is a new plan for the
same request rather than an apology. The loop that bounds the rounds lives in `ModelPlanner`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.errors import InvalidToolArgs
from bastion.messages import PlanStep, StepRecord
from bastion.models.interface import ChatMessage, ChatResponse
from bastion.planner.plan_schema import validate_plan
from bastion.planner.references import check_plan, has_refs
from bastion.router.interface import ToolSpec

#: Problems listed in one repair message; the rest are counted, not listed.
MAX_LISTED_PROBLEMS = 20

# Models trained on chat often wrap JSON in a Markdown fence even when told not to.
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(?P<body>.*?)\n?```$", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A model's answer, read: the plan when it is valid, else what is wrong with it."""

    plan: Mapping[str, Any] | None
    problems: tuple[str, ...] = ()


def read_answer(
    response: ChatResponse,
    *,
    schema: Mapping[str, Any],
    tools: Mapping[str, ToolSpec],
    history: Sequence[StepRecord] = (),
) -> Answer:
    """Parse and check one answer against the plan schema and the named tools' argument checks.

    Step references (`bastion.planner.references`) are checked here too: a bad one is a problem
    the model is asked to mend, like a bad argument.

    Args:
        response: The model's answer.
        schema: The plan schema the answer must follow.
        tools: The caller's tools by name (the schema's branches).
        history: The steps run so far (a replan's references may point at them; the new steps'
            ids continue after them).

    Returns:
        An `Answer` with the plan, or with the problems (never both).
    """
    if response.finish_reason == "length":
        return Answer(
            plan=None,
            problems=(
                "your answer was cut off at the length limit before it was complete; "
                "give a shorter plan, with fewer steps and shorter texts",
            ),
        )
    text = strip_fence(response.text)
    if not text:
        return Answer(plan=None, problems=("your answer was empty",))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Answer(
            plan=None,
            problems=(
                f"your answer is not valid JSON ({exc.msg} at line {exc.lineno} column "
                f"{exc.colno}); answer with one JSON object and nothing else",
            ),
        )
    problems = validate_plan(data, schema) or _arg_problems(data["steps"], tools, history)
    if problems:
        return Answer(plan=None, problems=tuple(problems))
    return Answer(plan=data)


def _arg_problems(
    steps: Sequence[Mapping[str, Any]],
    tools: Mapping[str, ToolSpec],
    history: Sequence[StepRecord],
) -> list[str]:
    # Only reached once the schema holds, so every step has a known tool_name and object args.
    problems = []
    for index, step in enumerate(steps):
        if has_refs(step["tool_args"]):
            continue  # its values are known at the call, where they are validated
        try:
            tools[step["tool_name"]].validate_args(step["tool_args"])
        except InvalidToolArgs as exc:
            problems.append(f"steps[{index}].tool_args: {exc}")
    first = len(history)
    planned = [
        PlanStep(
            step_id=first + i,
            description=s["description"],
            tool_name=s["tool_name"],
            tool_args=s["tool_args"],
        )
        for i, s in enumerate(steps)
    ]
    bad_refs = check_plan(planned, tool=tools.get, history=history)
    for index in sorted(bad_refs):
        problems.extend(bad_refs[index])
    return problems


def strip_fence(text: str) -> str:
    """`text` without surrounding whitespace and without a Markdown code fence around it."""
    text = text.strip()
    match = _FENCE.match(text)
    return match.group("body").strip() if match else text


def repair_message(problems: Sequence[str], *, request: str) -> ChatMessage:
    """The user message that says what was wrong with the last answer and asks again.

    Args:
        problems: What was wrong, one sentence each.
        request: The user's request, repeated verbatim.
    """
    listed = [f"- {problem}" for problem in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        listed.append(f"- and {len(problems) - MAX_LISTED_PROBLEMS} more problem(s)")
    content = "\n".join(
        [
            "Your last answer could not be used:",
            *listed,
            "Answer again with one JSON object only, in the required shape, for this request:",
            request,
        ]
    )
    return ChatMessage(role="user", content=content)
