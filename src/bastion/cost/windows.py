"""Which budgets a run's calls are charged to, and the window each one counts in.

A call is charged to its run (limit: the request's ``max_budget_usd``), and, when the settings
give them a limit, to its session (over all time), its user and its app (per UTC day and per
calendar month). Each is a `Budget`: a counter row in the ledger, keyed by scope, subject and
period. A window's period is part of the key (``d:2026-11-27``, ``m:2026-11``), so at a day's or
a month's boundary the next call lands on a fresh counter: the window resets without any job
having to reset it, and the old counter stays as history.

Kept apart from the ledger's SQL so that the rule ("which limits apply now") is a pure function,
tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from bastion.settings import CostSettings

#: The period of a budget with no window (a run's, a session's).
WHOLE = "all"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Budget:
    """One limit a call must fit in: the counter ``(scope, subject, period)`` and its limit."""

    scope: str
    subject: str
    period: str
    limit_usd: Decimal

    @property
    def key(self) -> str:
        """The counter's key as stored on a reservation: ``scope|subject|period``."""
        return f"{self.scope}|{self.subject}|{self.period}"

    def describe(self) -> str:
        """How a person would name this budget, e.g. ``user 'c1' daily budget (2026-11-27)``."""
        if self.period == WHOLE:
            return f"{self.scope} {self.subject!r} budget"
        kind, _, when = self.period.partition(":")
        window = "daily" if kind == "d" else "monthly"
        return f"{self.scope} {self.subject!r} {window} budget ({when})"


def split_key(key: str) -> tuple[str, str, str]:
    """``(scope, subject, period)`` of a counter key made by `Budget.key`."""
    scope, _, rest = key.partition("|")
    subject, _, period = rest.rpartition("|")
    return scope, subject, period


def day_period(now: datetime) -> str:
    """The daily window `now` falls in (UTC)."""
    return "d:" + now.astimezone(UTC).strftime("%Y-%m-%d")


def month_period(now: datetime) -> str:
    """The monthly window `now` falls in (UTC)."""
    return "m:" + now.astimezone(UTC).strftime("%Y-%m")


def budgets_for(
    *,
    run_id: str,
    run_limit_usd: Decimal,
    user_id: str,
    session_id: str,
    settings: CostSettings,
    now: datetime,
) -> tuple[Budget, ...]:
    """Every budget a call of this run is charged to at `now`, sorted by key.

    The order is the order counters are locked in, the same in every transaction, so that two
    transactions never wait on each other's rows (no deadlock on PostgreSQL).
    """
    found = [Budget(scope="run", subject=run_id, period=WHOLE, limit_usd=run_limit_usd)]
    if settings.session_usd is not None:
        found.append(
            Budget(
                scope="session", subject=session_id, period=WHOLE, limit_usd=settings.session_usd
            )
        )
    own = settings.user_budgets.get(user_id)
    daily = own.daily_usd if own and own.daily_usd is not None else settings.user_daily_usd
    monthly = own.monthly_usd if own and own.monthly_usd is not None else settings.user_monthly_usd
    day, month = day_period(now), month_period(now)
    for scope, subject, period, limit in (
        ("user", user_id, day, daily),
        ("user", user_id, month, monthly),
        ("app", settings.app, day, settings.app_daily_usd),
        ("app", settings.app, month, settings.app_monthly_usd),
    ):
        if limit is not None:
            found.append(Budget(scope=scope, subject=subject, period=period, limit_usd=limit))
    return tuple(sorted(found, key=lambda b: b.key))
