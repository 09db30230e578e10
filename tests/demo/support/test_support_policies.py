from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.support.policies import PRINCIPALS, REFUND_CAP, make_policies, refund_cap
from bastion.gate.interface import Decision, PolicyInput, Stage
from bastion.messages import Principal
from bastion.router.interface import ToolSpec

BY_ID = {principal.id: principal for principal in PRINCIPALS}


async def decide(
    db: Path,
    tools: dict[str, ToolSpec],
    principal: Principal | str,
    tool: str,
    args: dict[str, Any],
    stage: Stage = "execute",
) -> list[Decision]:
    """Every denial the tool's policies give (an empty list: allowed)."""
    who = BY_ID[principal] if isinstance(principal, str) else principal
    policy_input = PolicyInput(principal=who, tool=tools[tool], args=args, stage=stage, run_id="r")
    decisions = [await policy(policy_input) for policy in make_policies(db).get(tool, [])]
    return [d for d in decisions if d is not None]


def test_principals_are_four_customers_and_a_lead() -> None:
    assert list(BY_ID) == ["c1", "c2", "c3", "c4", "lead"]
    for cid in ("c1", "c2", "c3", "c4"):
        assert BY_ID[cid].roles == {"customer"}
        assert BY_ID[cid].scopes == {"orders:read", "kb:read", "tickets:write", "memory:write"}
    assert BY_ID["lead"].roles == {"support_lead"}
    assert BY_ID["lead"].scopes == {
        "orders:read",
        "kb:read",
        "tickets:write",
        "memory:write",
        "refunds:write",
    }


def test_policies_guard_the_order_tools_only(db: Path) -> None:
    assert {name: len(ps) for name, ps in make_policies(db).items()} == {
        "lookup_order": 1,
        "track_shipment": 1,
        "issue_refund": 2,
    }


@pytest.mark.parametrize("tool", ["lookup_order", "track_shipment"])
@pytest.mark.parametrize("stage", ["plan", "execute"])
async def test_a_customer_may_read_their_own_orders(
    db: Path, tools: dict[str, ToolSpec], tool: str, stage: Stage
) -> None:
    assert await decide(db, tools, "c1", tool, {"order_id": "A1001"}, stage) == []
    assert await decide(db, tools, "c1", tool, {"order_id": "a1002"}, stage) == []


@pytest.mark.parametrize("tool", ["lookup_order", "track_shipment", "issue_refund"])
async def test_a_customer_may_not_touch_another_customers_order(
    db: Path, tools: dict[str, ToolSpec], tool: str
) -> None:
    args = {"order_id": "a1003", "amount": "1.00", "reason": "x"}
    assert await decide(db, tools, "c1", tool, args) == [
        Decision.deny("customer c1 may not access order A1003")
    ]


async def test_a_missing_order_is_denied_like_another_customers(
    db: Path, tools: dict[str, ToolSpec]
) -> None:
    # Same words as for an existing order: a customer cannot probe which ids exist.
    assert await decide(db, tools, "c2", "lookup_order", {"order_id": "A9999"}) == [
        Decision.deny("customer c2 may not access order A9999")
    ]


@pytest.mark.parametrize("role", ["support_lead", "agent"])
async def test_staff_may_see_any_order(db: Path, tools: dict[str, ToolSpec], role: str) -> None:
    staff = Principal(id="s1", roles=frozenset({role}))
    for order_id in ("A1001", "A1003", "A1008", "A9999"):
        assert await decide(db, tools, staff, "lookup_order", {"order_id": order_id}) == []


async def test_a_principal_without_a_known_role_is_denied(
    db: Path, tools: dict[str, ToolSpec]
) -> None:
    stranger = Principal(id="bot", roles=frozenset({"auditor"}))
    assert await decide(db, tools, stranger, "track_shipment", {"order_id": "A1001"}) == [
        Decision.deny("bot has no role that may access orders")
    ]


async def test_a_missing_or_mistyped_order_id_is_left_to_the_schema(
    db: Path, tools: dict[str, ToolSpec]
) -> None:
    assert await decide(db, tools, "c1", "lookup_order", {}) == []
    assert await decide(db, tools, "c1", "lookup_order", {"order_id": 1003}) == []


@pytest.mark.parametrize("amount", ["20.00", 200, "200.00", Decimal("199.99"), 0.5])
async def test_the_lead_may_refund_up_to_the_cap(
    db: Path, tools: dict[str, ToolSpec], amount: object
) -> None:
    args = {"order_id": "A1007", "amount": amount, "reason": "x"}
    assert await decide(db, tools, "lead", "issue_refund", args) == []


@pytest.mark.parametrize("amount", ["200.01", 250, 250.5])
async def test_a_refund_above_the_cap_needs_an_approval_naming_the_cap(
    db: Path, tools: dict[str, ToolSpec], amount: object
) -> None:
    args = {"order_id": "A1007", "amount": amount, "reason": "x"}
    (denial,) = await decide(db, tools, "lead", "issue_refund", args)
    assert not denial.allowed
    assert denial.needs_approval
    assert str(REFUND_CAP) in denial.reason
    assert f"asked for {Decimal(str(amount))}" in denial.reason


@pytest.mark.parametrize("amount", ["lots", "NaN", "Infinity", [1]])
async def test_a_refund_amount_that_is_not_a_number_is_denied(
    tools: dict[str, ToolSpec], amount: object
) -> None:
    policy_input = PolicyInput(
        principal=BY_ID["lead"],
        tool=tools["issue_refund"],
        args={"order_id": "A1007", "amount": amount},
        stage="plan",
        run_id="r",
    )
    decision = await refund_cap(policy_input)
    assert decision is not None
    assert not decision.allowed
    assert "is not a number" in decision.reason


async def test_the_cap_has_no_opinion_without_an_amount(tools: dict[str, ToolSpec]) -> None:
    policy_input = PolicyInput(
        principal=BY_ID["lead"], tool=tools["issue_refund"], args={}, stage="plan", run_id="r"
    )
    assert await refund_cap(policy_input) is None
