from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from bastion.evaluator import ChecksEvaluator
from bastion.messages import PlanStep, ToolErrorKind, ToolOutcome, Verdict
from bastion.router.interface import ToolSpec


class Args(BaseModel):
    order_id: str


class Status(BaseModel):
    status: str
    eta_days: int


def _spec(return_adapter: TypeAdapter[Any] | None = None) -> ToolSpec:
    return ToolSpec(
        name="track",
        description="Track an order.",
        fn=lambda **_: None,
        args_model=Args,
        args_schema=Args.model_json_schema(),
        is_async=False,
        return_adapter=return_adapter,
    )


def _step(**expect: Any) -> PlanStep:
    return PlanStep(step_id=0, description="track it", tool_name="track", expect=expect)


@pytest.mark.parametrize("transient", [True, False])
async def test_a_failed_outcome_fails_retryable_when_transient(transient):
    outcome = ToolOutcome.failure(ToolErrorKind.TIMEOUT, "timed out after 5s", transient=transient)

    verdict = await ChecksEvaluator().evaluate(_step(), _spec(), outcome)

    assert verdict == Verdict(passed=False, reason="timed out after 5s", retryable=transient)


async def test_a_failed_outcome_without_text_names_the_tool_and_kind():
    outcome = ToolOutcome(ok=False, error_kind=ToolErrorKind.CRASHED)

    verdict = await ChecksEvaluator().evaluate(_step(), _spec(), outcome)

    assert verdict.reason == "'track' failed (crashed)"
    assert not verdict.passed


async def test_a_value_of_the_declared_type_passes():
    outcome = ToolOutcome.success({"status": "shipped", "eta_days": "2"})

    verdict = await ChecksEvaluator().evaluate(_step(), _spec(TypeAdapter(Status)), outcome)

    assert verdict == Verdict.ok()


async def test_a_value_of_another_type_fails_not_retryable_naming_the_field():
    outcome = ToolOutcome.success({"status": "shipped", "eta_days": "soon"})

    verdict = await ChecksEvaluator().evaluate(_step(), _spec(TypeAdapter(Status)), outcome)

    assert not verdict.passed
    assert not verdict.retryable
    assert "eta_days: Input should be a valid integer" in verdict.reason


async def test_without_a_declared_type_any_value_passes():
    verdict = await ChecksEvaluator().evaluate(_step(), _spec(), ToolOutcome.success(object()))

    assert verdict.passed


async def test_expectations_are_checked():
    evaluator = ChecksEvaluator()
    outcome = ToolOutcome.success({"status": "lost", "eta_days": 0})

    passing = await evaluator.evaluate(_step(keys=["status"]), _spec(), outcome)
    failing = await evaluator.evaluate(_step(equals={"status": "shipped"}), _spec(), outcome)

    assert passing.passed
    assert failing == Verdict(
        passed=False, reason='result[\'status\'] is "lost", expected "shipped"', retryable=False
    )


async def test_an_unknown_expectation_fails_rather_than_passing_silently():
    outcome = ToolOutcome.success({"status": "shipped"})

    verdict = await ChecksEvaluator().evaluate(_step(looks_right=True), _spec(), outcome)

    assert not verdict.passed
    assert "unknown expectation 'looks_right'" in verdict.reason


async def test_type_and_expectation_problems_are_reported_together():
    outcome = ToolOutcome.success({"status": "shipped"})

    verdict = await ChecksEvaluator().evaluate(
        _step(keys=["carrier"]), _spec(TypeAdapter(Status)), outcome
    )

    assert "eta_days: Field required" in verdict.reason
    assert "result lacks key(s) 'carrier'" in verdict.reason


# -- result shapes: empty and error-shaped results -------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"error": "order service said no"},
        {"ok": False, "detail": "x"},
        {"success": False},
        {"status": "failed"},
        {"status": "ERROR"},
    ],
)
async def test_an_error_shaped_result_fails(value):
    verdict = await ChecksEvaluator().evaluate(
        PlanStep(step_id=0, description="d", tool_name="t"),
        _shape_spec(),
        ToolOutcome.success(value),
    )
    assert not verdict.passed
    assert not verdict.retryable
    assert "'t'" in verdict.reason


@pytest.mark.parametrize("value", [None, "", "   "])
async def test_an_empty_result_of_a_read_fails_but_not_of_an_action(value):
    step = PlanStep(step_id=0, description="d", tool_name="t")
    read = await ChecksEvaluator().evaluate(step, _shape_spec(), ToolOutcome.success(value))
    assert not read.passed
    assert "empty" in read.reason
    action = _shape_spec(side_effects=True)
    assert (await ChecksEvaluator().evaluate(step, action, ToolOutcome.success(value))).passed
    allowed = PlanStep(step_id=0, description="d", tool_name="t", expect={"non_empty": False})
    outcome = ToolOutcome.success(value)
    assert (await ChecksEvaluator().evaluate(allowed, _shape_spec(), outcome)).passed


@pytest.mark.parametrize("value", [[], {}, {"status": "shipped"}, {"error": None}, 0, False])
async def test_empty_collections_and_ordinary_statuses_pass(value):
    step = PlanStep(step_id=0, description="d", tool_name="t")
    outcome = ToolOutcome.success(value)
    assert (await ChecksEvaluator().evaluate(step, _shape_spec(), outcome)).passed


def _shape_spec(*, side_effects: bool = False) -> ToolSpec:
    """A tool named "t" with no declared return type."""
    return ToolSpec(
        name="t",
        description="A tool.",
        fn=lambda **_: None,
        args_model=Args,
        args_schema=Args.model_json_schema(),
        is_async=False,
        side_effects=side_effects,
        idempotent=side_effects,
    )
