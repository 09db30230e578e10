"""PostgreSQL's hot path: a hold, a settlement and a release, each in one statement.

The steps of `bastion.cost.transactions` cost a round trip per statement on PostgreSQL, with the
counter rows locked from the first one to the commit, so concurrent callers of one budget (a
user's day) queued behind that lock for all of them. Here each step is one statement, run in
autocommit (`bastion.cost.sql.SqlCostController` runs them so): the statement locks the counters
in key order, checks them and writes them and the reservation, and commits, so a counter's lock
is held for one execution on the server. Its rules are those of `bastion.cost.transactions`, which
the rarer paths (a durable replay, a late settlement, finishing a run, reconciling) still take;
SQLite has no data-modifying CTEs and takes its one write lock per transaction anyway, so it keeps
them for everything. The arithmetic is PostgreSQL's exact ``numeric``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bastion.cost.transactions import (
    DENIED,
    HELD,
    SETTLED,
    create_counters,
    denial_message,
    first_denial,
)
from bastion.cost.windows import Budget, split_key
from bastion.models.interface import Usage
from bastion.storage.tables import cost_counters, cost_reservations

_ZERO = Decimal(0)
_R, _C = cost_reservations, cost_counters
_INSERT_RESERVATION = sa.insert(_R)

#: The reservation's columns, each bound as ``:r_<column>`` with the column's type (for which
#: SQLAlchemy casts the parameter: ``$5::NUMERIC``; a bare ``SELECT $5`` would be text).
_PG_ROW = [c.name for c in _R.c]
_PG_HOLD = sa.text(
    f"""
WITH want AS (
    SELECT w.scope, w.subject, w.period, w.limit_usd
    FROM unnest(CAST(:scopes AS text[]), CAST(:subjects AS text[]), CAST(:periods AS text[]),
                CAST(:limits AS numeric[])) AS w (scope, subject, period, limit_usd)
), locked AS (
    SELECT c.scope, c.subject, c.period, c.settled_usd, c.reserved_usd, w.limit_usd
    FROM cost_counters AS c
    JOIN want AS w ON (c.scope, c.subject, c.period) = (w.scope, w.subject, w.period)
    ORDER BY c.scope, c.subject, c.period  -- the order every ledger statement locks them in
    FOR UPDATE OF c
), verdict AS (  -- every counter exists, and the amount fits in each of them
    SELECT count(*) = :n
           AND coalesce(bool_and(settled_usd + reserved_usd + :amount <= limit_usd), TRUE) AS fits
    FROM locked
), counted AS (
    UPDATE cost_counters AS c
    SET settled_usd = c.settled_usd + :settle, reserved_usd = c.reserved_usd + :hold,
        updated_at = :now
    FROM want AS w
    WHERE (c.scope, c.subject, c.period) = (w.scope, w.subject, w.period)
      AND (SELECT fits FROM verdict)  -- checked before any row is updated: all or none
), recorded AS (
    INSERT INTO cost_reservations ({", ".join(_PG_ROW)})
    SELECT {", ".join(f":r_{name}" for name in _PG_ROW)}
    WHERE (SELECT fits FROM verdict)
)
SELECT l.scope, l.subject, l.period, l.settled_usd, l.reserved_usd, v.fits
FROM locked AS l, verdict AS v
"""
).bindparams(
    sa.bindparam("amount", type_=_C.c.reserved_usd.type),
    sa.bindparam("settle", type_=_C.c.settled_usd.type),
    sa.bindparam("hold", type_=_C.c.reserved_usd.type),
    sa.bindparam("now", type_=_C.c.updated_at.type),
    *(sa.bindparam(f"r_{c.name}", type_=c.type) for c in _R.c),
)
# The closing of a held reservation (settled, or released at zero cost) and of its hold on every
# counter it names. The counters are locked in key order (``locked``, which the update waits
# for) as everywhere else; their keys come from the reservation, split as `split_key` does.
_PG_CLOSE = sa.text(
    r"""
