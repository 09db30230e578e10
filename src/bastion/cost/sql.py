"""`SqlCostController`: budgets kept in the database, a hard cap across processes and replicas.

Each budget a call is charged to (`bastion.cost.windows`: the run, and when configured the
session, the user and the app per day and month) is a counter row holding what is settled and
what is held. A reservation is one transaction that locks the counters, checks
``settled + reserved + worst case <= limit`` for every one of them, and adds the hold to all or
none:

* SQLite: `bastion.storage.begin_write` begins with ``BEGIN IMMEDIATE``, the database's single
  write lock, so check and hold are one step for every process sharing the file;
* PostgreSQL: one statement, run in autocommit (`bastion.cost.postgres`), locks
  the counter rows (``SELECT ... FOR UPDATE``, always in key order, so two statements never
  deadlock), checks, adds the hold and records the reservation, and commits: a concurrent
  reservation waits for the lock, then reads the committed totals. The lock on a counter every
  caller shares (a user's day) is held for one statement's execution on the server, not for a
  transaction's round trips. Settling and releasing are one statement each in the same way.

Amounts are exact `Decimal` (`bastion.storage.tables.Money`): no float, and no SQL arithmetic on
SQLite's text-stored amounts (PostgreSQL's statements add its exact ``numeric``). Each SQLite
transaction is a plain function of a synchronous connection, run whole by
`bastion.storage.writes.TransactionRunner` (one hand-off to a writer thread per transaction rather
than several per statement: this keeps a reservation well under the 2 ms it may add to a model
call). The rarer paths (a durable replay, a late settlement, finishing a run, reconciling) are
such transactions on PostgreSQL too.

A hold is settled at the call's actual cost, or released when the call fails (the caller's
``finally``, `bastion.cost.metered`). A process that dies holding one cannot release it: every
hold has an expiry (``reservation_ttl_s``), and `reconcile` frees the expired holds. It runs when
the controller starts (the first admission) and again on admissions at most every
``reconcile_every_s``; operators may call it too.

Replay safety (durable runs): a reservation's id is the run id and the call's number within the
run, counted from the run's admission. A recovered run replays from the top and makes its calls
in the same order, so it finds its own rows: a call already settled is not charged twice, a hold
left by the crash is taken over rather than doubled. For the same reason `settle` and `release`
are idempotent here (the in-process controller treats a second one as a bug).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.cost.interface import CostController, Reservation
from bastion.cost.postgres import close_pg, hold_pg
from bastion.cost.pricing import PriceTable
from bastion.cost.tokens import estimate_input_tokens
from bastion.cost.transactions import (
    DENIED,
    EXPIRED,
    HELD,
    RELEASED,
    SETTLED,
    Settled,
    Totals,
    create_counters,
    free_holds,
    hold_tx,
    read_counters,
    settle_tx,
)
from bastion.cost.windows import Budget, budgets_for
from bastion.errors import BudgetExceeded, PriceUnknown
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatRequest, Usage
from bastion.settings import CostSettings
from bastion.storage.engine import upsert
from bastion.storage.migrations import migrate
from bastion.storage.reads import ReadRunner
from bastion.storage.tables import cost_reservations
from bastion.storage.writes import TransactionRunner

logger = logging.getLogger(__name__)

T = TypeVar("T")
_ZERO = Decimal(0)


@dataclass(slots=True)
class _Run:
    """What this process knows of an admitted run: who pays, its limit, its calls so far."""

    user_id: str
    session_id: str
    limit_usd: Decimal
    calls: int = 0
    settled_usd: Decimal = _ZERO
    #: Ids of the run's reservations the ledger held when it was admitted (a replay's own),
    #: and of the fixed charges made since (which a replayed step makes again).
    recorded: set[str] = field(default_factory=set)


class SqlCostController(CostController):
    """Budgets per run, session, user and app, enforced by reservations in the database.

    Args:
        engine: the database (shared with the other stores); migrated on first use.
        prices: what each model costs.
        clock: reads "now" for windows, expiry and reconciliation.
        settings: the budgets, the reservation TTL and the reconciliation period.
    """

    def __init__(
        self, *, engine: AsyncEngine, prices: PriceTable, clock: Clock, settings: CostSettings
    ) -> None:
        self._engine = engine
        self._prices = prices
        self._clock = clock
        self._settings = settings
        self._runs: dict[str, _Run] = {}
        self._started = False
        self._last_reconcile: datetime | None = None
        self._writes: TransactionRunner | None = None
        self._reads = ReadRunner(engine)
        #: PostgreSQL: the engine in autocommit, for the one-statement steps (None on SQLite).
        self._autocommit: AsyncEngine | None = None
        #: Those statements under way (`aclose` waits for them).
        self._in_flight: set[asyncio.Future[Any]] = set()
        if engine.dialect.name == "postgresql":
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Migrate the schema and free the holds that crashed processes left. Safe to repeat."""
        if not self._started:
            await migrate(self._engine)
            self._writes = TransactionRunner(self._engine)
            self._started = True
            await self.reconcile()

    async def aclose(self) -> None:
        """Wait for the writes under way and stop the ledger's writer. Safe to call twice."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        await self._reads.aclose()
        if self._writes is not None:
            await self._writes.aclose()
            self._writes = None
            self._started = False

    async def _write(self, fn: Callable[[sa.Connection], T]) -> T:
        await self.start()
        assert self._writes is not None
        return await self._writes.run(fn)

    async def _once(self, fn: Callable[[sa.Connection], T]) -> T:
        """PostgreSQL: run `fn` in autocommit, each statement its own transaction.

        Shielded, as `TransactionRunner` is: a statement sent finishes, and the connection goes
        back to the pool clean, whatever happens to the caller (whose cancellation propagates).
        """
        await self.start()
        autocommit = self._autocommit
        assert autocommit is not None

        async def run() -> T:
            async with autocommit.connect() as connection:
                return await connection.run_sync(fn)

        task = asyncio.ensure_future(run())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def reconcile(self) -> int:
        """Free every hold past its expiry (its process died); return how many were freed."""
        now = self._clock.now()
        self._last_reconcile = now
        t = cost_reservations

        def expire(connection: sa.Connection) -> int:
            query = sa.select(t.c.id, t.c.amount_usd, t.c.counters).where(
                t.c.status == HELD, t.c.expires_at <= now
            )
            if connection.dialect.name == "postgresql":
                # A hold another transaction is settling right now is not expired: skip it.
                query = query.with_for_update(skip_locked=True)
            rows = connection.execute(query.order_by(t.c.id)).all()
            if rows:
                free_holds(connection, rows, now, status=EXPIRED, reason="expired unsettled")
            return len(rows)

        freed = await self._write(expire)
        if freed:
            logger.warning("freed %d expired budget hold(s) left by stopped processes", freed)
        return freed

    # -- the protocol ----------------------------------------------------------------------------

    async def admit(self, request: AgentRequest, principal: Principal) -> None:
        """Open the run's budget; refuse a run whose budgets are already spent.

        Admitting a run again (a durable run recovered after a crash) starts its call count
        afresh, which is how it finds its own earlier reservations.

        Raises:
            BudgetExceeded: one of the run's budgets has nothing left.
        """
        await self.start()
        now = self._clock.now()
        if (
            self._last_reconcile is None
            or (now - self._last_reconcile).total_seconds() >= self._settings.reconcile_every_s
        ):
            await self.reconcile()
        run = _Run(
            user_id=request.user_id,
            session_id=request.session_id,
            limit_usd=request.max_budget_usd,
        )
        budgets = self._budgets(request.run_id, run, now)
        keys = [b.key for b in budgets]
        recorded = sa.select(cost_reservations.c.id).where(
            cost_reservations.c.run_id == request.run_id
        )

        def read(connection: sa.Connection) -> tuple[Totals, set[str]]:
            return read_counters(connection, keys), set(connection.scalars(recorded))

        if self._autocommit is None:
            totals, run.recorded = await self._reads.run(read)
        else:
            async with self._autocommit.connect() as connection:
                totals, run.recorded = await connection.run_sync(read)
                missing = [key for key in keys if key not in totals]
                if missing:
                    # PostgreSQL's one-statement hold cannot lock a counter it creates (the row
                    # is not in its snapshot): create the run's counters now, not at its first
                    # call.
                    await connection.run_sync(create_counters, missing, now)
        for budget in budgets:
            settled, _ = totals.get(budget.key, (_ZERO, _ZERO))
            # A zero limit still admits the run: free (local) models fit in it.
            if budget.scope != "run" and settled >= budget.limit_usd > 0:
                message = (
                    f"the {budget.describe()} of ${budget.limit_usd} is spent "
                    f"(${settled} settled); no new run is admitted until it resets or is raised"
                )
                await self._record_denial(f"{request.run_id}:admit", request.run_id, run, message)
                raise BudgetExceeded(message)
        self._runs[request.run_id] = run

    async def reserve(self, run_id: str, model: str, request: ChatRequest) -> Reservation:
        """Hold the call's worst-case cost on every budget of the run, atomically.

        Raises:
            PriceUnknown: the model has no known price (it is never called).
            BudgetExceeded: a budget cannot afford the worst case (the model is not called).
            ValueError: the run is not open (never admitted, or finished).
        """
        run = self._run(run_id)
        if self._prices.price_of(model) is None:
            message = (
                f"no price is known for model {model!r}, so no budget can bound its calls: "
                "add it to settings.cost.prices (BASTION_COST__PRICES)"
            )
            await self._record_denial(f"{run_id}:{run.calls}:price", run_id, run, message, model)
            raise PriceUnknown(message)
        worst = self._prices.cost(
            model,
            Usage(input_tokens=estimate_input_tokens(request), output_tokens=request.max_tokens),
        )
        rid = f"{run_id}:{run.calls}"
        run.calls += 1
        return await self.hold(rid, run_id=run_id, model=model, amount_usd=worst)

    async def hold(self, rid: str, *, run_id: str, model: str, amount_usd: Decimal) -> Reservation:
        """Hold `amount_usd` under reservation id `rid` (a model call, or a priced tool call).

        Raises:
            BudgetExceeded: a budget cannot afford it.
            ValueError: the run is not open.
        """
        run = self._run(run_id)
        now = self._clock.now()
        budgets = self._budgets(run_id, run, now)
        row = self._row(rid, run_id, run, model, amount_usd, budgets, now)
        held = await self._hold(row, budgets, now, replayed=rid in run.recorded)
        if isinstance(held, str):
            raise BudgetExceeded(held)
        return Reservation(id=rid, run_id=run_id, model=model, amount_usd=held)

    async def settle(self, reservation: Reservation, usage: Usage) -> Decimal:
        """Replace the hold with the actual cost of `usage`; return that cost.

        A reservation already settled (a durable replay) returns its recorded cost unchanged.
        One that expired meanwhile is still charged: the money was spent.

        Raises:
            ValueError: no such reservation.
        """
        actual = self._prices.cost(reservation.model, usage)
        now = self._clock.now()
        rid = reservation.id

        def settle(connection: sa.Connection) -> Settled:
            return settle_tx(connection, rid, actual, usage, now)

        def close(connection: sa.Connection) -> Decimal | None:
            return close_pg(connection, rid, SETTLED, actual, usage, now)

        # PostgreSQL: one statement settles a held reservation; anything else (a replay, a hold
        # released or expired meanwhile) takes the transaction.
        if self._autocommit is not None and await self._once(close) is not None:
            done = Settled(cost_usd=actual, was=HELD)
        else:
            done = await self._write(settle)
        if done.was == SETTLED:
            return done.cost_usd
        if done.was != HELD:
            logger.warning(
                "reservation %s settled after it was %s: $%s charged anyway (it was spent)",
                reservation.id,
                done.was,
                actual,
            )
        if actual > reservation.amount_usd:
            logger.warning(
                "model %r billed $%s for reservation %s, above the $%s held; recorded as billed",
                reservation.model,
                actual,
                reservation.id,
                reservation.amount_usd,
            )
        run = self._runs.get(reservation.run_id)
        if run is not None:
            run.settled_usd += actual
        return actual

    async def charge(self, run_id: str, item: str, amount_usd: Decimal, *, key: str) -> Decimal:
        """Hold and settle `amount_usd` in one transaction; a key charged already costs nothing.

        Raises:
            BudgetExceeded: a budget cannot afford it (recorded as a denial).
            ValueError: the run is not open.
        """
        run = self._run(run_id)
        now = self._clock.now()
        budgets = self._budgets(run_id, run, now)
        row = self._row(f"{run_id}:{key}", run_id, run, item, amount_usd, budgets, now)
        held = await self._hold(row, budgets, now, replayed=row["id"] in run.recorded, settle=True)
        run.recorded.add(row["id"])
        if isinstance(held, str):
            raise BudgetExceeded(held)
        run.settled_usd += amount_usd
        return amount_usd

    async def release(self, reservation: Reservation) -> None:
        """Drop a hold whose call failed. Releasing one that is no longer held does nothing."""
        now = self._clock.now()
        t = cost_reservations
        if self._autocommit is not None:
            rid = reservation.id
            await self._once(
                lambda connection: close_pg(connection, rid, RELEASED, _ZERO, Usage(), now)
            )
            return

        def release(connection: sa.Connection) -> None:
            row = connection.execute(
                sa.update(t)
                .where(t.c.id == reservation.id, t.c.status == HELD)
                .values(status=RELEASED, closed_at=now)
                .returning(t.c.id, t.c.amount_usd, t.c.counters)
            ).first()
            if row is not None:
                free_holds(connection, [row], now, status=RELEASED, mark=False)

        await self._write(release)

    def spent(self, run_id: str) -> Decimal:
        """Settled cost of the run in this process so far; zero for a run that is not open."""
        run = self._runs.get(run_id)
        return _ZERO if run is None else run.settled_usd

    async def finish(self, run_id: str) -> Decimal:
        """Release the run's holds left, and return its settled total (from the ledger).

        Safe to call for a run that is not open: it returns what the ledger holds for it.
        """
        self._runs.pop(run_id, None)
        now = self._clock.now()
        t = cost_reservations

        def close(connection: sa.Connection) -> tuple[int, Decimal]:
            held = connection.execute(
                sa.select(t.c.id, t.c.amount_usd, t.c.counters)
                .where(t.c.run_id == run_id, t.c.status == HELD)
                .order_by(t.c.id)
                .with_for_update()
            ).all()
            if held:
                free_holds(connection, held, now, status=RELEASED)
            costs = connection.execute(
                sa.select(t.c.cost_usd).where(t.c.run_id == run_id, t.c.status == SETTLED)
            )
            return len(held), sum((Decimal(c) for (c,) in costs), _ZERO)

        left, total = await self._write(close)
        if left:
            logger.warning("run %s finished with %d budget hold(s) left; released", run_id, left)
        return total

    # -- helpers ---------------------------------------------------------------------------------

    async def _hold(
        self,
        row: dict[str, Any],
        budgets: Sequence[Budget],
        now: datetime,
        *,
        replayed: bool,
        settle: bool = False,
    ) -> Decimal | str:
        """Hold `row`'s amount on `budgets` (with `settle`, charge it): the amount, or a denial.

        One statement on PostgreSQL; a transaction on SQLite, and for a replayed id anywhere
        (a durable recovery, rare: it must find its own row first).
        """
        if self._autocommit is not None and not replayed:
            return await self._once(
                lambda connection: hold_pg(connection, row, budgets, now, settle=settle)
            )

        def take(connection: sa.Connection) -> Decimal | str:
            held = hold_tx(connection, row, budgets, now, replayed=replayed)
            if settle and isinstance(held, Decimal):  # a charge; no-op if settled already
                settle_tx(connection, row["id"], row["amount_usd"], Usage(), now)
            return held

        return await self._write(take)

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise ValueError(
                f"run {run_id!r} has no open budget: admit it first (or it already finished)"
            )
        return run

    def _row(
        self,
        rid: str,
        run_id: str,
        run: _Run,
        model: str,
        amount_usd: Decimal,
        budgets: Sequence[Budget],
        now: datetime,
    ) -> dict[str, Any]:
        """A new reservation's row (its status and reason are set when it is held or denied)."""
        return {
            "id": rid,
            "run_id": run_id,
            "user_id": run.user_id,
            "session_id": run.session_id,
            "app": self._settings.app,
            "model": model,
            "amount_usd": amount_usd,
            "cost_usd": _ZERO,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "counters": [b.key for b in budgets],
            "created_at": now,
            "expires_at": now + timedelta(seconds=self._settings.reservation_ttl_s),
            "closed_at": None,
        }

    def _budgets(self, run_id: str, run: _Run, now: datetime) -> tuple[Budget, ...]:
        return budgets_for(
            run_id=run_id,
            run_limit_usd=run.limit_usd,
            user_id=run.user_id,
            session_id=run.session_id,
            settings=self._settings,
            now=now,
        )

    async def _record_denial(
        self, rid: str, run_id: str, run: _Run, reason: str, model: str = ""
    ) -> None:
        now = self._clock.now()
        row = {
            "id": rid,
            "run_id": run_id,
            "user_id": run.user_id,
            "session_id": run.session_id,
            "app": self._settings.app,
            "model": model,
            "status": DENIED,
            "amount_usd": _ZERO,
            "cost_usd": _ZERO,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_input_tokens": 0,
            "counters": [],
            "reason": reason,
            "created_at": now,
            "expires_at": now,
            "closed_at": now,
        }

        def record(connection: sa.Connection) -> None:
            connection.execute(upsert(connection, cost_reservations, row, keys=["id"]))

        await self._write(record)
