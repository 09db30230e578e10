"""`ChecksEvaluator`: the default Evaluator, judging a step by its outcome and pure checks.

A failed outcome fails (retryable when it was transient). A successful one must fit the tool's
declared return type and the step's ``expect`` checks (`bastion.evaluator.checks`); a result that
fails them is not retryable, since running the same call again would most likely give the same
result: the planner has to change course instead.
"""

from __future__ import annotations

from bastion.evaluator.checks import check_expectations, check_return_type
from bastion.evaluator.interface import Evaluator
from bastion.messages import PlanStep, ToolOutcome, Verdict
from bastion.router.interface import ToolSpec


class ChecksEvaluator(Evaluator):
    """Judges outcomes by the tool's return type and the step's expectations. Never raises."""

    async def evaluate(self, step: PlanStep, spec: ToolSpec, outcome: ToolOutcome) -> Verdict:
        if not outcome.ok:
            reason = outcome.error or f"{spec.name!r} failed ({outcome.error_kind})"
            return Verdict(passed=False, reason=reason, retryable=outcome.transient)
        problems: list[str] = []
        if spec.return_adapter is not None:
            problem = check_return_type(spec.return_adapter, outcome.value, tool_name=spec.name)
            if problem is not None:
                problems.append(problem)
        problems.extend(check_expectations(step.expect, outcome.value))
        if problems:
            return Verdict(passed=False, reason="; ".join(problems), retryable=False)
        return Verdict.ok()
