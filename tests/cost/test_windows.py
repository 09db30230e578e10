"""Which budgets a call is charged to, and their windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from bastion.cost.windows import budgets_for, day_period, month_period, split_key
from bastion.settings import CostSettings

NOW = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)


def keys(settings: CostSettings, now: datetime = NOW) -> list[str]:
    found = budgets_for(
        run_id="r1",
        run_limit_usd=Decimal(1),
        user_id="u1",
        session_id="s1",
        settings=settings,
        now=now,
    )
    return [b.key for b in found]


def test_only_the_run_budget_applies_by_default():
    assert keys(CostSettings()) == ["run|r1|all"]


def test_every_configured_budget_applies_sorted_by_key():
    settings = CostSettings(
        session_usd=Decimal(5),
        user_daily_usd=Decimal(1),
        user_monthly_usd=Decimal(10),
        app_daily_usd=Decimal(100),
        app_monthly_usd=Decimal(1000),
        app="shop",
    )
    assert keys(settings) == [
        "app|shop|d:2026-11-30",
        "app|shop|m:2026-11",
        "run|r1|all",
        "session|s1|all",
        "user|u1|d:2026-11-30",
        "user|u1|m:2026-11",
    ]


def test_windows_are_utc_days_and_months():
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))  # 1 December, 01:30 local
    assert day_period(plus_two) == "d:2026-11-30"
    assert month_period(NOW + timedelta(hours=1)) == "m:2026-12"


def test_a_user_override_wins_field_by_field():
    settings = CostSettings.model_validate(
        {"user_daily_usd": "1", "user_monthly_usd": "9", "user_budgets": {"u1": {"daily_usd": "3"}}}
    )
    found = {
        b.period[:1]: b.limit_usd
        for b in budgets_for(
            run_id="r",
            run_limit_usd=Decimal(1),
            user_id="u1",
            session_id="s",
            settings=settings,
            now=NOW,
        )
        if b.scope == "user"
    }
    assert found == {"d": Decimal(3), "m": Decimal(9)}


def test_keys_split_back_even_with_bars_in_the_subject():
    assert split_key("user|a|b|d:2026-11-30") == ("user", "a|b", "d:2026-11-30")
