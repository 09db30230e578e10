"""The Cost Controller's contract: reserve the worst case before a model call, settle after."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatRequest, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """Money held for one model call until it is settled or released."""

    id: str
    run_id: str
    model: str
    amount_usd: Decimal


class CostController(Protocol):
    """Keeps every run within its budget: settled + reserved never exceeds the limit.

    `reserve` holds the worst-case cost of a call (its input tokens, estimated high, plus its
    ``max_tokens`` of output); `settle` replaces the hold with the actual cost; `release` drops a
    hold whose call failed. Each reservation is settled or released exactly once.
    """

    async def admit(self, request: AgentRequest, principal: Principal) -> None:
        """Open the run's budget.

        Raises:
            BudgetExceeded: the budget cannot afford anything.
        """
        ...

    async def reserve(self, run_id: str, model: str, request: ChatRequest) -> Reservation:
        """Hold the call's worst-case cost.

        Raises:
            BudgetExceeded: the hold would overspend the run's budget (or the model has no price).
        """
        ...

    async def settle(self, reservation: Reservation, usage: Usage) -> Decimal:
        """Replace the hold with the actual cost of `usage`; return that cost."""
        ...

    async def charge(self, run_id: str, item: str, amount_usd: Decimal, *, key: str) -> Decimal:
        """Charge a fixed price (a priced tool call) to the run's budgets at once; return it.

        `item` names what is paid for (``tool:<name>``); `key` identifies the charge within
        the run: charging the same key again charges nothing more (a replayed step).

        Raises:
            BudgetExceeded: the charge would overspend a budget (nothing is charged).
        """
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop a hold whose call did not happen or failed."""
        ...

    def spent(self, run_id: str) -> Decimal:
        """Settled cost of the run so far."""
        ...

    async def finish(self, run_id: str) -> Decimal:
        """Close the run's budget (releasing any hold left) and return its settled total."""
        ...
