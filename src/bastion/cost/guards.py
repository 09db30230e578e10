"""Runaway guards: a run may make only so many model calls, and may not repeat itself.

An agent that loops burns money even under a budget (a cheap model can loop for a long time
before a dollar is gone), so a run also has caps that do not depend on prices: on its model calls
(`CallCap`), on its steps and wall time (``settings.run.max_steps`` and ``timeout_s``, enforced
by the flow), and on repeats: the same tool with the same args run more than
``settings.run.max_identical_calls`` times is a loop (`LoopGuard`). Each ends the run with
`bastion.errors.RunLimitReached`'s message for the user and the reason for operators.

Both are per run and deterministic, so a durable run replays through them the same way.
"""

from __future__ import annotations

import json
from collections import Counter

from bastion.errors import RunLimitReached
from bastion.messages import PlanStep
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse


class CallCap(ChatModel):
    """Refuses the model call after the first `limit` of a run (before anything is reserved).

    Args:
        wrapped: the run's model (metered).
        limit: how many calls the run may make.
    """

    def __init__(self, wrapped: ChatModel, *, limit: int) -> None:
        self.wrapped = wrapped
        self.limit = limit
        self.calls = 0

    @property
    def name(self) -> str:
        return self.wrapped.name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Call `wrapped`, unless the run has made `limit` calls already.

        Raises:
            RunLimitReached: the cap is reached (the model is not called).
        """
        if self.calls >= self.limit:
            raise RunLimitReached(
                f"the run made {self.calls} model calls, its cap (settings.run.max_model_calls); "
                "stopped as a likely runaway"
            )
        self.calls += 1
        return await self.wrapped.complete(request)


class LoopGuard:
    """Counts each distinct call (tool name and canonical args) a run makes.

    Args:
        max_identical: how many times the same call may run; one more is a loop.
    """

    def __init__(self, *, max_identical: int) -> None:
        self.max_identical = max_identical
        self._seen: Counter[str] = Counter()

    def check(self, step: PlanStep) -> str | None:
        """Record `step` and return None, or, when it would be one repeat too many, why not."""
        key = step.tool_name + " " + json.dumps(step.tool_args, sort_keys=True, default=str)
        if self._seen[key] >= self.max_identical:
            return (
                f"loop: {step.tool_name} with the same args would run for the "
                f"{self._seen[key] + 1}th time (settings.run.max_identical_calls = "
                f"{self.max_identical}); args {json.dumps(step.tool_args, default=str)[:200]}"
            )
        self._seen[key] += 1
        return None
