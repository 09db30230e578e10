"""The per-run retry cap and the process-wide retry budget, as the Recovery Handler applies them."""

from __future__ import annotations

import random

from bastion.errors import ModelUnavailable
from bastion.messages import Abort, PlanStep, Replan, Retry, RunStatus, ToolErrorKind, ToolOutcome
from bastion.messages import Verdict as StepVerdict
from bastion.recovery.default import PolicyRecovery
from bastion.recovery.interface import Failure
from bastion.resilience.retry_budget import RetryBudget
from bastion.router.registry import make_tool
from bastion.settings import RecoverySettings
from bastion.testing.clock import FakeClock

SETTINGS = RecoverySettings(max_attempts=3, max_run_retries=2, retry_budget_min_per_s=0)
STEP = PlanStep(step_id=1, description="Look up order 7.", tool_name="lookup")


def model_failure(**kwargs: object) -> Failure:
    error = ModelUnavailable("503")
    return Failure(reason="503", error=error, **kwargs)  # type: ignore[arg-type]


async def test_the_per_run_cap_stops_retries_of_model_calls() -> None:
    recovery = PolicyRecovery(settings=SETTINGS, rng=random.Random(0))

    assert isinstance(await recovery.decide(model_failure(retries_used=1)), Retry)
    action = await recovery.decide(model_failure(retries_used=2))

    assert isinstance(action, Abort)
    assert action.status is RunStatus.FAILED
    assert "2 retries are used up" in action.reason


def lookup(order_id: int) -> dict[str, int]:
    """Look an order up."""
    return {"order_id": order_id}


async def test_the_per_run_cap_stops_retries_of_steps() -> None:
    recovery = PolicyRecovery(settings=SETTINGS, rng=random.Random(0))
    outcome = ToolOutcome.failure(ToolErrorKind.TIMEOUT, "slow", transient=True)

    def failure(retries_used: int) -> Failure:
        return Failure(
            reason="slow",
            step=STEP,
            spec=make_tool(lookup),
            outcome=outcome,
            verdict=StepVerdict(passed=False, reason="slow"),
            retries_used=retries_used,
        )

    assert isinstance(await recovery.decide(failure(1)), Retry)
    assert isinstance(await recovery.decide(failure(2)), Replan)


async def test_the_budget_stops_a_retry_storm_over_1000_failing_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, clock=clock, max_tokens=10)
    recovery = PolicyRecovery(
        settings=RecoverySettings(max_attempts=3, max_run_retries=100),
        rng=random.Random(1),
        budget=budget,
    )
    calls = retries = 0
    for _ in range(1000):
        attempt = 1
        while True:
            budget.record_call()  # what the model wrapper does per call
            calls += 1
            action = await recovery.decide(model_failure(attempt=attempt))
            if not isinstance(action, Retry):
                assert "retry budget spent" in action.reason or "failed 3 time(s)" in action.reason
                break
            retries += 1
            attempt += 1
            clock.advance(0.01)

    assert retries <= 0.1 * calls
    assert retries >= 0.1 * calls - 10  # it does allow its share: a budget, not a ban
    assert budget.retries == retries
    assert budget.refused > 0


async def test_a_spent_budget_aborts_a_model_retry_saying_so() -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=0.0, clock=FakeClock())
    recovery = PolicyRecovery(settings=SETTINGS, rng=random.Random(0), budget=budget)

    action = await recovery.decide(model_failure())

    assert isinstance(action, Abort)
    assert "retry budget spent" in action.reason
    assert action.user_message == ModelUnavailable.user_message
