"""`RunLedger`: one run's money (its limit, what is settled, what is held) and the budget rule.

The rule, applied when a hold is taken: ``settled + held + new hold <= limit``. Holds are taken at
a call's worst case and replaced by its actual cost when it settles, so however many calls run at
once, the run cannot overspend, as long as no provider bills more than the worst case (which the
controller logs when it happens).

The ledger is plain synchronous bookkeeping with no locking of its own: the controller serialises
access. Keeping it apart from the controller lets a database-backed ledger (a later issue: budgets
shared by replicas, per-user daily and monthly totals) apply the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from bastion.cost.interface import Reservation
from bastion.errors import BudgetExceeded
from bastion.messages import new_id
from bastion.models.interface import Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSnapshot:
    """Where a run's budget stands at one moment."""

    run_id: str
    limit_usd: Decimal
    settled_usd: Decimal
    reserved_usd: Decimal
    open_holds: int
    input_tokens: int
    output_tokens: int
    opened_at: datetime


class RunLedger:
    """The budget of one run. Callers serialise access (see the module docstring)."""

    def __init__(self, *, run_id: str, limit_usd: Decimal, opened_at: datetime) -> None:
        if limit_usd < 0:
            raise ValueError(f"run {run_id!r}: a budget limit cannot be negative ({limit_usd})")
        self.run_id = run_id
        self.limit_usd = limit_usd
        self.opened_at = opened_at
        self.settled_usd = Decimal(0)
        self.input_tokens = 0
        self.output_tokens = 0
        self._holds: dict[str, Reservation] = {}

    @property
    def reserved_usd(self) -> Decimal:
        """The sum of the open holds."""
        return sum((r.amount_usd for r in self._holds.values()), Decimal(0))

    def hold(self, *, model: str, amount_usd: Decimal) -> Reservation:
        """Hold `amount_usd` for one call to `model`, if the budget affords it.

        Raises:
            BudgetExceeded: naming the limit, what is spent and held, and what the call needs.
        """
        reserved = self.reserved_usd
        if self.settled_usd + reserved + amount_usd > self.limit_usd:
            raise BudgetExceeded(
                f"run {self.run_id!r} would exceed its budget of ${self.limit_usd}: "
                f"${self.settled_usd} spent and ${reserved} held for calls in flight, "
                f"and this call to {model!r} needs up to ${amount_usd}; "
                "raise max_budget_usd, lower max_tokens or use a cheaper model"
            )
        reservation = Reservation(
            id=new_id("rsv"), run_id=self.run_id, model=model, amount_usd=amount_usd
        )
        self._holds[reservation.id] = reservation
        return reservation

    def settle(self, reservation: Reservation, cost_usd: Decimal, usage: Usage) -> None:
        """Replace the hold by the actual `cost_usd` of `usage`.

        Raises:
            ValueError: the reservation is not held here (already settled or released, or unknown).
        """
        self._take(reservation)
        self.settled_usd += cost_usd
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens

    def release(self, reservation: Reservation) -> None:
        """Drop the hold without spending anything.

        Raises:
            ValueError: the reservation is not held here (already settled or released, or unknown).
        """
        self._take(reservation)

    def release_all(self) -> int:
        """Drop every open hold; return how many there were."""
        count = len(self._holds)
        self._holds.clear()
        return count

    def snapshot(self) -> LedgerSnapshot:
        """A frozen copy of where the budget stands."""
        return LedgerSnapshot(
            run_id=self.run_id,
            limit_usd=self.limit_usd,
            settled_usd=self.settled_usd,
            reserved_usd=self.reserved_usd,
            open_holds=len(self._holds),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            opened_at=self.opened_at,
        )

    def _take(self, reservation: Reservation) -> Reservation:
        held = self._holds.pop(reservation.id, None)
        if held is None:
            raise ValueError(
                f"reservation {reservation.id!r} of run {self.run_id!r} is not held: it was "
                "already settled or released, or was never made on this run"
            )
        return held
