"""`ModelPlanner`: asks a model for a schema-constrained plan and repairs bad answers, bounded.

One model call with the plan schema as the response format; a bad answer (cut off, not JSON, off
the schema) goes back to the model with what was wrong, at most ``settings.max_repairs`` times,
then `PlanError`. Provider failures (`ModelError`) are not caught: whether to retry them is the
Recovery Handler's call. The planner holds no per-run state, so one instance serves every run;
the repair rounds a plan took are therefore logged (debug), not stored on the planner.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bastion.errors import PlanError
from bastion.messages import AgentPlan, PlanStep
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest
from bastion.planner.interface import Planner, PlanningContext
from bastion.planner.plan_schema import build_plan_schema
from bastion.planner.prompt import build_messages
from bastion.planner.repair import read_answer, repair_message
from bastion.settings import PlannerSettings

logger = logging.getLogger(__name__)

#: Problems quoted in a `PlanError`'s message.
_MAX_PROBLEMS_IN_ERROR = 10


class ModelPlanner(Planner):
    """The default planner: one schema-constrained model call, plus bounded repair rounds.

    Args:
        settings: Repair bound, step bound and the output token limit of each call.
        system_prompt: The agent's role, put first in the system prompt; generic when None.
    """

    def __init__(self, *, settings: PlannerSettings, system_prompt: str | None = None) -> None:
        self._settings = settings
        self._system_prompt = system_prompt

    @property
    def system_prompt(self) -> str | None:
        """The app's role text (the memory's budget leaves room for it: `bastion.flow.admit`)."""
        return self._system_prompt

    async def plan(self, context: PlanningContext, *, model: ChatModel) -> AgentPlan:
        settings = self._settings
        schema = build_plan_schema(
            context.tools, max_steps=settings.max_steps, step_refs=settings.step_references
        )
        tools = {spec.name: spec for spec in context.tools}
        messages: list[ChatMessage] = list(
            build_messages(
                context,
                max_steps=settings.max_steps,
                system_prompt=self._system_prompt,
                step_refs=settings.step_references,
            )
        )
        problems: tuple[str, ...] = ()
        for repairs in range(settings.max_repairs + 1):
            response = await model.complete(
                ChatRequest(
                    messages=tuple(messages),
                    json_schema=schema,
                    schema_name="plan",
                    max_tokens=settings.max_tokens,
                    temperature=0.0,
                )
            )
            answer = read_answer(response, schema=schema, tools=tools, history=context.history)
            if answer.plan is not None:
                logger.debug(
                    "plan for run %s (revision %d) took %d repair round(s)",
                    context.request.run_id,
                    context.revision,
                    repairs,
                )
                return _to_plan(answer.plan, context=context, model=model.name)
            problems = answer.problems
            logger.debug(
                "plan answer for run %s rejected (round %d): %s",
                context.request.run_id,
                repairs,
                "; ".join(problems),
            )
            messages.append(ChatMessage(role="assistant", content=response.text))
            messages.append(repair_message(problems, request=context.request.message))
        shown = "; ".join(problems[:_MAX_PROBLEMS_IN_ERROR])
        if len(problems) > _MAX_PROBLEMS_IN_ERROR:
            shown += f"; and {len(problems) - _MAX_PROBLEMS_IN_ERROR} more"
        raise PlanError(
            f"model {model.name!r} gave no valid plan in {settings.max_repairs + 1} attempt(s) "
            f"({settings.max_repairs} repair round(s)); the last answer's problems: {shown}"
        )


def _to_plan(data: Mapping[str, Any], *, context: PlanningContext, model: str) -> AgentPlan:
    # Ids continue after the history so that a replan's steps never collide with those run.
    first = len(context.history)
    steps = tuple(
        PlanStep(
            step_id=first + index,
            description=step["description"],
            tool_name=step["tool_name"],
            tool_args=dict(step["tool_args"]),
        )
        for index, step in enumerate(data["steps"])
    )
    return AgentPlan(
        steps=steps, reasoning=data["reasoning"], revision=context.revision, model=model
    )
