from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bastion.demo.support.answers import CAPABILITIES, compose_answer
from bastion.demo.support.tools import make_tools
from bastion.messages import (
    AgentRequest,
    PlanStep,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
)
from bastion.router.interface import ToolContext, ToolSpec

REQUEST = AgentRequest(user_id="c1", session_id="s", message="Where is my order A1001?")


def ok(step_id: int, tool: str, value: Any, **args: Any) -> StepRecord:
    # Results reach the composer as JSON (as persisted); a model instance must work too.
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") for v in value]
    return StepRecord(
        step=PlanStep(step_id=step_id, description="d", tool_name=tool, tool_args=args),
        status=StepStatus.SUCCESS,
        outcome=ToolOutcome.success(value),
    )


def not_ok(step_id: int, tool: str, status: StepStatus, **args: Any) -> StepRecord:
    kind = ToolErrorKind.DENIED if status is StepStatus.DENIED else ToolErrorKind.TOOL_ERROR
    outcome = (
        None
        if status is StepStatus.SKIPPED
        else ToolOutcome.failure(kind, "sqlite3.OperationalError: database is locked")
    )
    return StepRecord(
        step=PlanStep(step_id=step_id, description="d", tool_name=tool, tool_args=args),
        status=status,
        outcome=outcome,
    )


@pytest.fixture
def run(db: Path) -> Any:
    tools = {spec.name: spec for spec in make_tools(db)}

    def run(tool: str, principal: str = "lead", step_id: int = 1, **args: Any) -> Any:
        spec: ToolSpec = tools[tool]
        kwargs = spec.validate_args(args)
        if spec.context_param:
            from bastion.messages import Principal

            kwargs[spec.context_param] = ToolContext(
                run_id="r",
                step_id=step_id,
                attempt=1,
                principal=Principal(id=principal),
                idempotency_key=f"r:{step_id}",
            )
        return spec.fn(**kwargs)

    return run


def test_order_and_tracking_make_one_story(run: Any) -> None:
    records = [
        ok(1, "lookup_order", run("lookup_order", order_id="A1001"), order_id="A1001"),
        ok(2, "track_shipment", run("track_shipment", order_id="A1001"), order_id="A1001"),
    ]
    assert compose_answer(REQUEST, records) == (
        "Order A1001 is shipped (2 items, total 59.90 EUR), placed on 2026-01-08. "
        "It is with DHL, tracking JJD0099001234567, last seen in Leipzig; expected on 2026-01-14."
    )


def test_a_repeated_call_with_the_same_outcome_is_told_once(run: Any) -> None:
    order = run("lookup_order", order_id="A1002")
    records = [
        ok(0, "lookup_order", order, order_id="A1002"),
        ok(1, "lookup_order", order, order_id="A1002"),
        not_ok(2, "issue_refund", StepStatus.DENIED, order_id="A1002", amount="12.34"),
        not_ok(3, "issue_refund", StepStatus.DENIED, order_id="A1002", amount="12.34"),
    ]
    answer = compose_answer(REQUEST, records)
    assert answer.count("Order A1002 is delivered") == 1
    assert answer.count("Sorry, I am not allowed to") == 1
    assert "It is delivered" not in answer


def test_results_as_model_instances_are_worded_the_same(run: Any) -> None:
    value = run("lookup_order", order_id="A1001")
    record = StepRecord(
        step=PlanStep(step_id=1, description="d", tool_name="lookup_order"),
        status=StepStatus.SUCCESS,
        outcome=ToolOutcome.success(value),
    )
    assert compose_answer(REQUEST, [record]) == compose_answer(
        REQUEST, [ok(1, "lookup_order", value)]
    )


def test_tracking_on_its_own_names_the_order(run: Any) -> None:
    answer = compose_answer(
        REQUEST, [ok(1, "track_shipment", run("track_shipment", order_id="A1007"))]
    )
    assert answer == (
        "Order A1007 is out for delivery with GLS, tracking GLS6280019462, last seen in Hamburg; "
        "expected on 2026-01-12."
    )


