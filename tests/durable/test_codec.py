import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bastion import errors
from bastion.durable import codec
from bastion.messages import AgentRequest, Retry


def test_run_input_round_trip_keeps_decimals_and_deadline():
    request = AgentRequest(user_id="u", session_id="s", message="hi", max_budget_usd=Decimal("0.1"))
    deadline = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    again, when, principal = codec.decode_run_input(codec.encode_run_input(request, deadline))
    assert again == request
    assert when == deadline
    assert principal is None


def test_run_input_never_carries_an_api_key():
    request = AgentRequest(user_id="u", session_id="s", message="hi", api_key="sk-secret-123")
    encoded = codec.encode_run_input(request, datetime(2026, 1, 1, tzinfo=UTC))
    assert "sk-secret-123" not in str(encoded)


@pytest.mark.parametrize(
    "error",
    [
        errors.ModelRateLimited("slow", model="m", retry_after_s=2.5),
        errors.ModelUnavailable("down", model="m"),
        errors.PlanError("bad plan"),
        errors.CircuitOpen("model:x", 12.0),
        errors.NotAuthenticated("who"),
        errors.UnknownTool("nope", tool_name="t"),
    ],
)
def test_errors_come_back_as_their_own_class_with_their_data(error):
    back = codec.decode_error(codec.encode_error(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    for attr in ("retry_after_s", "model", "tool_name", "name", "retry_at"):
        assert getattr(back, attr, None) == getattr(error, attr, None)


def test_unknown_error_type_decodes_to_the_root():
    back = codec.decode_error({"error": {"type": "Nonexistent", "message": "x"}})
    assert type(back) is errors.BastionError


def test_actions_round_trip():
    action = Retry(delay_s=1.5, reason="429")
    assert codec.ACTION.validate_python(codec.dump(codec.ACTION, action)) == action


def test_serializer_writes_json_and_refuses_objects():
    serializer = codec.JsonSerializer()
    assert serializer.deserialize(serializer.serialize({"a": [1, "b"]})) == {"a": [1, "b"]}
    with pytest.raises(TypeError, match="JSON only"):
        serializer.serialize({"x": object()})
    written = serializer.serialize(ValueError("boom"))
    assert json.loads(written) == {"exception": "ValueError", "message": "boom"}
    stored = serializer.deserialize(written)
    assert isinstance(stored, codec.WorkflowError)
    assert (stored.kind, str(stored)) == ("ValueError", "ValueError: boom")