WITH closed AS (
    UPDATE cost_reservations
    SET status = :status, cost_usd = :cost, input_tokens = :input_tokens,
        output_tokens = :output_tokens, cached_input_tokens = :cached_input_tokens,
        closed_at = :now
    WHERE id = :id AND status = 'held'
    RETURNING amount_usd, counters
), keys AS (
    SELECT parts[1] AS scope, parts[2] AS subject, parts[3] AS period
    FROM (
        SELECT regexp_match(k.key, '^([^|]*)\|(.*)\|([^|]*)$') AS parts
        FROM closed, jsonb_array_elements_text(closed.counters) AS k (key)
    ) AS split
), locked AS (
    SELECT c.scope
    FROM cost_counters AS c
    JOIN keys AS k ON (c.scope, c.subject, c.period) = (k.scope, k.subject, k.period)
    ORDER BY c.scope, c.subject, c.period
    FOR UPDATE OF c
), freed AS (
    UPDATE cost_counters AS c
    SET settled_usd = c.settled_usd + :cost,
        reserved_usd = greatest(c.reserved_usd - closed.amount_usd, 0),
        updated_at = :now
    FROM keys AS k, closed
    WHERE (c.scope, c.subject, c.period) = (k.scope, k.subject, k.period)
      AND (SELECT count(*) FROM locked) >= 0  -- always true, but locks them all first, in order
)
SELECT amount_usd FROM closed
"""
).bindparams(
    sa.bindparam("cost", type_=_R.c.cost_usd.type),
    sa.bindparam("now", type_=_R.c.closed_at.type),
)
#: A hold's attempts at most: the first may find a counter missing (admission creates the run's,
#: but a day or month may begin between admission and a call); it is created, then held again.
_PG_HOLD_ATTEMPTS = 3


def hold_pg(
    connection: sa.Connection,
    row: dict[str, Any],
    budgets: Sequence[Budget],
    now: datetime,
    *,
    settle: bool = False,
) -> Decimal | str:
    """PostgreSQL, in autocommit: `hold_tx` for a new reservation, in one statement.

    With `settle`, the amount is charged at once (a priced tool call): the reservation is
    recorded settled and the counters' settled totals take it, as `hold_tx` then `settle_tx`
    in one transaction would. A denial is recorded by a second statement, after the counters'
    locks are gone.

    Returns:
        The amount held (or charged), or why it was denied.
    """
    amount: Decimal = row["amount_usd"]
    if settle:
        row = {**row, "status": SETTLED, "cost_usd": amount, "closed_at": now, "reason": None}
    else:
        row = {**row, "status": HELD, "reason": None}
    keys = [split_key(b.key) for b in budgets]
    params = {
        "scopes": [k[0] for k in keys],
        "subjects": [k[1] for k in keys],
        "periods": [k[2] for k in keys],
        "limits": [b.limit_usd for b in budgets],
        "n": len(budgets),
        "amount": amount,
        "settle": amount if settle else _ZERO,
        "hold": _ZERO if settle else amount,
        "now": now,
        **{f"r_{name}": value for name, value in row.items()},
    }
    for _ in range(_PG_HOLD_ATTEMPTS):
        found = connection.execute(_PG_HOLD, params).all()
        if found and found[0].fits:
            return amount
        if len(found) == len(budgets):
            totals = {
                f"{r.scope}|{r.subject}|{r.period}": (
                    Decimal(r.settled_usd),
                    Decimal(r.reserved_usd),
                )
                for r in found
            }
            denial = first_denial(budgets, totals, amount)
            assert denial is not None, "PostgreSQL and Python disagree on a budget check"
            reason = denial_message(row["run_id"], row["model"], amount, denial)
            denied = {**row, "status": DENIED, "reason": reason, "amount_usd": _ZERO}
            denied.update(cost_usd=_ZERO, closed_at=now)
            connection.execute(_INSERT_RESERVATION, denied)
            return reason
        # A counter is missing (the first call in a window): create it, and hold again.
        create_counters(connection, [b.key for b in budgets], now)
    raise RuntimeError(f"the budget counters of reservation {row['id']!r} could not be created")


def close_pg(
    connection: sa.Connection, rid: str, status: str, actual: Decimal, usage: Usage, now: datetime
) -> Decimal | None:
    """PostgreSQL, in autocommit: close held reservation `rid` as `status`, in one statement.

    Settled (`status` ``settled``): charged `actual` and its hold freed; released (``released``,
    `actual` zero): its hold freed. A reservation no longer held is left alone.

    Returns:
        The amount the reservation held, or None when it was not held (the caller's slow path).
    """
    found = connection.execute(
        _PG_CLOSE,
        {
            "id": rid,
            "status": status,
            "cost": actual,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "now": now,
        },
    ).first()
    return None if found is None else Decimal(found.amount_usd)
