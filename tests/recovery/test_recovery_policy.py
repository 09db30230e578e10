from __future__ import annotations

import math
import random
from typing import Any

import pytest
from pydantic import BaseModel

from bastion.errors import (
    BastionError,
    BudgetExceeded,
    CircuitOpen,
    ModelBadRequest,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
    PlanError,
)
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
from bastion.recovery.policy import OUT_OF_TIME, decide
from bastion.resilience.backoff import Backoff
from bastion.router.interface import ToolSpec
from bastion.settings import RecoverySettings

SETTINGS = RecoverySettings(max_attempts=3, base_delay_s=0.5, max_delay_s=8.0, max_replans=2)
_TRANSIENT = {ToolErrorKind.TIMEOUT, ToolErrorKind.TRANSIENT}
STEP = PlanStep(step_id=3, description="Refund order A-7.", tool_name="refund_tool")


class Args(BaseModel):
    order_id: str


def _spec(**kwargs: Any) -> ToolSpec:
    return ToolSpec(
        name="refund_tool",
        description="Refund an order.",
        fn=lambda **_: None,
        args_model=Args,
        args_schema=Args.model_json_schema(),
        is_async=False,
        **kwargs,
    )


SAFE = _spec()
UNSAFE = _spec(side_effects=True, idempotent=False)


def _decide(failure: Failure, settings: RecoverySettings = SETTINGS, seed: int = 0):
    backoff = Backoff(
        base_s=settings.base_delay_s, max_s=settings.max_delay_s, rng=random.Random(seed)
    )
    return decide(failure, settings=settings, backoff=backoff)


def _tool_failure(kind: ToolErrorKind, *, step: PlanStep = STEP, **kwargs: Any) -> Failure:
    outcome = ToolOutcome.failure(kind, "upstream said no", transient=kind in _TRANSIENT)
    kwargs.setdefault("spec", SAFE)
    return Failure(
        reason="upstream said no",
        step=step,
        outcome=outcome,
        verdict=Verdict(passed=False, reason="upstream said no"),
        **kwargs,
    )


def _rejected(*, retryable: bool, **kwargs: Any) -> Failure:
    kwargs.setdefault("spec", SAFE)
    return Failure(
        reason="result is empty",
        step=STEP,
        outcome=ToolOutcome.success([]),
        verdict=Verdict(passed=False, reason="result is empty", retryable=retryable),
        **kwargs,
    )


def _model_failure(error: BastionError | None, **kwargs: Any) -> Failure:
    return Failure(reason=str(error), error=error, **kwargs)


def _abort(action: RecoveryAction) -> Abort:
    assert isinstance(action, Abort), action
    return action


def _retry(action: RecoveryAction) -> Retry:
    assert isinstance(action, Retry), action
    return action


# -- model calls -------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ModelUnavailable("503"), ModelTimeout("slow")])
def test_a_transient_model_error_is_retried_with_backoff(error):
    first = _retry(_decide(_model_failure(error, attempt=1)))
    second = _retry(_decide(_model_failure(error, attempt=2), seed=1))

    assert 0 <= first.delay_s <= 0.5
    assert 0 <= second.delay_s <= 1.0
    assert "attempt 1 of 3" in first.reason


def test_a_transient_model_error_out_of_attempts_fails():
    error = ModelUnavailable("503")

    action = _abort(_decide(_model_failure(error, attempt=3)))

    assert action.status is RunStatus.FAILED
    assert action.user_message == error.user_message
    assert "failed 3 time(s)" in action.reason


def test_retry_after_is_a_floor_for_a_rate_limited_model():
    error = ModelRateLimited("429", retry_after_s=2.5)

    action = _retry(_decide(_model_failure(error, attempt=1, time_left_s=60)))

    assert action.delay_s == 2.5


