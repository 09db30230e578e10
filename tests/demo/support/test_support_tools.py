from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bastion.demo.support.data import connect
from bastion.demo.support.results import (
    KbHit,
    OrderDetails,
    RefundReceipt,
    ShipmentStatus,
    TicketReceipt,
)
from bastion.demo.support.tools import REFUND_ARRIVES, RESPONSE_TIMES
from bastion.errors import InvalidToolArgs
from bastion.router.interface import ToolContext, ToolSpec
from bastion.testing.clock import FakeClock

MakeContext = Callable[..., ToolContext]


def call(spec: ToolSpec, ctx: Any = None, **args: Any) -> Any:
    """Validate `args` as the runtime does, inject the context, and call the tool."""
    kwargs = spec.validate_args(args)
    if spec.context_param is not None:
        kwargs[spec.context_param] = ctx
    return spec.fn(**kwargs)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with connect(db) as conn:
        return [tuple(row) for row in conn.execute(sql)]


def test_the_five_tools_declare_their_permissions_and_effects(tools: dict[str, ToolSpec]) -> None:
    # prorata_refund (when the os tier is here) is covered by test_support_prorata.py.
    tools = {name: spec for name, spec in tools.items() if name != "prorata_refund"}
    assert list(tools) == [
        "lookup_order",
        "track_shipment",
        "search_kb",
        "issue_refund",
        "escalate_to_human",
    ]
    assert {name: set(spec.required_permissions) for name, spec in tools.items()} == {
        "lookup_order": {"orders:read"},
        "track_shipment": {"orders:read"},
        "search_kb": {"kb:read"},
        "issue_refund": {"refunds:write"},
        "escalate_to_human": {"tickets:write"},
    }
    writers = {name for name, spec in tools.items() if spec.side_effects}
    assert writers == {"issue_refund", "escalate_to_human"}
    assert all(tools[name].idempotent for name in writers)
    assert {name for name, spec in tools.items() if spec.context_param} == writers
    assert all(not spec.is_async and spec.return_adapter is not None for spec in tools.values())


def test_args_are_described_for_the_model_and_the_context_is_hidden(
    tools: dict[str, ToolSpec],
) -> None:
    for spec in tools.values():
        Draft202012Validator.check_schema(dict(spec.args_schema))
        properties = spec.args_schema["properties"]
        assert "ctx" not in properties
        assert all(prop.get("description") for prop in properties.values()), spec.name
        assert spec.description
    assert "20.00" in tools["issue_refund"].args_schema["properties"]["amount"]["description"]


def test_lookup_order_returns_the_order(tools: dict[str, ToolSpec]) -> None:
    result = call(tools["lookup_order"], order_id="a1001")
    assert isinstance(result, OrderDetails)
    assert result.order_id == "A1001"
    assert result.customer_id == "c1"
    assert result.status == "shipped"
    assert [(i.name, i.quantity, i.unit_price) for i in result.items] == [
        ("Ceramic pour-over dripper", 1, "34.00"),
        ("Paper filters", 1, "25.90"),
    ]
    assert (result.total, result.currency, result.placed_on) == ("59.90", "EUR", "2026-01-08")
    assert result.refunded == "0.00"
    # The runtime checks the result against the declared return type.
    tools["lookup_order"].return_adapter.validate_python(result)  # type: ignore[union-attr]


def test_lookup_order_of_an_unknown_order_raises_a_lookup_error(
    tools: dict[str, ToolSpec],
) -> None:
    with pytest.raises(LookupError, match=r"^No order A9999 was found\.$"):
        call(tools["lookup_order"], order_id="a9999")


def test_lookup_order_refuses_an_empty_id(tools: dict[str, ToolSpec]) -> None:
    with pytest.raises(InvalidToolArgs, match="order_id"):
        tools["lookup_order"].validate_args({"order_id": ""})


def test_track_shipment_of_a_shipped_order(tools: dict[str, ToolSpec]) -> None:
    result = call(tools["track_shipment"], order_id="A1001")
    assert result == ShipmentStatus(
        order_id="A1001",
        shipped=True,
        order_status="shipped",
        carrier="DHL",
        tracking_number="JJD0099001234567",
        status="in_transit",
        last_location="Leipzig",
        eta="2026-01-14",
    )


def test_track_shipment_of_an_order_not_shipped_yet_says_so(tools: dict[str, ToolSpec]) -> None:
    result = call(tools["track_shipment"], order_id="A1003")
    assert result == ShipmentStatus(order_id="A1003", shipped=False, order_status="paid")


def test_track_shipment_of_an_unknown_order_raises(tools: dict[str, ToolSpec]) -> None:
    with pytest.raises(LookupError, match="No order A0000 was found"):
        call(tools["track_shipment"], order_id="A0000")


