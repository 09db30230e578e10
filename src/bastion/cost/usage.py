"""Usage reports from the ledger: spend, tokens, calls and denials, grouped by model, user or app.

One query function, shared by ``bastion usage`` and the HTTP service. Rows are read and summed
here rather than with SQL's ``SUM``: SQLite stores amounts as text (`bastion.storage.tables.Money`)
and would sum them as floats; `Decimal` keeps the report exact, to the ledger's last digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.storage.migrations import migrate
from bastion.storage.tables import cost_reservations

#: What a report can be grouped by.
GroupBy = Literal["model", "user", "app"]
GROUPS: tuple[GroupBy, ...] = ("model", "user", "app")
#: The group shown for a denial that named no model (a run refused at admission).
NO_MODEL = "-"


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageLine:
    """One group's usage: settled calls, their tokens and cost, and the calls denied."""

    key: str
    calls: int
    denials: int
    input_tokens: int
    output_tokens: int
    #: The part of `input_tokens` served from the providers' prompt caches.
    cached_input_tokens: int
    cost_usd: Decimal


async def usage_report(
    engine: AsyncEngine,
    *,
    user: str | None = None,
    since: datetime | None = None,
    by: GroupBy = "model",
) -> list[UsageLine]:
    """Usage from the ledger, one line per group, the most expensive first.

    Args:
        engine: the database holding the ledger (migrated here if it is not yet).
        user: only this user's calls.
        since: only calls made at or after this aware datetime.
        by: group by ``model``, ``user`` or ``app``.

    Raises:
        ValueError: `by` is not a known grouping, or `since` is naive.
    """
    if by not in GROUPS:
        raise ValueError(f"cannot group usage by {by!r}: use one of {', '.join(GROUPS)}")
    if since is not None and since.tzinfo is None:
        raise ValueError("since must be an aware datetime (UTC)")
    await migrate(engine)
    t = cost_reservations
    group = {"model": t.c.model, "user": t.c.user_id, "app": t.c.app}[by]
    query = sa.select(
        group,
        t.c.status,
        t.c.cost_usd,
        t.c.input_tokens,
        t.c.output_tokens,
        t.c.cached_input_tokens,
    ).where(t.c.status.in_(("settled", "denied")))
    if user is not None:
        query = query.where(t.c.user_id == user)
    if since is not None:
        query = query.where(t.c.created_at >= since)
    totals: dict[str, _Tally] = {}
    async with engine.connect() as connection:
        result = await connection.stream(query)
        async for key, status, cost, input_tokens, output_tokens, cached in result:
            tally = totals.setdefault(key or NO_MODEL, _Tally())
            if status == "denied":
                tally.denials += 1
            else:
                tally.calls += 1
                tally.input_tokens += input_tokens
                tally.output_tokens += output_tokens
                tally.cached_input_tokens += cached
                tally.cost_usd += Decimal(cost)
    lines = [
        UsageLine(
            key=key,
            calls=tally.calls,
            denials=tally.denials,
            input_tokens=tally.input_tokens,
            output_tokens=tally.output_tokens,
            cached_input_tokens=tally.cached_input_tokens,
            cost_usd=tally.cost_usd,
        )
        for key, tally in totals.items()
    ]
    return sorted(lines, key=lambda line: (-line.cost_usd, line.key))


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    denials: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