def test_a_retry_after_past_the_deadline_aborts_saying_so():
    error = ModelRateLimited("429", retry_after_s=20)

    action = _abort(_decide(_model_failure(error, attempt=1, time_left_s=5)))

    assert action.status is RunStatus.ABORTED
    assert "rate limited, retry after 20s" in action.reason
    assert action.user_message == (
        "The language model is busy and asked us to wait 20 seconds, which is longer than this "
        "request may take. Please try again later."
    )


def test_a_long_retry_after_is_said_in_minutes():
    error = ModelRateLimited("429", retry_after_s=600)

    action = _abort(_decide(_model_failure(error, time_left_s=60)))

    assert "wait 10 minutes" in action.user_message


def test_a_jittered_wait_past_the_deadline_is_not_returned():
    settings = RecoverySettings(base_delay_s=8.0, max_delay_s=8.0)

    action = _abort(_decide(_model_failure(ModelTimeout("slow"), time_left_s=0.001), settings))

    assert action.user_message == OUT_OF_TIME
    assert action.status is RunStatus.FAILED


def test_an_open_model_circuit_aborts():
    error = CircuitOpen("model:openai:gpt-4o-mini", retry_at=1030.0)

    action = _abort(_decide(_model_failure(error)))

    assert action.status is RunStatus.ABORTED
    assert action.user_message == CircuitOpen.user_message
    assert action.reason == str(error)


def test_a_plan_error_fails_with_its_user_message():
    error = PlanError("model 'm' gave no valid plan in 3 attempt(s)")

    action = _abort(_decide(_model_failure(error)))

    assert action == Abort(
        reason=str(error), user_message=PlanError.user_message, status=RunStatus.FAILED
    )


@pytest.mark.parametrize(
    "error", [ModelBadRequest("400: bad schema"), ModelRefused("401"), BudgetExceeded("over")]
)
def test_other_errors_abort_with_their_user_message(error):
    action = _abort(_decide(_model_failure(error, attempt=1)))

    assert action.user_message == error.user_message
    assert action.reason == str(error)


def test_a_failure_that_names_nothing_aborts_rather_than_guessing():
    action = _abort(_decide(_model_failure(None)))

    assert action.status is RunStatus.FAILED
    assert action.user_message == BastionError.user_message


def test_a_step_whose_call_and_result_were_fine_is_not_guessed_at():
    failure = Failure(
        reason="?", step=STEP, spec=SAFE, outcome=ToolOutcome.success(1), verdict=Verdict.ok()
    )

    assert _abort(_decide(failure)).status is RunStatus.FAILED


@pytest.mark.parametrize(
    "failure",
    [
        _model_failure(ModelUnavailable("503"), time_left_s=0),
        _tool_failure(ToolErrorKind.TIMEOUT, time_left_s=-1),
        _rejected(retryable=True, time_left_s=0),
    ],
)
def test_no_time_left_aborts(failure):
    action = _abort(_decide(failure))

    assert action.user_message == OUT_OF_TIME


# -- tool outcomes -----------------------------------------------------------------------------


def test_a_denied_step_is_replanned():
    action = _decide(_tool_failure(ToolErrorKind.DENIED, replans_used=1))

    assert isinstance(action, Replan)
    assert "step 3 (refund_tool) denied: upstream said no" in action.reason


def test_a_denied_step_without_replans_left_says_what_was_not_allowed():
    action = _abort(_decide(_tool_failure(ToolErrorKind.DENIED, replans_used=2)))

    assert action.status is RunStatus.ABORTED
    assert action.user_message == "You are not allowed to refund order A-7."


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ("SQL export of all users", "You are not allowed to SQL export of all users."),
        ("", "You are not allowed to do that."),
        ("x", "You are not allowed to x."),
    ],
)
def test_not_allowed_wording(description, message):
    step = PlanStep(step_id=0, description=description, tool_name="t")
    action = _abort(_decide(_tool_failure(ToolErrorKind.DENIED, step=step, replans_used=2)))

    assert action.user_message == message


