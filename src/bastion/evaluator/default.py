"""`ChecksEvaluator`: the default Evaluator, judging steps and answers by pure checks.

A step: a failed outcome fails (retryable when it was transient). A successful one must fit the
tool's declared return type and the step's ``expect`` checks (`bastion.evaluator.checks`), must
not be error-shaped (``{"error": "..."}``, ``{"ok": false}``, ``{"status": "failed"}``) and, for
a tool without side effects, not empty (None or blank text: a read that returned nothing). A
result that fails them is not retryable, since running the same call again would most likely give
the same result: the planner has to change course instead.

The final answer: the policy checks of `bastion.evaluator.answer` (secrets, other users' data,
claims no step backs), then, when one is given, the model judge (`bastion.evaluator.judge`),
whose failing verdict blocks the answer only with ``judge_blocks``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bastion.evaluator.answer import (
    DEFAULT_CLAIMS,
    ClaimRule,
    check_claims,
    check_other_users,
    check_secrets,
)
from bastion.evaluator.checks import check_expectations, check_result_shape, check_return_type
from bastion.evaluator.interface import AnswerVerdict, Evaluator
from bastion.evaluator.judge import ModelJudge
from bastion.gate.redact import Redactor
from bastion.messages import AgentRequest, PlanStep, Principal, StepRecord, ToolOutcome, Verdict
from bastion.models.interface import ChatModel
from bastion.router.interface import ToolSpec


def _nobody(principal: Principal) -> bool:
    return False


class ChecksEvaluator(Evaluator):
    """Judges outcomes by type, expectations and shape; answers by policy checks and a judge.

    Args:
        redactor: finds secrets in answers (the system's, so declared fields count too).
        claims: actions an answer may claim only when a step did them.
        may_see_others: whether a principal may be shown other users' data (staff); nobody by
            default.
        judge: asks a model about each final answer; None (the default) asks nothing.
        judge_blocks: whether the judge's failing verdict rejects the answer (else recorded only).
    """

    def __init__(
        self,
        *,
        redactor: Redactor | None = None,
        claims: Sequence[ClaimRule] = DEFAULT_CLAIMS,
        may_see_others: Callable[[Principal], bool] = _nobody,
        judge: ModelJudge | None = None,
        judge_blocks: bool = False,
    ) -> None:
        self._redactor = redactor or Redactor()
        self._claims = tuple(claims)
        self._may_see_others = may_see_others
        self._judge = judge
        self._judge_blocks = judge_blocks

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
        shape = check_result_shape(
            outcome.value,
            tool_name=spec.name,
            may_be_empty=spec.side_effects or step.expect.get("non_empty") is False,
        )
        if shape is not None:
            problems.append(shape)
        if problems:
            return Verdict(passed=False, reason="; ".join(problems), retryable=False)
        return Verdict.ok()

    async def evaluate_answer(
        self,
        request: AgentRequest,
        principal: Principal | None,
        records: Sequence[StepRecord],
        answer: str,
        *,
        model: ChatModel,
    ) -> AnswerVerdict:
        who = principal or Principal(id=request.user_id)
        problems: list[str] = []
        # A secret is hidden by the redactor on the way out (every answer passes it): noted, not
        # withheld, so a useful answer is not lost for what the user never sees.
        secret = check_secrets(answer, self._redactor)
        notes = (f"{secret}: redacted from the answer",) if secret is not None else ()
        foreign = check_other_users(
            answer, records, principal=who, may_see_others=self._may_see_others
        )
        if foreign is not None:
            problems.append(foreign)
        problems.extend(check_claims(answer, records, self._claims))
        judged, judge_passed, judge_reason = False, None, None
        if self._judge is not None and not problems:
            # The judge is a model call like any other: it never sees a secret either.
            shown = self._redactor.text(answer)
            judgement = await self._judge.judge(request, records, shown, model=model)
            judged, judge_passed, judge_reason = True, judgement.passed, judgement.reason
            if judgement.passed is False and self._judge_blocks:
                problems.append(f"the model judge failed the answer: {judgement.reason}")
        verdict = (
            Verdict(passed=False, reason="; ".join(problems), retryable=False)
            if problems
            else Verdict.ok()
        )
        return AnswerVerdict(
            verdict=verdict,
            problems=tuple(problems),
            judge_passed=judge_passed,
            judge_reason=judge_reason,
            judged=judged,
            notes=notes,
        )
