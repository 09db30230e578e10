"""The final answer's policy checks and the model judge, through `ChecksEvaluator`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.errors import ModelUnavailable
from bastion.evaluator import DEFAULT_CLAIMS, ChecksEvaluator, ClaimRule, ModelJudge
from bastion.evaluator.answer import check_claims
from bastion.evaluator.judge import parse_verdict
from bastion.messages import (
    AgentRequest,
    PlanStep,
    Principal,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
)
from bastion.models.scripted import ScriptedModel

REQUEST = AgentRequest(user_id="c1", session_id="s", message="Please refund order A1002")
C1 = Principal(id="c1")
#: No call expected: a model that fails the test if the evaluator asks it anything.
NO_CALLS = ScriptedModel([])


def _record(tool: str, value: Any = None, *, ok: bool = True) -> StepRecord:
    step = PlanStep(step_id=0, description=f"call {tool}", tool_name=tool)
    if ok:
        return StepRecord(step=step, status=StepStatus.SUCCESS, outcome=ToolOutcome.success(value))
    outcome = ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, "refused")
    return StepRecord(step=step, status=StepStatus.FAILED, outcome=outcome)


async def _review(answer: str, records: list[StepRecord], **options: Any) -> Any:
    evaluator = ChecksEvaluator(**options)
    return await evaluator.evaluate_answer(REQUEST, C1, records, answer, model=NO_CALLS)


REFUND_RECEIPT = {"refund_id": "R-00001", "order_id": "A1002", "amount": "20.00"}


@pytest.mark.parametrize(
    "answer",
    [
        "I have refunded 20.00 EUR on order A1002.",
        "Good news: we've issued a refund for your order.",
        "Your refund has been issued and will arrive in 5 days.",
        "I refunded the order.",
    ],
)
async def test_a_refund_claimed_with_no_refund_step_is_caught(answer):
    lookup = _record("lookup_order", {"order_id": "A1002", "customer_id": "c1"})
    review = await _review(answer, [lookup])
    assert not review.verdict.passed
    assert "claims a refund" in review.verdict.reason
    # A refund step that failed backs nothing either.
    review = await _review(answer, [lookup, _record("issue_refund", ok=False)])
    assert not review.verdict.passed


async def test_a_refund_claim_backed_by_a_successful_refund_step_passes():
    review = await _review("I have refunded 20.00 EUR.", [_record("issue_refund", REFUND_RECEIPT)])
    assert review.verdict.passed
    assert review.problems == ()


@pytest.mark.parametrize(
    "answer",
    [
        "Order A1002 is delivered; 20.00 EUR of it has been refunded.",
        "A pro-rata refund comes to 20.00 EUR; nothing has been refunded yet.",
        "I have not refunded anything: a person will review it.",
        "Refunds take 5 to 10 working days.",
    ],
)
async def test_past_facts_quotes_and_negations_are_not_claims(answer):
    records = [_record("prorata_refund", {"refund": "20.00"})]
    assert (await _review(answer, records)).verdict.passed


def test_a_computing_tool_does_not_back_a_refund_claim():
    problems = check_claims(
        "I have refunded 20.00.", [_record("prorata_refund", {"refund": "20.00"})], DEFAULT_CLAIMS
    )
    assert problems
    assert "refund" in problems[0]


async def test_an_escalation_claim_needs_an_escalation_step():
    answer = "I have passed your request to our support team (ticket T-00001)."
    assert not (await _review(answer, [])).verdict.passed
    ticket = _record("escalate_to_human", {"ticket_id": "T-00001"})
    assert (await _review(answer, [ticket])).verdict.passed


async def test_an_app_can_add_its_own_claims():
    rule = ClaimRule(name="cancellation", claim=r"\bI have cancelled\b", tools="cancel_order")
    review = await _review("I have cancelled order A1002.", [], claims=[rule])
    assert "claims a cancellation" in review.verdict.reason


async def test_a_secret_in_the_answer_is_noted_for_redaction_not_withheld():
    review = await _review("Your key is sk-abcdefghijklmnopqrstuvwx1234", [])
    assert review.verdict.passed  # the redactor hides it on the way out
    assert review.notes == (
        "the answer contains a secret (a key, token, password or card number): redacted from "
        "the answer",
    )
    clean = await _review("Your order A1001 has shipped.", [])
    assert clean.notes == ()


async def test_another_users_data_in_the_answer_is_caught_unless_the_caller_is_staff():
    theirs = _record("lookup_order", {"order_id": "A1003", "customer_id": "c2", "total": "9.00"})
    answer = "Order A1003 is delivered."
    review = await _review(answer, [theirs])
    assert not review.verdict.passed
    assert "another user ('c2')" in review.verdict.reason
    staff = await _review(answer, [theirs], may_see_others=lambda p: p.id == "c1")
    assert staff.verdict.passed
    # Their data fetched but not repeated in the answer is no leak.
    assert (await _review("I could not help with that.", [theirs])).verdict.passed
    mine = _record("lookup_order", {"order_id": "A1002", "customer_id": "c1"})
    assert (await _review("Order A1002 is delivered.", [mine])).verdict.passed


async def test_the_judge_is_asked_and_its_verdict_recorded_but_blocks_only_when_told():
    fail = json.dumps({"verdict": "fail", "reason": "does not answer the question"})
    model = ScriptedModel([fail, fail])
    evaluator = ChecksEvaluator(judge=ModelJudge())
    review = await evaluator.evaluate_answer(REQUEST, C1, [], "Hello.", model=model)
    assert review.judged
    assert review.judge_passed is False
    assert review.judge_reason == "does not answer the question"
    assert review.verdict.passed  # recorded, not blocking
    request = model.calls[0]
    assert request.json_schema is not None
    assert "Hello." in request.messages[-1].content
    blocking = ChecksEvaluator(judge=ModelJudge(), judge_blocks=True)
    review = await blocking.evaluate_answer(REQUEST, C1, [], "Hello.", model=model)
    assert not review.verdict.passed
    assert "judge failed" in review.verdict.reason
    model.assert_consumed()


async def test_a_judge_that_fails_gives_no_verdict_and_does_not_block():
    evaluator = ChecksEvaluator(judge=ModelJudge(), judge_blocks=True)
    model = ScriptedModel([ModelUnavailable("down")])
    review = await evaluator.evaluate_answer(REQUEST, C1, [], "Hello.", model=model)
    assert review.verdict.passed
    assert review.judge_passed is None
    assert "unavailable" in (review.judge_reason or "")


async def test_the_judge_is_not_asked_when_a_policy_check_already_failed():
    evaluator = ChecksEvaluator(judge=ModelJudge())
    review = await evaluator.evaluate_answer(REQUEST, C1, [], "I have refunded it.", model=NO_CALLS)
    assert not review.verdict.passed
    assert not review.judged


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ('{"verdict": "pass", "reason": "fine"}', True),
        ('{"verdict": "fail", "reason": "wrong"}', False),
        ("not json", None),
        ('{"verdict": "maybe", "reason": "?"}', None),
        ('["pass"]', None),
    ],
)
def test_parse_verdict(text, passed):
    assert parse_verdict(text).passed is passed
