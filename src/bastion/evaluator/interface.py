"""The Evaluator's contract: judge each step's outcome, and the final answer before it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.messages import AgentRequest, PlanStep, Principal, StepRecord, ToolOutcome, Verdict
from bastion.models.interface import ChatModel
from bastion.router.interface import ToolSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerVerdict:
    """The Evaluator's judgement of a final answer: the checks, and the judge's if one ran."""

    verdict: Verdict
    #: Every policy check that failed, in plain words (empty when they all passed).
    problems: tuple[str, ...] = ()
    #: What was found but is fixed on the way out, not a failure: e.g. a secret, which the
    #: redactor hides from the answer the user gets.
    notes: tuple[str, ...] = ()
    #: The model judge's verdict: True pass, False fail, None no usable verdict; absent when off.
    judge_passed: bool | None = None
    judge_reason: str | None = None
    judged: bool = False


class Evaluator(Protocol):
    """Returns a `Verdict` for a step's outcome, and an `AnswerVerdict` for the final answer.

    Never raises (but `evaluate_answer` lets `BudgetExceeded` through when a judge cannot be
    paid for).

    A failed outcome always gives a failed verdict (retryable when the outcome is transient).
    A successful one passes only if the value fits the tool's declared return type and the
    step's ``expect`` checks, and is neither empty (for a tool without side effects) nor
    error-shaped. A final answer passes only if it holds no secret, no other user's data and no
    claim of an action that no successful step did.
    """

    async def evaluate(self, step: PlanStep, spec: ToolSpec, outcome: ToolOutcome) -> Verdict: ...

    async def evaluate_answer(
        self,
        request: AgentRequest,
        principal: Principal | None,
        records: Sequence[StepRecord],
        answer: str,
        *,
        model: ChatModel,
    ) -> AnswerVerdict:
        """Judge `answer` against the run's step `records`; `model` serves an optional judge."""
        ...