@pytest.mark.parametrize("kind", sorted(_TRANSIENT))
def test_a_transient_failure_of_a_safe_tool_is_retried(kind):
    action = _retry(_decide(_tool_failure(kind, attempt=2)))

    assert 0 <= action.delay_s <= 1.0
    assert "step 3 (refund_tool)" in action.reason


def test_a_transient_failure_of_an_idempotent_side_effecting_tool_is_retried():
    spec = _spec(side_effects=True, idempotent=True)

    _retry(_decide(_tool_failure(ToolErrorKind.TIMEOUT, spec=spec)))


@pytest.mark.parametrize("kind", sorted(_TRANSIENT))
def test_an_unsafe_tool_is_never_rerun_after_a_transient_failure(kind):
    spec = _spec(side_effects=True, idempotent=False, fallback="manual_refund")

    action = _abort(_decide(_tool_failure(kind, spec=spec, attempt=1)))

    assert action.status is RunStatus.ABORTED
    assert "not idempotent" in action.reason
    assert action.user_message == (
        "I could not confirm whether this step went through: Refund order A-7. A person needs "
        "to check whether it happened before it is tried again."
    )


def test_a_transient_failure_of_an_undeclared_tool_is_treated_as_unsafe():
    action = _abort(_decide(_tool_failure(ToolErrorKind.TIMEOUT, spec=None)))

    assert "person needs to check" in action.user_message


def test_transient_out_of_attempts_uses_the_fallback():
    spec = _spec(fallback="refund_by_email")

    action = _decide(_tool_failure(ToolErrorKind.TIMEOUT, spec=spec, attempt=3))

    assert isinstance(action, UseFallback)
    assert action.tool_name == "refund_by_email"


def test_transient_wait_past_the_deadline_skips_to_the_fallback():
    spec = _spec(fallback="refund_by_email")
    settings = RecoverySettings(base_delay_s=8.0, max_delay_s=8.0)

    action = _decide(_tool_failure(ToolErrorKind.TIMEOUT, spec=spec, time_left_s=0.001), settings)

    assert isinstance(action, UseFallback)


def test_transient_out_of_attempts_without_fallback_replans_then_aborts():
    replan = _decide(_tool_failure(ToolErrorKind.TRANSIENT, attempt=3, replans_used=1))
    abort = _abort(_decide(_tool_failure(ToolErrorKind.TRANSIENT, attempt=3, replans_used=2)))

    assert isinstance(replan, Replan)
    assert abort.status is RunStatus.FAILED
    assert abort.user_message == (
        "Sorry, a service needed for this step is not responding: Refund order A-7."
    )


def test_a_tool_that_is_its_own_fallback_has_none():
    spec = _spec(fallback="refund_tool")

    action = _decide(_tool_failure(ToolErrorKind.TOOL_ERROR, spec=spec))

    assert isinstance(action, Replan)


def test_an_open_tool_circuit_uses_the_fallback_else_aborts():
    with_fallback = _decide(
        _tool_failure(ToolErrorKind.CIRCUIT_OPEN, spec=_spec(fallback="refund_by_email"))
    )
    without = _abort(_decide(_tool_failure(ToolErrorKind.CIRCUIT_OPEN)))

    assert with_fallback == UseFallback(
        tool_name="refund_by_email",
        reason="step 3 (refund_tool) circuit_open: upstream said no; "
        "using fallback 'refund_by_email'",
    )
    assert without.user_message == CircuitOpen.user_message
    assert without.status is RunStatus.ABORTED


@pytest.mark.parametrize(
    "kind", [ToolErrorKind.TOOL_ERROR, ToolErrorKind.CRASHED, ToolErrorKind.RESOURCE_EXHAUSTED]
)
def test_a_permanent_tool_failure_falls_back_else_replans_else_aborts(kind):
    fallback = _decide(_tool_failure(kind, spec=_spec(fallback="refund_by_email")))
    replan = _decide(_tool_failure(kind, replans_used=1))
    abort = _abort(_decide(_tool_failure(kind, replans_used=2)))

    assert isinstance(fallback, UseFallback)
    assert isinstance(replan, Replan)
    assert abort.status is RunStatus.FAILED
    assert abort.user_message == "Sorry, I could not complete this step: Refund order A-7."


