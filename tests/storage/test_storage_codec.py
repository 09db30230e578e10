import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from bastion.messages import (
    AgentPlan,
    PlanStep,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
    Verdict,
)
from bastion.storage.codec import (
    decode_plan,
    decode_step_record,
    encode_json_object,
    encode_plan,
    encode_step_record,
)

_STEP = PlanStep(
    step_id=3,
    description="refund the order",
    tool_name="refund",
    tool_args={"order_id": "A-1", "lines": [{"sku": "x", "qty": 2}]},
    expect={"keys": ["refund_id"]},
    status=StepStatus.FAILED,
    result=None,
    error="over the limit",
    cost_usd=Decimal("0.000000075"),
)


def test_a_plan_survives_json_text_exactly():
    plan = AgentPlan(steps=(_STEP,), reasoning="refund, then tell", revision=2, model="m")
    decoded = decode_plan(json.loads(json.dumps(encode_plan(plan))))
    assert decoded == plan
    assert decoded.steps[0].status is StepStatus.FAILED
    assert decoded.steps[0].cost_usd.as_tuple() == Decimal("0.000000075").as_tuple()


def test_money_is_encoded_as_a_string_not_a_float():
    encoded = encode_plan(AgentPlan(steps=(_STEP,), reasoning="r"))
    assert encoded["steps"][0]["cost_usd"] == "7.5E-8"


@pytest.mark.parametrize(
    "record",
    [
        StepRecord(
            step=_STEP,
            status=StepStatus.FAILED,
            outcome=ToolOutcome.failure(
                ToolErrorKind.TRANSIENT, "503", duration_s=0.25, transient=True
            ),
            verdict=Verdict(passed=False, reason="no refund id", retryable=True),
            attempts=3,
            plan_revision=1,
            tool_name="refund_v2",
        ),
        StepRecord(step=_STEP, status=StepStatus.SUCCESS, outcome=ToolOutcome.success({"a": [1]})),
        StepRecord(step=_STEP, status=StepStatus.PENDING),
    ],
    ids=["failed-with-verdict", "succeeded", "bare"],
)
def test_a_step_record_survives_json_text_exactly(record):
    decoded = decode_step_record(json.loads(json.dumps(encode_step_record(record))))
    assert decoded == record
    if record.outcome is not None and record.outcome.error_kind is not None:
        assert decoded.outcome is not None
        assert decoded.outcome.error_kind is record.outcome.error_kind


def test_a_corrupted_record_fails_loudly():
    encoded = encode_step_record(
        StepRecord(step=_STEP, status=StepStatus.FAILED, outcome=ToolOutcome.success(1))
    )
    encoded["outcome"]["ok"] = False  # a failed outcome with no error_kind is impossible
    with pytest.raises(ValidationError, match="error_kind"):
        decode_step_record(encoded)


def test_an_unknown_status_fails_loudly():
    encoded = encode_plan(AgentPlan(steps=(_STEP,), reasoning="r"))
    encoded["steps"][0]["status"] = "exploded"
    with pytest.raises(ValidationError):
        decode_plan(encoded)


def test_free_form_json_keeps_json_and_turns_the_rest_into_its_json_form():
    at = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    encoded = encode_json_object(
        {
            "n": 1,
            "f": 0.5,
            "s": "x",
            "none": None,
            "nested": {"l": [True]},
            "money": Decimal("1.10"),
        }
        | {"at": at, "utc": datetime(2026, 1, 1, tzinfo=UTC), "tuple": (1, 2)}
    )
    assert encoded == {
        "n": 1,
        "f": 0.5,
        "s": "x",
        "none": None,
        "nested": {"l": [True]},
        "money": "1.10",
        "at": "2026-05-01T12:00:00+02:00",
        "utc": "2026-01-01T00:00:00Z",
        "tuple": [1, 2],
    }
    assert json.loads(json.dumps(encoded)) == encoded
