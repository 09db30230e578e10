"""``prorata_refund``: the demo's refund worked out with run_python in the os sandbox."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.support.answers import compose_answer
from bastion.demo.support.tools import make_prorata_tools, make_tools
from bastion.messages import AgentRequest, PlanStep, StepRecord, StepStatus, ToolOutcome
from bastion.router.interface import ToolSpec
from bastion.sandbox import capabilities
from bastion.sandbox.capabilities import Capabilities, TierSupport, machine_capabilities


@pytest.fixture
def prorata(db: Path) -> ToolSpec:
    support = machine_capabilities().os
    if not support.available:
        reason = f"the os tier is unavailable here: {'; '.join(support.reasons)}"
        if os.environ.get("BASTION_REQUIRE_SANDBOX") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    (spec,) = make_prorata_tools(db)
    return spec


async def quote(spec: ToolSpec, **args: Any) -> Any:
    return await spec.fn(**spec.validate_args(args))


async def test_the_returned_items_share_of_what_was_paid(prorata: ToolSpec) -> None:
    result = await quote(prorata, order_id="a1003", returned=["Coffee scale"], paid="112.05")

    assert result.model_dump() == {
        "order_id": "A1003",
        "returned": ["Coffee scale"],
        "paid": "112.05",
        "share_percent": "36.55",
        "refund": "40.95",
        "currency": "EUR",
    }
    # 45.50 of 124.50, of 112.05, to the cent: the sandbox computed what Decimal computes here.
    expected = (Decimal("112.05") * Decimal("45.50") / Decimal("124.50")).quantize(Decimal("0.01"))
    assert Decimal(result.refund) == expected


async def test_items_are_named_by_name_or_sku(prorata: ToolSpec) -> None:
    result = await quote(
        prorata, order_id="A1003", returned=["scl-01", "Gooseneck kettle"], paid="100.00"
    )

    assert result.returned == ["Coffee scale", "Gooseneck kettle"]
    assert result.refund == "100.00"


async def test_bad_requests_are_refused_in_words_for_the_planner(prorata: ToolSpec) -> None:
    with pytest.raises(LookupError, match="no item 'toaster'; its items are: Gooseneck kettle"):
        await quote(prorata, order_id="A1003", returned=["toaster"], paid="10.00")
    with pytest.raises(ValueError, match=r"totals 124\.50; what was paid must be"):
        await quote(prorata, order_id="A1003", returned=["Coffee scale"], paid="500.00")
    with pytest.raises(LookupError, match="No order A9999"):
        await quote(prorata, order_id="A9999", returned=["x"], paid="1.00")


def test_only_refund_issuers_may_use_it(prorata: ToolSpec) -> None:
    assert prorata.required_permissions == frozenset({"refunds:write"})
    assert prorata.is_async
    assert not prorata.side_effects


def test_without_the_os_tier_the_demo_runs_without_it(
    db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = Capabilities(
        inline=TierSupport(tier="inline", available=True),
        process=TierSupport(tier="process", available=False, reasons=("no cgroup",)),
        os=TierSupport(tier="os", available=False, reasons=("bubblewrap is not installed",)),
    )
    monkeypatch.setattr(capabilities, "machine_capabilities", lambda: missing)

    with caplog.at_level(logging.WARNING):
        names = [spec.name for spec in make_tools(db)]

    assert "prorata_refund" not in names
    assert "issue_refund" in names
    assert "runs without prorata_refund" in caplog.text
    assert "bubblewrap is not installed" in caplog.text


def test_the_answer_says_what_it_comes_to_and_that_nothing_was_paid() -> None:
    step = PlanStep(
        step_id=0,
        description="Work it out",
        tool_name="prorata_refund",
        tool_args={"order_id": "A1003"},
    )
    value = {
        "order_id": "A1003",
        "returned": ["Coffee scale"],
        "paid": "112.05",
        "share_percent": "36.55",
        "refund": "40.95",
        "currency": "EUR",
    }
    record = StepRecord(step=step, status=StepStatus.SUCCESS, outcome=ToolOutcome.success(value))
    request = AgentRequest(user_id="lead", session_id="s", message="pro rata")

    assert compose_answer(request, [record]) == (
        "For the Coffee scale returned from order A1003, a pro-rata refund comes to 40.95 EUR "
        "(36.55% of the 112.05 EUR paid); nothing has been refunded yet."
    )
    failed = StepRecord(step=step, status=StepStatus.FAILED, outcome=None)
    assert compose_answer(request, [failed]) == (
        "Sorry, I could not work out a pro-rata refund on order A1003."
    )