def test_search_kb_returns_ranked_hits_with_snippets(tools: dict[str, ToolSpec]) -> None:
    hits = call(tools["search_kb"], query="How do I reset my password?")
    assert hits[0] == KbHit(
        article_id="kb-password-reset",
        title="Resetting your password",
        snippet=(
            "Choose 'Forgot password' on the sign-in page and enter the email address of "
            "your account."
        ),
    )
    assert call(tools["search_kb"], query="the and of") == []


def test_issue_refund_records_one_refund(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext, clock: FakeClock
) -> None:
    receipt = call(
        tools["issue_refund"],
        make_ctx(),
        order_id="a1003",
        amount="20.00",
        reason=" Shipping charged twice. ",
    )
    assert receipt == RefundReceipt(
        refund_id="R-00001",
        order_id="A1003",
        amount="20.00",
        currency="EUR",
        status="issued",
        arrives=REFUND_ARRIVES,
    )
    assert rows(db, "SELECT * FROM refunds") == [
        (
            1,
            "A1003",
            2000,
            "Shipping charged twice.",
            "lead",
            clock.now().isoformat(),
            "run_test:1",
        )
    ]
    assert call(tools["lookup_order"], order_id="A1003").refunded == "20.00"


def test_issue_refund_twice_for_the_same_step_pays_once(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    args = {"order_id": "A1003", "amount": "20.00", "reason": "Shipping charged twice."}
    first = call(tools["issue_refund"], make_ctx(step_id=3), **args)
    again = call(tools["issue_refund"], make_ctx(step_id=3), **args)
    assert again == first
    assert rows(db, "SELECT COUNT(*) FROM refunds") == [(1,)]


def test_a_replayed_full_refund_is_returned_not_refused_as_over_refund(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    # The whole total is refunded; a retry of the same step must find the refund, not fail on
    # "nothing left to refund".
    args = {"order_id": "A1004", "amount": "22.00", "reason": "Arrived broken."}
    first = call(tools["issue_refund"], make_ctx(), **args)
    assert call(tools["issue_refund"], make_ctx(), **args) == first
    assert rows(db, "SELECT COUNT(*) FROM refunds") == [(1,)]


def test_the_same_step_key_with_other_args_is_refused(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    call(tools["issue_refund"], make_ctx(), order_id="A1003", amount="20.00", reason="Twice.")
    with pytest.raises(
        ValueError, match=r"already refunded 20\.00 on order A1003 \(refund R-00001\)"
    ):
        call(tools["issue_refund"], make_ctx(), order_id="A1003", amount="30.00", reason="Twice.")
    assert rows(db, "SELECT COUNT(*) FROM refunds") == [(1,)]


def test_different_steps_make_different_refunds(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    args = {"order_id": "A1003", "amount": "20.00", "reason": "Twice."}
    first = call(tools["issue_refund"], make_ctx(step_id=1), **args)
    second = call(tools["issue_refund"], make_ctx(step_id=2), **args)
    assert (first.refund_id, second.refund_id) == ("R-00001", "R-00002")
    assert rows(db, "SELECT SUM(amount_cents) FROM refunds") == [(4000,)]


def test_over_refund_is_refused(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    # A1003 totals 124.50: after 100.00, only 24.50 is left.
    call(tools["issue_refund"], make_ctx(step_id=1), order_id="A1003", amount="100", reason="x")
    with pytest.raises(
        ValueError,
        match=r"Cannot refund 24\.51 EUR on order A1003: only 24\.50 of its 124\.50 total",
    ):
        call(
            tools["issue_refund"], make_ctx(step_id=2), order_id="A1003", amount="24.51", reason="x"
        )
    receipt = call(
        tools["issue_refund"], make_ctx(step_id=3), order_id="A1003", amount="24.50", reason="x"
    )
    assert receipt.amount == "24.50"
    assert rows(db, "SELECT SUM(amount_cents) FROM refunds") == [(12450,)]


@pytest.mark.parametrize("amount", ["0", "-5.00", "0.00"])
def test_refund_of_nothing_or_less_is_refused(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext, amount: str
) -> None:
    with pytest.raises(ValueError, match=r"A refund must be more than 0\.00"):
        call(tools["issue_refund"], make_ctx(), order_id="A1003", amount=amount, reason="x")
    assert rows(db, "SELECT COUNT(*) FROM refunds") == [(0,)]


def test_refund_with_fractions_of_a_cent_is_refused(
    tools: dict[str, ToolSpec], make_ctx: MakeContext
) -> None:
    with pytest.raises(ValueError, match="more than two decimal places"):
        call(tools["issue_refund"], make_ctx(), order_id="A1003", amount="1.005", reason="x")


def test_refund_amount_given_as_a_json_number_is_exact(
    tools: dict[str, ToolSpec], make_ctx: MakeContext
) -> None:
    receipt = call(tools["issue_refund"], make_ctx(), order_id="A1003", amount=20.1, reason="x")
    assert receipt.amount == "20.10"


def test_refund_needs_a_reason(tools: dict[str, ToolSpec], make_ctx: MakeContext) -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        call(tools["issue_refund"], make_ctx(), order_id="A1003", amount="1", reason="   ")


@pytest.mark.parametrize(("order_id", "status"), [("A1005", "pending"), ("A1006", "cancelled")])
def test_refund_of_an_order_not_paid_is_refused(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext, order_id: str, status: str
) -> None:
    with pytest.raises(ValueError, match=f"Order {order_id} is {status}: only paid, shipped"):
        call(tools["issue_refund"], make_ctx(), order_id=order_id, amount="1.00", reason="x")
    assert rows(db, "SELECT COUNT(*) FROM refunds") == [(0,)]


def test_refund_of_an_unknown_order_raises_a_lookup_error(
    tools: dict[str, ToolSpec], make_ctx: MakeContext
) -> None:
    with pytest.raises(LookupError, match="No order A9999 was found"):
        call(tools["issue_refund"], make_ctx(), order_id="A9999", amount="1.00", reason="x")


def test_escalation_opens_a_ticket_filed_under_the_customer(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext, clock: FakeClock
) -> None:
    ctx = make_ctx("c2", roles=frozenset({"customer"}))
    receipt = call(tools["escalate_to_human"], ctx, summary=" Parcel arrived damaged. ")
    assert receipt == TicketReceipt(
        ticket_id="T-00001", priority="normal", expected_response=RESPONSE_TIMES["normal"]
    )
    assert rows(db, "SELECT * FROM tickets") == [
        (1, "c2", "Parcel arrived damaged.", "normal", "c2", clock.now().isoformat(), "run_test:1")
    ]


def test_escalation_by_staff_is_filed_under_no_customer(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    receipt = call(tools["escalate_to_human"], make_ctx("lead"), summary="x", priority="high")
    assert (receipt.priority, receipt.expected_response) == ("high", "within 2 working hours")
    assert rows(db, "SELECT customer_id, created_by FROM tickets") == [(None, "lead")]


def test_escalation_twice_for_the_same_step_opens_one_ticket(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    first = call(tools["escalate_to_human"], make_ctx(step_id=2), summary="x", priority="low")
    again = call(tools["escalate_to_human"], make_ctx(step_id=2), summary="x", priority="low")
    other = call(tools["escalate_to_human"], make_ctx(step_id=3), summary="x", priority="low")
    assert again == first
    assert other.ticket_id != first.ticket_id
    assert rows(db, "SELECT COUNT(*) FROM tickets") == [(2,)]


def test_escalation_needs_a_summary(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    with pytest.raises(ValueError, match="needs a summary"):
        call(tools["escalate_to_human"], make_ctx(), summary="  ")
    with pytest.raises(InvalidToolArgs, match="priority"):
        tools["escalate_to_human"].validate_args({"summary": "x", "priority": "urgent"})
    assert rows(db, "SELECT COUNT(*) FROM tickets") == [(0,)]


def test_tools_default_to_the_system_clock(db: Path, make_ctx: MakeContext) -> None:
    from bastion.demo.support.tools import make_tools

    refund = next(spec for spec in make_tools(db) if spec.name == "issue_refund")
    call(refund, make_ctx(), order_id="A1003", amount=Decimal("1.00"), reason="x")
    (created_at,) = rows(db, "SELECT created_at FROM refunds")[0]
    assert created_at.endswith("+00:00")


def test_snippets_are_the_first_sentence_cut_at_a_word() -> None:
    from bastion.demo.support.tools import _snippet

    assert _snippet("One sentence. Another one.") == "One sentence."
    assert _snippet("No full stop") == "No full stop."
    long = "word " * 60 + "end. Next."
    cut = _snippet(long)
    assert cut.endswith("word…")
    assert len(cut) <= 161


def test_escalation_with_a_known_contact_channel_keeps_it_on_the_ticket(
    tools: dict[str, ToolSpec], db: Path, make_ctx: MakeContext
) -> None:
    ctx = make_ctx("c4", roles=frozenset({"customer"}))
    receipt = call(tools["escalate_to_human"], ctx, summary="Grinder broken.", contact="email")
    assert receipt.contact == "email"
    assert rows(db, "SELECT summary FROM tickets") == [("Grinder broken. [contact by email]",)]
    with pytest.raises(InvalidToolArgs):
        tools["escalate_to_human"].validate_args({"summary": "x", "contact": "pigeon"})
