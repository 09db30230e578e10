import dataclasses
from decimal import Decimal

import pytest

from bastion.messages import (
    AgentRequest,
    PlanStep,
    ToolCall,
    ToolErrorKind,
    ToolOutcome,
)


def test_request_is_immutable_and_gets_a_run_id():
    request = AgentRequest(user_id="u", session_id="s", message="hi")
    assert request.run_id.startswith("run_")
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.message = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"user_id": " "}, "user_id"),
        ({"session_id": ""}, "session_id"),
        ({"message": "  "}, "message"),
        ({"message": "x" * 20_001}, "20,000"),
        ({"max_budget_usd": Decimal("-1")}, "max_budget_usd"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_request_rejects_bad_values(fields, problem):
    base = {"user_id": "u", "session_id": "s", "message": "hi"}
    with pytest.raises(ValueError, match=problem):
        AgentRequest(**(base | fields))


def test_outcome_invariants():
    assert ToolOutcome.success({"a": 1}).ok
    failed = ToolOutcome.failure(ToolErrorKind.TIMEOUT, "slow", transient=True)
    assert not failed.ok
    assert failed.transient
    with pytest.raises(ValueError, match="error_kind"):
        ToolOutcome(ok=False)
    with pytest.raises(ValueError, match="no error_kind"):
        ToolOutcome(ok=True, error_kind=ToolErrorKind.TIMEOUT)


def test_idempotency_key_is_stable_across_attempts():
    first = ToolCall(run_id="run_1", step_id=2, tool_name="t", args={}, attempt=1)
    second = dataclasses.replace(first, attempt=3)
    assert first.idempotency_key == second.idempotency_key == "run_1:2"


def test_plan_step_validation():
    with pytest.raises(ValueError, match="step_id"):
        PlanStep(step_id=-1, description="d", tool_name="t")
    with pytest.raises(ValueError, match="tool_name"):
        PlanStep(step_id=0, description="d", tool_name="")
