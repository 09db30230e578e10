"""The ledger's transactions, as synchronous functions of one connection.

Each function here is one step of a transaction `bastion.cost.sql.SqlCostController` runs whole
through `bastion.storage.writes.TransactionRunner` (on SQLite, on the writer thread; on
PostgreSQL, through ``run_sync``). They only read and write the database (a transaction SQLite
refuses as locked is run again whole), and lock counter rows always in key order, so that two
transactions never deadlock on PostgreSQL. The hot path's statements are built once, at import:
building a SQLAlchemy statement (and its cache key) costs more CPU than SQLite spends running it;
the most frequent ones are `Statement`s, which SQLite runs straight on its cursor. On PostgreSQL
the hot path (a new hold, its settlement or release) is one statement instead
(`bastion.cost.postgres`), under the same rules; the rest takes these transactions there too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bastion.cost.windows import Budget, split_key
from bastion.models.interface import Usage
from bastion.storage.engine import insert_ignore, insert_statement, update_statement, upsert
from bastion.storage.statements import Statement
from bastion.storage.tables import cost_counters, cost_reservations

_ZERO = Decimal(0)
#: A reservation's statuses.
HELD, SETTLED, RELEASED, EXPIRED, DENIED = "held", "settled", "released", "expired", "denied"
#: Counter key → (settled, reserved).
Totals = dict[str, tuple[Decimal, Decimal]]


@dataclass(frozen=True, slots=True)
class Denial:
    """The first budget a hold does not fit in, and where it stood."""

    budget: Budget
    settled: Decimal
    reserved: Decimal


@dataclass(frozen=True, slots=True)
class Settled:
    """What a settlement charged."""

    cost_usd: Decimal
    #: The reservation's status before it settled (``settled`` for a replay: nothing changed).
    was: str


_R, _C = cost_reservations, cost_counters
_SETTLE = (
    sa.update(_R)
    .where(_R.c.id == sa.bindparam("b_id"), _R.c.status == HELD)
    .values(
        status=SETTLED,
        cost_usd=sa.bindparam("b_cost", type_=_R.c.cost_usd.type),
        input_tokens=sa.bindparam("b_input"),
        output_tokens=sa.bindparam("b_output"),
        cached_input_tokens=sa.bindparam("b_cached"),
        closed_at=sa.bindparam("b_at", type_=_R.c.closed_at.type),
    )
    .returning(_R.c.amount_usd, _R.c.counters)
)
_COUNTER_KEY = sa.tuple_(_C.c.scope, _C.c.subject, _C.c.period)
_READ_COUNTERS = sa.select(
    _C.c.scope, _C.c.subject, _C.c.period, _C.c.settled_usd, _C.c.reserved_usd
).where(_COUNTER_KEY.in_(sa.bindparam("b_keys", expanding=True)))
_LOCK_COUNTERS = _READ_COUNTERS.order_by(_C.c.scope, _C.c.subject, _C.c.period).with_for_update()
_WRITE_COUNTERS = update_statement(
    _C, ("settled_usd", "reserved_usd", "updated_at"), keys=("scope", "subject", "period")
)


def hold_tx(
    connection: sa.Connection,
    row: dict[str, Any],
    budgets: Sequence[Budget],
    now: datetime,
    *,
    replayed: bool,
) -> Decimal | str:
    """Hold ``row["amount_usd"]`` on every budget, or deny; the amount held, or why denied."""
    t = cost_reservations
    found = None
    if replayed:
        # Only a replayed run finds its own rows: look only then (saves a statement).
        found = connection.execute(
            sa.select(t.c.status, t.c.amount_usd).where(t.c.id == row["id"]).with_for_update()
        ).first()
        if found is not None and found.status in (HELD, SETTLED):
            # Its hold (kept, or taken over from the crash), or its settlement.
            if found.status == HELD:
                connection.execute(
                    sa.update(t).where(t.c.id == row["id"]).values(expires_at=row["expires_at"])
                )
            return Decimal(found.amount_usd)
    amount: Decimal = row["amount_usd"]
    totals = _lock_counters(connection, [b.key for b in budgets], now)
    denial = first_denial(budgets, totals, amount)
    if denial is None:
        for budget in budgets:
            settled, reserved = totals[budget.key]
            totals[budget.key] = (settled, reserved + amount)
        _write_counters(connection, totals, now)
        row = {**row, "status": HELD, "reason": None}
    else:
        reason = denial_message(row["run_id"], row["model"], amount, denial)
        row = {**row, "status": DENIED, "reason": reason, "amount_usd": _ZERO, "closed_at": now}
    if found is None:
        # A plain insert: a row already there would be a second live run with this id.
        insert_statement(_R, tuple(row)).execute(connection, row)
    else:
        connection.execute(upsert(connection, t, row, keys=["id"]))
    return amount if denial is None else str(row["reason"])


def settle_tx(
    connection: sa.Connection, rid: str, actual: Decimal, usage: Usage, now: datetime
) -> Settled:
    """Settle reservation `rid` at `actual`; a settled one is left as it is (a replay).

    Raises:
        ValueError: no such reservation.
    """
    t = cost_reservations
    # The common case in one statement: the hold is still held; it becomes settled (and
    # locked) and says what it held where.
    row = connection.execute(
        _SETTLE,
        {
            "b_id": rid,
            "b_cost": actual,
            "b_input": usage.input_tokens,
            "b_output": usage.output_tokens,
            "b_cached": usage.cached_input_tokens,
            "b_at": now,
        },
    ).first()
    was = HELD
    if row is None:  # already settled (a replay), or released or expired meanwhile
        row = connection.execute(
            sa.select(t.c.status, t.c.amount_usd, t.c.cost_usd, t.c.counters)
            .where(t.c.id == rid)
            .with_for_update()
        ).first()
        if row is None:
            raise ValueError(f"reservation {rid!r} is not in the ledger")
        if row.status == SETTLED:
            return Settled(cost_usd=Decimal(row.cost_usd), was=SETTLED)
        was = row.status
        connection.execute(
            sa.update(t)
            .where(t.c.id == rid)
            .values(
                status=SETTLED,
                cost_usd=actual,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                closed_at=now,
            )
        )
    totals = _lock_counters(connection, list(row.counters), now)
    for key in row.counters:
        settled, reserved = totals[key]
        if was == HELD:
            reserved = max(_ZERO, reserved - Decimal(row.amount_usd))
        totals[key] = (settled + actual, reserved)
    _write_counters(connection, totals, now)
    return Settled(cost_usd=actual, was=was)


def read_counters(connection: sa.Connection, keys: Sequence[str], *, lock: bool = False) -> Totals:
    """The counters `keys` that exist (locked on PostgreSQL with `lock`)."""
    if not keys:
        return {}
    parts = [split_key(k) for k in keys]
    if connection.dialect.name == "sqlite":  # no row locks there (the writer holds the file's)
        params = {
            f"{name}{i}": value
            for i, part in enumerate(parts)
            for name, value in zip("sjp", part, strict=True)
        }
        found = _counters_by_key(len(parts)).rows(connection, params)
    else:
        query = _LOCK_COUNTERS if lock else _READ_COUNTERS
        found = list(connection.execute(query, {"b_keys": parts}).all())
    return {
        f"{scope}|{subject}|{period}": (Decimal(settled), Decimal(reserved))
        for scope, subject, period, settled, reserved in found
    }


@functools.cache
def _counters_by_key(count: int) -> Statement:
    """`_READ_COUNTERS` for `count` keys as SQL text (SQLite: run straight on its cursor)."""
    match = " OR ".join(
        f"(scope = :s{i} AND subject = :j{i} AND period = :p{i})" for i in range(count)
    )
    return Statement(
        sa.text(
            "SELECT scope, subject, period, settled_usd, reserved_usd FROM cost_counters "
            f"WHERE {match}"
        )
    )


def _lock_counters(connection: sa.Connection, keys: Sequence[str], now: datetime) -> Totals:
    """Lock (PostgreSQL) and read the counters `keys`, creating those missing at zero."""
    totals = read_counters(connection, keys, lock=True)
    missing = [k for k in keys if k not in totals]
    if missing:
        # Created in their own statement, then locked like the others: a concurrent creator of
        # the same row makes ours a no-op, and both then queue on the row lock.
        create_counters(connection, missing, now)
        totals.update(read_counters(connection, missing, lock=True))
    return totals


def create_counters(connection: sa.Connection, keys: Sequence[str], now: datetime) -> None:
    """Create the counters `keys` at zero; those already there are left as they are."""
    rows = []
    for key in keys:
        scope, subject, period = split_key(key)
        rows.append(
            {
                "scope": scope,
                "subject": subject,
                "period": period,
                "settled_usd": _ZERO,
                "reserved_usd": _ZERO,
                "updated_at": now,
            }
        )
    keys_ = ["scope", "subject", "period"]
    connection.execute(insert_ignore(connection, cost_counters, keys=keys_), rows)


def _write_counters(connection: sa.Connection, totals: Totals, now: datetime) -> None:
    params = []
    for key, (settled, reserved) in sorted(totals.items()):
        scope, subject, period = split_key(key)
        params.append(
            {
                "k_scope": scope,
                "k_subject": subject,
                "k_period": period,
                "settled_usd": settled,
                "reserved_usd": reserved,
                "updated_at": now,
            }
        )
    _WRITE_COUNTERS.execute(connection, params)


def free_holds(
    connection: sa.Connection,
    rows: Sequence[Any],
    now: datetime,
    *,
    status: str,
    reason: str | None = None,
    mark: bool = True,
) -> None:
    """Take `rows`' holds off their counters and (unless `mark` is off) mark them `status`."""
    freed: dict[str, Decimal] = {}
    for row in rows:
        for key in row.counters:
            freed[key] = freed.get(key, _ZERO) + Decimal(row.amount_usd)
    totals = _lock_counters(connection, sorted(freed), now)
    for key, amount in freed.items():
        settled, reserved = totals[key]
        totals[key] = (settled, max(_ZERO, reserved - amount))
    if totals:
        _write_counters(connection, totals, now)
    if not mark:
        return
    t = cost_reservations
    connection.execute(
        sa.update(t)
        .where(t.c.id.in_([row.id for row in rows]), t.c.status == HELD)
        .values(status=status, closed_at=now, reason=reason)
    )


def first_denial(budgets: Sequence[Budget], totals: Totals, amount: Decimal) -> Denial | None:
    """The first of `budgets` that `amount` does not fit in, given the counters' `totals`."""
    for budget in budgets:
        settled, reserved = totals[budget.key]
        if settled + reserved + amount > budget.limit_usd:
            return Denial(budget=budget, settled=settled, reserved=reserved)
    return None


def denial_message(run_id: str, model: str, amount: Decimal, denial: Denial) -> str:
    """Why a hold is denied: which budget, where it stands, what the call needed, what to do."""
    budget = denial.budget
    advice = (
        "raise max_budget_usd, lower max_tokens or use a cheaper model"
        if budget.scope == "run"
        else "wait for the window to reset, or raise the limit in settings.cost"
    )
    return (
        f"run {run_id!r} would exceed the {budget.describe()} of ${budget.limit_usd}: "
        f"${denial.settled} spent and ${denial.reserved} held for calls in flight, and this "
        f"call to {model!r} needs up to ${amount}; {advice}"
    )
