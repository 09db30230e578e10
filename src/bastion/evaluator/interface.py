"""The Evaluator's contract: judge one step's outcome against what was expected."""

from __future__ import annotations

from typing import Protocol

from bastion.messages import PlanStep, ToolOutcome, Verdict
from bastion.router.interface import ToolSpec


class Evaluator(Protocol):
    """Returns a `Verdict` for a step's outcome. Never raises.

    A failed outcome always gives a failed verdict (retryable when the outcome is transient).
    A successful one passes only if the value fits the tool's declared return type and the
    step's ``expect`` checks.
    """

    async def evaluate(self, step: PlanStep, spec: ToolSpec, outcome: ToolOutcome) -> Verdict: ...