@pytest.mark.parametrize("kind", [ToolErrorKind.RESOURCE_EXHAUSTED, ToolErrorKind.CRASHED])
@pytest.mark.parametrize("spec", [SAFE, UNSAFE])
def test_exhaustion_and_crashes_are_never_retried(kind, spec):
    for attempt in (1, 2):
        action = _decide(_tool_failure(kind, spec=spec, attempt=attempt))
        assert not isinstance(action, Retry)


@pytest.mark.parametrize("kind", [ToolErrorKind.INVALID_ARGS, ToolErrorKind.UNKNOWN_TOOL])
def test_a_planning_mistake_replans_else_aborts_and_ignores_the_fallback(kind):
    spec = _spec(fallback="refund_by_email")

    replan = _decide(_tool_failure(kind, spec=spec, replans_used=0))
    abort = _abort(_decide(_tool_failure(kind, spec=spec, replans_used=2)))

    assert isinstance(replan, Replan)
    assert abort.status is RunStatus.FAILED


# -- rejected results --------------------------------------------------------------------------


def test_a_retryable_rejection_is_retried():
    action = _retry(_decide(_rejected(retryable=True, attempt=1)))

    assert "result rejected: result is empty" in action.reason


def test_a_retryable_rejection_of_an_unsafe_tool_is_replanned_not_rerun():
    action = _decide(_rejected(retryable=True, spec=UNSAFE))

    assert isinstance(action, Replan)


def test_a_retryable_rejection_out_of_attempts_or_time_is_replanned():
    settings = RecoverySettings(base_delay_s=8.0, max_delay_s=8.0)

    assert isinstance(_decide(_rejected(retryable=True, attempt=3)), Replan)
    assert isinstance(_decide(_rejected(retryable=True, time_left_s=0.001), settings), Replan)


def test_a_rejection_replans_with_the_verdict_then_aborts():
    replan = _decide(_rejected(retryable=False))
    abort = _abort(_decide(_rejected(retryable=False, replans_used=2)))

    assert replan == Replan(reason="step 3 (refund_tool) result rejected: result is empty")
    assert abort.status is RunStatus.FAILED
    assert abort.user_message == "Sorry, I could not get a usable result for this step: " + (
        "Refund order A-7."
    )


# -- properties over the whole table -----------------------------------------------------------


def _all_failures(time_left_s: float) -> list[Failure]:
    failures = [
        _model_failure(ModelUnavailable("503"), attempt=a, time_left_s=time_left_s) for a in (1, 2)
    ]
    failures += [
        _model_failure(ModelRateLimited("429", retry_after_s=0.1), time_left_s=time_left_s)
    ]
    for kind in ToolErrorKind:
        for spec in (SAFE, UNSAFE, _spec(fallback="other")):
            failures.append(_tool_failure(kind, spec=spec, time_left_s=time_left_s))
    failures += [_rejected(retryable=True, time_left_s=time_left_s)]
    return failures


@pytest.mark.parametrize("seed", range(20))
def test_no_retry_ever_waits_past_the_deadline(seed):
    time_left = 0.3
    for failure in _all_failures(time_left):
        action = _decide(failure, seed=seed)
        if isinstance(action, Retry):
            assert action.delay_s <= time_left


def test_user_messages_never_show_tool_names_or_internals():
    for failure in _all_failures(math.inf):
        for replans_used in (0, 2):
            for attempt in (1, 3):
                bounded = Failure(
                    **{
                        **{f: getattr(failure, f) for f in Failure.__dataclass_fields__},
                        "replans_used": replans_used,
                        "attempt": attempt,
                    }
                )
                action = _decide(bounded)
                if isinstance(action, Abort):
                    assert "refund_tool" not in action.user_message
                    assert "step 3" not in action.user_message
                    assert "Traceback" not in action.user_message
