"""The recovery rules: a `Failure` in, a `RecoveryAction` out (DESIGN.md §2, "Recovery Handler").

``decide`` is the whole table, read top to bottom:

* No time left → abort.
* A model call failed (no step): a transient `ModelError` is retried with backoff while attempts
  remain and the wait fits before the deadline (a rate limit's retry-after is a floor; if even that
  does not fit, abort saying so); an open circuit, a `PlanError` or any other error aborts with the
  error's own user message.
* A tool call failed, by `ToolErrorKind`:

  ===================== ==========================================================
  DENIED                replan (the planner may find an allowed path), else abort
  TIMEOUT, TRANSIENT    retry, else fallback, else replan, else abort; but a tool
                        with side effects that is not idempotent is never re-run
                        after a call that may have happened: abort, a person checks
  CIRCUIT_OPEN          fallback, else abort
  TOOL_ERROR, CRASHED,  fallback, else replan, else abort; never retried: a limit
  RESOURCE_EXHAUSTED    is hit again, and a crash of a tool with side effects may
                        have happened half-way
  INVALID_ARGS,         replan, else abort
  UNKNOWN_TOOL
  ===================== ==========================================================

* A result the Evaluator rejected: retry if the verdict is retryable and the tool is safe to run
  again, else replan, else abort.
* A final answer the Evaluator rejected (a verdict with no step): abort as failed, withholding the
  answer (the steps have run, so nothing is planned again).

A Retry is only returned while ``attempt < max_attempts``, ``retries_used < max_run_retries``
(the per-run cap), the process-wide retry budget grants one (``may_retry``, asked last, only when
a Retry is the answer, since asking spends) and never with a delay beyond ``time_left_s``; a
Replan only while ``replans_used < max_replans``. Aborts a rule chose (a denial,
an unsafe replay, an open circuit) are ``ABORTED``; running out of ways to succeed is ``FAILED``.
``user_message`` speaks to the end user in plain sentences, naming a step only by its description;
``reason`` is for operators and may be technical.

Pure apart from the jitter drawn from the `Backoff`'s injected random source: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.errors import BastionError, CircuitOpen, ModelError, ModelRateLimited, PlanError
from bastion.messages import (
    Abort,
    PlanStep,
    RecoveryAction,
    Replan,
    Retry,
    RunStatus,
    ToolErrorKind,
    ToolOutcome,
    UseFallback,
    Verdict,
)
from bastion.recovery.interface import Failure
from bastion.resilience.backoff import Backoff
from bastion.settings import RecoverySettings

OUT_OF_TIME = "Sorry, this request took too long and was stopped. Please try again."
ANSWER_WITHHELD = (
    "Sorry, I could not give you a reliable answer to this request. A member of our team will "
    "look into it."
)
_TRANSIENT = frozenset({ToolErrorKind.TIMEOUT, ToolErrorKind.TRANSIENT})
_PERMANENT = frozenset(
    {ToolErrorKind.TOOL_ERROR, ToolErrorKind.CRASHED, ToolErrorKind.RESOURCE_EXHAUSTED}
)


#: Asked before every Retry is returned; False refuses it (a spent retry budget).
MayRetry = Callable[[], bool]


def _always() -> bool:
    return True


def decide(
    failure: Failure,
    *,
    settings: RecoverySettings,
    backoff: Backoff,
    may_retry: MayRetry = _always,
) -> RecoveryAction:
    """What to do about `failure`.

    Args:
        failure: What went wrong, with the attempts, replans and time used so far.
        settings: The bounds on attempts and replans.
        backoff: Draws the wait before a retry.
        may_retry: The retry budget: asked (and spent) only when the answer would be a Retry.

    Returns:
        The action for the flow to take; never raises.
    """
    if failure.time_left_s <= 0:
        return Abort(reason=f"run deadline passed: {failure.reason}", user_message=OUT_OF_TIME)
    step, outcome, verdict = failure.step, failure.outcome, failure.verdict
    if step is not None and outcome is not None and not outcome.ok:
        return _tool_failed(failure, step, outcome, settings, backoff, may_retry)
    if step is not None and verdict is not None and not verdict.passed:
        return _result_rejected(failure, step, verdict, settings, backoff, may_retry)
    if step is None and verdict is not None and not verdict.passed:
        return _answer_rejected(verdict)
    return _model_call_failed(failure, settings, backoff, may_retry)


def _answer_rejected(verdict: Verdict) -> Abort:
    # The steps have run, some perhaps with side effects: the answer is withheld, not re-planned.
    return Abort(
        reason=f"final answer rejected by the Evaluator: {verdict.reason}",
        user_message=ANSWER_WITHHELD,
        status=RunStatus.FAILED,
    )


def _model_call_failed(
    failure: Failure, settings: RecoverySettings, backoff: Backoff, may_retry: MayRetry
) -> RecoveryAction:
    error = failure.error
    if error is None:
        # Nothing in the failure says what failed: stop rather than guess.
        return Abort(
            reason=f"recovery was given a failure with no error, outcome or verdict: "
            f"{failure.reason}",
            user_message=BastionError.user_message,
            status=RunStatus.FAILED,
        )
    if isinstance(error, PlanError):
        return Abort(reason=str(error), user_message=error.user_message, status=RunStatus.FAILED)
    if isinstance(error, CircuitOpen):
        return Abort(reason=str(error), user_message=error.user_message)
    if not (isinstance(error, ModelError) and error.transient):
        return Abort(reason=str(error), user_message=error.user_message, status=RunStatus.FAILED)
    if failure.attempt >= settings.max_attempts:
        return Abort(
            reason=f"model call failed {failure.attempt} time(s), reaching the limit of "
            f"{settings.max_attempts}: {error}",
            user_message=error.user_message,
            status=RunStatus.FAILED,
        )
    if failure.retries_used >= settings.max_run_retries:
        return Abort(
            reason=f"the run's {settings.max_run_retries} retries are used up: {error}",
            user_message=error.user_message,
            status=RunStatus.FAILED,
        )
    floor = error.retry_after_s if isinstance(error, ModelRateLimited) else None
    if floor is not None and floor > failure.time_left_s:
        return Abort(
            reason=f"rate limited, retry after {floor:.0f}s, but only "
            f"{failure.time_left_s:.1f}s are left before the deadline: {error}",
            user_message="The language model is busy and asked us to wait "
            f"{_seconds(floor)}, which is longer than this request may take. "
            "Please try again later.",
        )
    delay = backoff.delay(failure.attempt, retry_after_s=floor)
    if delay > failure.time_left_s:
        return Abort(
            reason=f"no time to retry the model call ({delay:.2f}s wait, "
            f"{failure.time_left_s:.2f}s left): {error}",
            user_message=OUT_OF_TIME,
            status=RunStatus.FAILED,
        )
    if not may_retry():
        return Abort(
            reason=f"retry budget spent (retries are capped at a share of calls), "
            f"not retrying: {error}",
            user_message=error.user_message,
            status=RunStatus.FAILED,
        )
    return Retry(
        delay_s=delay,
        reason=f"{type(error).__name__} on attempt {failure.attempt} of "
        f"{settings.max_attempts}: {error}",
    )


def _tool_failed(
    failure: Failure,
    step: PlanStep,
    outcome: ToolOutcome,
    settings: RecoverySettings,
    backoff: Backoff,
    may_retry: MayRetry,
) -> RecoveryAction:
    kind = outcome.error_kind
    what = f"step {step.step_id} ({step.tool_name}) {kind}: {outcome.error}"
    can_replan = failure.replans_used < settings.max_replans
    if kind is ToolErrorKind.DENIED:
        if can_replan:
            return Replan(
                reason=f"{what}. Plan another way this user is allowed to take, "
                "or no steps if there is none."
            )
        return Abort(reason=f"{what}; no replans left", user_message=_not_allowed(step))
    if kind in _TRANSIENT:
        if not _safe_to_rerun(failure):
            return Abort(
                reason=f"{what}; not retried: the tool has side effects and is not idempotent, "
                "so the call may have happened",
                user_message=f"I could not confirm whether this step went through: "
                f"{_sentence(step)}. A person needs to check whether it happened "
                "before it is tried again.",
            )
        delay = _retry_delay(failure, settings, backoff, may_retry)
        if delay is not None:
            return Retry(delay_s=delay, reason=f"{what} (attempt {failure.attempt})")
        user = f"Sorry, a service needed for this step is not responding: {_sentence(step)}."
        return _fallback(failure, what) or _replan_else_abort(can_replan, what, user)
    if kind is ToolErrorKind.CIRCUIT_OPEN:
        return _fallback(failure, what) or Abort(reason=what, user_message=CircuitOpen.user_message)
    user = f"Sorry, I could not complete this step: {_sentence(step)}."
    if kind in _PERMANENT:
        return _fallback(failure, what) or _replan_else_abort(can_replan, what, user)
    # INVALID_ARGS, UNKNOWN_TOOL and anything added later: the plan was wrong, so plan again.
    return _replan_else_abort(can_replan, what, user)


def _result_rejected(
    failure: Failure,
    step: PlanStep,
    verdict: Verdict,
    settings: RecoverySettings,
    backoff: Backoff,
    may_retry: MayRetry,
) -> RecoveryAction:
    what = f"step {step.step_id} ({step.tool_name}) result rejected: {verdict.reason}"
    # The call succeeded, so it did happen: re-running a non-idempotent tool would do it twice.
    if verdict.retryable and _safe_to_rerun(failure):
        delay = _retry_delay(failure, settings, backoff, may_retry)
        if delay is not None:
            return Retry(delay_s=delay, reason=f"{what} (attempt {failure.attempt})")
    return _replan_else_abort(
        failure.replans_used < settings.max_replans,
        what,
        f"Sorry, I could not get a usable result for this step: {_sentence(step)}.",
    )


def _retry_delay(
    failure: Failure, settings: RecoverySettings, backoff: Backoff, may_retry: MayRetry
) -> float | None:
    """The wait before another attempt, or None when attempts, time or budget have run out."""
    if failure.attempt >= settings.max_attempts:
        return None
    if failure.retries_used >= settings.max_run_retries:
        return None
    delay = backoff.delay(failure.attempt)
    if delay > failure.time_left_s or not may_retry():
        return None
    return delay


def _safe_to_rerun(failure: Failure) -> bool:
    # Without the tool's declaration we cannot know it is safe: assume it is not.
    spec = failure.spec
    return spec is not None and (not spec.side_effects or spec.idempotent)


def _fallback(failure: Failure, what: str) -> UseFallback | None:
    spec = failure.spec
    if spec is None or not spec.fallback or spec.fallback == spec.name:
        return None
    return UseFallback(tool_name=spec.fallback, reason=f"{what}; using fallback {spec.fallback!r}")


def _replan_else_abort(can_replan: bool, what: str, user_message: str) -> Replan | Abort:
    if can_replan:
        return Replan(reason=what)
    return Abort(
        reason=f"{what}; no retries, fallback or replans left",
        user_message=user_message,
        status=RunStatus.FAILED,
    )


def _not_allowed(step: PlanStep) -> str:
    action = _sentence(step)
    if not action:
        return "You are not allowed to do that."
    # "Refund order 7" reads as "You are not allowed to refund order 7"; keep "SQL ..." as is.
    if len(action) < 2 or not action[1].isupper():
        action = action[0].lower() + action[1:]
    return f"You are not allowed to {action}."


def _sentence(step: PlanStep) -> str:
    return " ".join(step.description.split()).rstrip(".")


def _seconds(value: float) -> str:
    if value < 90:
        return f"{max(1, round(value))} seconds"
    return f"{round(value / 60)} minutes"