def test_a_delivered_parcel_and_one_not_shipped(run: Any) -> None:
    records = [
        ok(1, "track_shipment", run("track_shipment", order_id="A1002")),
        ok(2, "track_shipment", run("track_shipment", order_id="A1003")),
    ]
    assert compose_answer(REQUEST, records) == (
        "Order A1002 was delivered by DHL, tracking JJD0099007654321, in Berlin. "
        "Order A1003 has not shipped yet (its status is paid)."
    )


def test_refunds_already_made_are_mentioned_with_the_order(run: Any) -> None:
    run("issue_refund", order_id="A1003", amount="20.00", reason="x")
    answer = compose_answer(REQUEST, [ok(1, "lookup_order", run("lookup_order", order_id="A1003"))])
    assert answer == (
        "Order A1003 is paid (2 items, total 124.50 EUR), placed on 2026-01-10; "
        "20.00 EUR of it has been refunded."
    )


def test_a_single_item_is_not_plural(run: Any) -> None:
    answer = compose_answer(REQUEST, [ok(1, "lookup_order", run("lookup_order", order_id="A1005"))])
    assert "(1 item, total 27.50 EUR)" in answer


def test_help_articles(run: Any) -> None:
    answer = compose_answer(REQUEST, [ok(1, "search_kb", run("search_kb", query="damaged item"))])
    assert answer.startswith(
        "From our help centre, “Damaged or broken items”: If an item arrives damaged or broken, "
    )
    assert answer.endswith(" Related: “Return policy”.")
    nothing = compose_answer(REQUEST, [ok(1, "search_kb", run("search_kb", query="xyzzy"))])
    assert nothing == "I could not find a help article about that."


def test_refund_and_ticket_are_confirmed_from_their_receipts(run: Any) -> None:
    refund = run("issue_refund", order_id="A1003", amount="20.00", reason="x")
    ticket = run("escalate_to_human", step_id=2, summary="x", priority="high")
    answer = compose_answer(
        REQUEST, [ok(1, "issue_refund", refund), ok(2, "escalate_to_human", ticket)]
    )
    assert answer == (
        "I have refunded 20.00 EUR on order A1003 (refund R-00001); the money will be back on "
        "the original payment method within 5 to 10 working days. I have passed your request to "
        "our support team (ticket T-00001, marked urgent); you can expect an answer within 2 "
        "working hours."
    )


@pytest.mark.parametrize(
    ("tool", "args", "phrase"),
    [
        ("lookup_order", {"order_id": "a1003"}, "look up order A1003"),
        ("track_shipment", {"order_id": "A1003"}, "track order A1003"),
        ("search_kb", {"query": "x"}, "search our help centre"),
        ("issue_refund", {"order_id": "A1007", "amount": "250"}, "issue a refund on order A1007"),
        ("escalate_to_human", {"summary": "x"}, "pass your request to our support team"),
        ("lookup_order", {}, "look up your order"),
    ],
)
def test_denied_failed_and_skipped_steps_are_named_without_internals(
    tool: str, args: dict[str, Any], phrase: str
) -> None:
    denied = compose_answer(REQUEST, [not_ok(1, tool, StepStatus.DENIED, **args)])
    failed = compose_answer(REQUEST, [not_ok(1, tool, StepStatus.FAILED, **args)])
    skipped = compose_answer(REQUEST, [not_ok(1, tool, StepStatus.SKIPPED, **args)])
    assert denied == f"Sorry, I am not allowed to {phrase} for you."
    assert failed == f"Sorry, I could not {phrase}."
    assert skipped == f"I did not get to {phrase}."
    for answer in (denied, failed, skipped):
        assert "sqlite" not in answer.lower()
        assert "locked" not in answer


