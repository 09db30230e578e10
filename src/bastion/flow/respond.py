"""Respond: compose the answer from what the steps returned, persist it, build the response.

The answer is composed from tool results, never from the model's free text, so it can never claim
what no tool returned. An app supplies its own `AnswerComposer` (the support demo words each tool's
result for a customer); the default lists each step's outcome plainly.

Before a completed run's answer goes out, the Evaluator checks it (`check_answer`: no secret, no
other user's data, no claim of an action no step did, and the model judge when on); the verdict
is a run event. A rejected answer goes to the Recovery Handler, which decides what the user gets
instead. Its choices are fewer here than after a step: the steps have run (some with side
effects), so planning them again is not on offer, and anything but an abort is treated as one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bastion.cost.metered import MeteredChatModel
from bastion.errors import BudgetExceeded
from bastion.evaluator.interface import AnswerVerdict
from bastion.messages import (
    Abort,
    AgentPlan,
    AgentRequest,
    AgentResponse,
    EventKind,
    PlanStep,
    RunStatus,
    StepRecord,
    StepStatus,
    Verdict,
)
from bastion.models.interface import ChatResponse
from bastion.recovery.interface import Failure

if TYPE_CHECKING:
    from bastion.flow.components import Components
    from bastion.flow.execute import ExecutionResult
    from bastion.flow.state import RunState

logger = logging.getLogger("bastion.flow")

#: Turns a completed run's step records into the answer shown to the user.
AnswerComposer = Callable[[AgentRequest, Sequence[StepRecord]], str]

_NOTHING_TO_DO = (
    "I could not find anything I can do for that request with the tools I have. "
    "Could you tell me a bit more?"
)


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def default_answer(request: AgentRequest, records: Sequence[StepRecord]) -> str:
    """List what each step found, plainly: the answer an app gets until it words its own."""
    if not records:
        return _NOTHING_TO_DO
    lines = []
    for record in records:
        if record.status is StepStatus.SUCCESS and record.outcome is not None:
            lines.append(f"- {record.step.description}: {_short(record.outcome.value)}")
        else:
            lines.append(f"- {record.step.description}: could not be done.")
    return "Here is what I found:\n" + "\n".join(lines)


def final_plan(run: RunState, skipped: Sequence[PlanStep]) -> AgentPlan | None:
    """The plan as it ended: each step that ran (with its outcome), then those that never ran."""
    if run.plan is None:
        return None
    steps = [_as_step(record) for record in run.records]
    steps.extend(
        PlanStep(
            step_id=s.step_id,
            description=s.description,
            tool_name=s.tool_name,
            tool_args=s.tool_args,
            expect=s.expect,
            status=StepStatus.SKIPPED,
        )
        for s in skipped
    )
    return AgentPlan(
        steps=tuple(steps),
        reasoning=run.plan.reasoning,
        revision=run.plan.revision,
        model=run.plan.model,
    )


def _as_step(record: StepRecord) -> PlanStep:
    outcome = record.outcome
    error = None
    if record.status is not StepStatus.SUCCESS:
        error = (outcome.error if outcome else None) or (
            record.verdict.reason if record.verdict else None
        )
    return PlanStep(
        step_id=record.step.step_id,
        description=record.step.description,
        tool_name=record.tool_name or record.step.tool_name,
        tool_args=record.step.tool_args,
        expect=record.step.expect,
        status=record.status,
        result=outcome.value if outcome is not None and outcome.ok else None,
        error=error,
        cost_usd=record.step.cost_usd,
        cached_age_s=outcome.cached_age_s if outcome is not None else None,
    )


def degraded_notices(run: RunState) -> tuple[str, ...]:
    """What was degraded in this run, in plain words: fallback models, cached results."""
    notices = list(run.degraded)
    for record in run.records:
        outcome = record.outcome
        if outcome is not None and outcome.ok and outcome.cached_age_s is not None:
            notices.append(
                f"The result of '{record.step.description}' is cached from "
                f"{_age(outcome.cached_age_s)} ago: the service behind it is unavailable."
            )
    return tuple(notices)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{round(seconds)} seconds"
    if seconds < 7200:
        return f"{round(seconds / 60)} minutes"
    return f"{round(seconds / 3600)} hours"


#: What the user gets when the answer is withheld and recovery gave no message of its own.
ANSWER_WITHHELD = (
    "Sorry, I could not give you a reliable answer to this request. A member of our team will "
    "look into it."
)


async def check_answer(run: RunState, c: Components, answer: str) -> Abort | None:
    """Have the Evaluator check `answer`; None if it passes, else how recovery ends the run.

    The verdict (and the judge's, when one ran) is recorded as an ``evaluation`` run event. A
    judge the run's budget cannot pay for is skipped, and said so in that event.
    """

    def on_call(response: ChatResponse, cost: object) -> None:
        run.count_model_call(response, cost, purpose="judge")

    model = MeteredChatModel(wrapped=c.model, cost=c.cost, run_id=run.run_id, on_call=on_call)
    try:
        review = await c.evaluator.evaluate_answer(
            run.request, run.principal, run.records, answer, model=model
        )
    except BudgetExceeded as exc:
        review = AnswerVerdict(
            verdict=Verdict.ok(), judged=False, judge_reason=f"judge skipped: {exc}"
        )
    verdict = review.verdict
    run.emit(
        EventKind.EVALUATION,
        stage="answer",
        passed=verdict.passed,
        reason=verdict.reason,
        problems=list(review.problems),
        notes=list(review.notes),
        judged=review.judged,
        judge_passed=review.judge_passed,
        judge_reason=review.judge_reason,
    )
    if verdict.passed:
        return None
    reason = f"final answer rejected: {verdict.reason}"
    action = await c.recovery.decide(
        Failure(
            reason=reason,
            verdict=verdict,
            replans_used=run.replans,
            time_left_s=run.time_left_s,
        )
    )
    if isinstance(action, Abort):
        return action
    return Abort(
        reason=f"{reason} (recovery answered {action.kind}, which cannot follow the final "
        "answer: aborted instead)",
        user_message=ANSWER_WITHHELD,
        status=RunStatus.FAILED,
    )


async def respond(run: RunState, c: Components, result: ExecutionResult) -> AgentResponse:
    """Compose the answer, close the budget, persist the turn, and end the run."""
    error: str | None = None
    skipped: Sequence[PlanStep] = ()
    if result.kind == "finished":
        status = RunStatus.COMPLETED
        try:
            message = c.answer(run.request, run.records)
        except Exception:
            # The app's wording failed, not the run: fall back to the plain listing.
            logger.exception("answer composer failed for run %s", run.run_id)
            message = default_answer(run.request, run.records)
        rejected = await check_answer(run, c, message)
        if rejected is not None:
            status, message, error = rejected.status, rejected.user_message, rejected.reason
    else:
        status, message, error, skipped = (
            result.status,
            result.user_message,
            result.reason,
            result.skipped,
        )
    degraded = degraded_notices(run)
    if degraded and status is RunStatus.COMPLETED:
        message = f"{message}\n\nNote: " + " ".join(degraded)
    total = await c.cost.finish(run.run_id)
    records = run.records
    response = AgentResponse(
        run_id=run.run_id,
        status=status,
        message=message,
        plan=final_plan(run, skipped),
        total_cost_usd=total,
        steps_completed=sum(1 for r in records if r.status is StepStatus.SUCCESS),
        steps_failed=sum(1 for r in records if r.status in (StepStatus.FAILED, StepStatus.DENIED)),
        model=run.model_name,
        model_reason=run.model_reason,
        error=error,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
        degraded=degraded,
    )
    await c.memory.persist_turns(run.request, response)
    run.emit(EventKind.ANSWER, message=message, total_cost_usd=str(total))
    await run.transition(status, answer=message, error=error, total_cost_usd=total)
    return response
