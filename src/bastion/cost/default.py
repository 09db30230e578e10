"""`LedgerCostController`: the default Cost Controller, keeping each run's ledger in process.

A run is opened by `admit` with its request's ``max_budget_usd``, and closed by `finish`, which
drops its state: memory holds only the runs in flight, however many runs are served. Before each
model call, `reserve` holds the call's worst case (input estimated high by
`bastion.cost.tokens.estimate_input_tokens`, plus ``max_tokens`` of output); `settle` or `release`
ends the hold. A budget of exactly zero is admitted: local and scripted models cost nothing.

A model without a known price is refused (fail closed, never free). A provider billing more than
the worst case is recorded as billed, since that money is spent, and logged as a warning.

Departure from DESIGN.md, for now: budgets are per run and in process. The database-backed ledger
(per-user daily and monthly budgets, shared by replicas) is a later issue; it will apply the same
`bastion.cost.ledger.RunLedger` rule behind this same protocol.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from bastion.clock import Clock
from bastion.cost.interface import CostController, Reservation
from bastion.cost.ledger import LedgerSnapshot, RunLedger
from bastion.cost.pricing import PriceTable
from bastion.cost.tokens import estimate_input_tokens
from bastion.errors import BudgetExceeded
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatRequest, Usage

logger = logging.getLogger(__name__)


class LedgerCostController(CostController):
    """Per-run budgets enforced by reservation, in process.

    Args:
        prices: what each model costs.
        clock: stamps when each run's budget was opened.
    """

    def __init__(self, *, prices: PriceTable, clock: Clock) -> None:
        self._prices = prices
        self._clock = clock
        self._ledgers: dict[str, RunLedger] = {}
        #: The keys of each open run's fixed charges (`charge`), so that none is paid twice.
        self._charged: dict[str, set[str]] = {}
        # Check-and-hold must be atomic across tasks. The in-process ledger never awaits inside,
        # but the lock keeps the guarantee explicit and survives a ledger that does.
        self._lock = asyncio.Lock()

    async def admit(self, request: AgentRequest, principal: Principal) -> None:
        """Open the run's budget at ``request.max_budget_usd``.

        Raises:
            ValueError: the run is already open (admitted twice).
        """
        async with self._lock:
            if request.run_id in self._ledgers:
                raise ValueError(f"run {request.run_id!r} is already admitted")
            self._ledgers[request.run_id] = RunLedger(
                run_id=request.run_id,
                limit_usd=request.max_budget_usd,
                opened_at=self._clock.now(),
            )

    async def reserve(self, run_id: str, model: str, request: ChatRequest) -> Reservation:
        """Hold the call's worst-case cost.

        Raises:
            BudgetExceeded: the model has no price, or the hold would overspend the budget.
            ValueError: the run is not open (never admitted, or finished).
        """
        if self._prices.price_of(model) is None:
            raise BudgetExceeded(
                f"no price is known for model {model!r}; add it to settings.cost.prices"
            )
        worst = self._prices.cost(
            model,
            Usage(input_tokens=estimate_input_tokens(request), output_tokens=request.max_tokens),
        )
        async with self._lock:
            return self._ledger(run_id).hold(model=model, amount_usd=worst)

    async def settle(self, reservation: Reservation, usage: Usage) -> Decimal:
        """Replace the hold with the actual cost of `usage`; return that cost.

        Raises:
            ValueError: the reservation was already settled or released, or its run is not open.
        """
        actual = self._prices.cost(reservation.model, usage)
        async with self._lock:
            self._ledger(reservation.run_id).settle(reservation, actual, usage)
        if actual > reservation.amount_usd:
            logger.warning(
                "model %r billed $%s for a call of run %s, above the $%s reserved for it "
                "(usage: %d input, %d output tokens); recorded as billed",
                reservation.model,
                actual,
                reservation.run_id,
                reservation.amount_usd,
                usage.input_tokens,
                usage.output_tokens,
            )
        return actual

    async def charge(self, run_id: str, item: str, amount_usd: Decimal, *, key: str) -> Decimal:
        """Hold and settle `amount_usd` at once; a key already charged charges nothing more.

        Raises:
            BudgetExceeded: the charge would overspend the budget.
            ValueError: the run is not open.
        """
        async with self._lock:
            ledger = self._ledger(run_id)
            charged = self._charged.setdefault(run_id, set())
            if key in charged:
                return amount_usd
            hold = ledger.hold(model=item, amount_usd=amount_usd)
            ledger.settle(hold, amount_usd, Usage())
            charged.add(key)
        return amount_usd

    async def release(self, reservation: Reservation) -> None:
        """Drop a hold whose call did not happen or failed.

        Raises:
            ValueError: the reservation was already settled or released, or its run is not open.
        """
        async with self._lock:
            self._ledger(reservation.run_id).release(reservation)

    def spent(self, run_id: str) -> Decimal:
        """Settled cost of the run so far; zero for a run that is not open."""
        ledger = self._ledgers.get(run_id)
        return Decimal(0) if ledger is None else ledger.settled_usd

    def snapshot(self, run_id: str) -> LedgerSnapshot | None:
        """Where the run's budget stands, or None if the run is not open."""
        ledger = self._ledgers.get(run_id)
        return None if ledger is None else ledger.snapshot()

    @property
    def open_runs(self) -> int:
        """How many runs have a budget open (admitted, not finished)."""
        return len(self._ledgers)

    async def finish(self, run_id: str) -> Decimal:
        """Close the run, releasing any hold left, and return its settled total.

        Safe to call for a run that is not open (never admitted, or finished): it returns zero.
        """
        async with self._lock:
            ledger = self._ledgers.pop(run_id, None)
            self._charged.pop(run_id, None)
        if ledger is None:
            return Decimal(0)
        left = ledger.release_all()
        if left:
            logger.warning(
                "run %s finished with %d model call(s) still held; released", run_id, left
            )
        return ledger.settled_usd

    def _ledger(self, run_id: str) -> RunLedger:
        ledger = self._ledgers.get(run_id)
        if ledger is None:
            raise ValueError(
                f"run {run_id!r} has no open budget: admit it first (or it already finished)"
            )
        return ledger