def test_a_failed_refund_or_escalation_is_never_claimed(run: Any) -> None:
    records = [
        not_ok(1, "issue_refund", StepStatus.FAILED, order_id="A1003"),
        not_ok(2, "escalate_to_human", StepStatus.DENIED),
    ]
    answer = compose_answer(REQUEST, records)
    assert "refunded" not in answer
    assert "ticket" not in answer
    assert answer == (
        "Sorry, I could not issue a refund on order A1003. "
        "Sorry, I am not allowed to pass your request to our support team for you."
    )


def test_a_success_whose_result_is_not_the_tools_is_treated_as_a_failure() -> None:
    records = [
        ok(1, "issue_refund", {"refund_id": "R-1", "order_id": "A1003"}, order_id="A1003"),
        ok(2, "escalate_to_human", "done"),
    ]
    assert compose_answer(REQUEST, records) == (
        "Sorry, I could not issue a refund on order A1003. "
        "Sorry, I could not pass your request to our support team."
    )


def test_a_success_without_an_outcome_is_not_claimed() -> None:
    record = StepRecord(
        step=PlanStep(step_id=1, description="d", tool_name="issue_refund"),
        status=StepStatus.SUCCESS,
    )
    assert compose_answer(REQUEST, [record]) == "Sorry, I could not issue a refund on your order."


def test_only_the_last_record_of_a_retried_step_counts(run: Any) -> None:
    value = run("lookup_order", order_id="A1001")
    records = [
        not_ok(1, "lookup_order", StepStatus.FAILED, order_id="A1001"),
        ok(1, "lookup_order", value, order_id="A1001"),
    ]
    answer = compose_answer(REQUEST, records)
    assert answer.startswith("Order A1001 is shipped")
    assert "could not" not in answer


def test_a_fallback_tool_is_worded_as_the_tool_that_ran(run: Any) -> None:
    record = StepRecord(
        step=PlanStep(step_id=1, description="d", tool_name="track_shipment"),
        status=StepStatus.SUCCESS,
        outcome=ToolOutcome.success(run("lookup_order", order_id="A1002").model_dump(mode="json")),
        tool_name="lookup_order",
    )
    assert compose_answer(REQUEST, [record]).startswith("Order A1002 is delivered")


def test_a_failure_between_steps_about_one_order_breaks_the_it(run: Any) -> None:
    records = [
        ok(1, "lookup_order", run("lookup_order", order_id="A1001"), order_id="A1001"),
        not_ok(2, "search_kb", StepStatus.FAILED),
        ok(3, "track_shipment", run("track_shipment", order_id="A1001"), order_id="A1001"),
    ]
    assert "Order A1001 is with DHL" in compose_answer(REQUEST, records)


def test_tools_it_does_not_know_are_named_plainly() -> None:
    records = [ok(1, "weather", {"t": 3}), not_ok(2, "weather", StepStatus.FAILED)]
    assert compose_answer(REQUEST, records) == "I ran weather. Sorry, I could not run weather."


def test_an_empty_plan_says_what_the_assistant_can_do() -> None:
    answer = compose_answer(REQUEST, [])
    assert answer == CAPABILITIES
    assert "orders" in answer
    assert "help centre" in answer
    assert "support team" in answer


def test_a_remembered_fact_is_confirmed_in_the_answer_and_a_failure_said_plainly() -> None:
    noted = ok(1, "remember", {"fact_id": 3, "fact": "Prefers email"}, fact="Prefers email")
    assert compose_answer(REQUEST, [noted]) == (
        "I have noted this for your next conversations: “Prefers email”."
    )
    failed = not_ok(1, "remember", StepStatus.FAILED, fact="Prefers email")
    assert compose_answer(REQUEST, [failed]) == (
        "Sorry, I could not note that for your next conversations."
    )


def test_a_ticket_with_a_contact_channel_says_how_the_team_will_answer() -> None:
    ticket = {
        "ticket_id": "T-00004",
        "priority": "normal",
        "expected_response": "within 1 working day",
        "contact": "email",
    }
    assert compose_answer(REQUEST, [ok(1, "escalate_to_human", ticket, summary="x")]) == (
        "I have passed your request to our support team (ticket T-00004); you can expect an "
        "answer within 1 working day, by email."
    )
