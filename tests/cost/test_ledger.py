from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bastion.cost.interface import Reservation
from bastion.cost.ledger import LedgerSnapshot, RunLedger
from bastion.errors import BudgetExceeded
from bastion.models.interface import Usage

OPENED = datetime(2026, 1, 1, tzinfo=UTC)


def ledger(limit: str = "1.00") -> RunLedger:
    return RunLedger(run_id="r1", limit_usd=Decimal(limit), opened_at=OPENED)


def test_holds_up_to_the_limit_exactly() -> None:
    book = ledger("0.30")
    holds = [book.hold(model="m", amount_usd=Decimal("0.10")) for _ in range(3)]
    assert book.reserved_usd == Decimal("0.30")
    assert len({h.id for h in holds}) == 3
    assert holds[0] == Reservation(
        id=holds[0].id, run_id="r1", model="m", amount_usd=Decimal("0.10")
    )
    with pytest.raises(BudgetExceeded):
        book.hold(model="m", amount_usd=Decimal("0.00000001"))


def test_refusal_names_limit_spent_held_and_needed() -> None:
    book = ledger("1.00")
    book.settle(book.hold(model="m", amount_usd=Decimal("0.5")), Decimal("0.25"), Usage())
    book.hold(model="m", amount_usd=Decimal("0.5"))
    with pytest.raises(BudgetExceeded) as info:
        book.hold(model="openai:gpt-4o", amount_usd=Decimal("0.26"))
    assert str(info.value) == (
        "run 'r1' would exceed its budget of $1.00: $0.25 spent and $0.5 held for calls in "
        "flight, and this call to 'openai:gpt-4o' needs up to $0.26; raise max_budget_usd, "
        "lower max_tokens or use a cheaper model"
    )


def test_zero_budget_affords_free_calls_only() -> None:
    book = ledger("0")
    book.hold(model="scripted:x", amount_usd=Decimal(0))
    with pytest.raises(BudgetExceeded):
        book.hold(model="m", amount_usd=Decimal("0.00000001"))


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        ledger("-1")


def test_settle_replaces_the_hold_and_counts_tokens() -> None:
    book = ledger()
    hold = book.hold(model="m", amount_usd=Decimal("0.5"))
    book.settle(hold, Decimal("0.1"), Usage(input_tokens=10, output_tokens=3))
    assert book.snapshot() == LedgerSnapshot(
        run_id="r1",
        limit_usd=Decimal("1.00"),
        settled_usd=Decimal("0.1"),
        reserved_usd=Decimal(0),
        open_holds=0,
        input_tokens=10,
        output_tokens=3,
        opened_at=OPENED,
    )


def test_release_drops_the_hold_without_spending() -> None:
    book = ledger()
    book.release(book.hold(model="m", amount_usd=Decimal("0.5")))
    assert (book.settled_usd, book.reserved_usd) == (Decimal(0), Decimal(0))


@pytest.mark.parametrize(
    ("first", "second"),
    [("settle", "settle"), ("settle", "release"), ("release", "release"), ("release", "settle")],
)
def test_a_hold_ends_exactly_once(first: str, second: str) -> None:
    book = ledger()
    hold = book.hold(model="m", amount_usd=Decimal("0.5"))

    def end(how: str) -> None:
        if how == "settle":
            book.settle(hold, Decimal("0.1"), Usage())
        else:
            book.release(hold)

    end(first)
    with pytest.raises(ValueError, match="is not held: it was already settled or released"):
        end(second)


def test_unknown_reservation_is_refused() -> None:
    stranger = Reservation(id="rsv_x", run_id="r1", model="m", amount_usd=Decimal(1))
    with pytest.raises(ValueError, match="'rsv_x' of run 'r1' is not held"):
        ledger().release(stranger)


def test_release_all_drops_every_hold() -> None:
    book = ledger()
    book.hold(model="m", amount_usd=Decimal("0.1"))
    book.hold(model="m", amount_usd=Decimal("0.2"))
    assert book.release_all() == 2
    assert book.release_all() == 0
    assert book.reserved_usd == 0
