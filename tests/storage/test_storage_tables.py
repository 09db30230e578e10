from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import StatementError

from bastion.storage import migrate
from bastion.storage.tables import Money, UtcDateTime, audit_log, metadata

_scratch = sa.MetaData()
_values = sa.Table(
    "scratch_values",
    _scratch,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UtcDateTime),
    sa.Column("amount", Money),
)


@pytest.fixture
async def scratch(db_engine):
    async with db_engine.begin() as connection:
        await connection.run_sync(_scratch.create_all)
    return db_engine


async def _store_and_read(engine, **values: Any) -> sa.Row[Any]:
    async with engine.begin() as connection:
        await connection.execute(sa.insert(_values).values(id=1, **values))
    async with engine.connect() as connection:
        return (await connection.execute(sa.select(_values))).one()


def test_every_bastion_table_is_in_the_one_metadata():
    assert set(metadata.tables) == {
        "bastion_schema_version",
        "runs",
        "run_plans",
        "run_steps",
        "run_events",
        "session_turns",
        "audit_log",
        "audit_entries",
        "api_keys",
        "principals",
        "workers",
        "cost_counters",
        "cost_reservations",
        "memory_facts",
        "memory_summaries",
        "approvals",
        "durable_steps",
    }


def test_audit_log_has_the_columns_the_gate_writes():
    assert [c.name for c in audit_log.columns] == [
        "id",
        "at",
        "action",
        "decision",
        "principal_id",
        "reason",
        "run_id",
        "tool_name",
        "stage",
        "details",
        "prev_hash",
        "hash",
    ]


async def test_datetimes_come_back_aware_utc_at_the_same_instant(scratch):
    paris = timezone(timedelta(hours=2))
    stored = datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=paris)
    row = await _store_and_read(scratch, at=stored)
    assert row.at == stored
    assert row.at.tzinfo is UTC
    assert row.at.hour == 12
    assert row.at.microsecond == 123456


async def test_naive_datetimes_are_refused(scratch):
    with pytest.raises(StatementError, match="naive datetime"):
        await _store_and_read(scratch, at=datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001


async def test_null_datetime_and_money_stay_null(scratch):
    row = await _store_and_read(scratch, at=None, amount=None)
    assert (row.at, row.amount) == (None, None)


@pytest.mark.parametrize(
    "amount",
    [
        Decimal("0.000000001"),  # below NUMERIC(18, 8): one token of a cheap model
        Decimal("0.1"),
        Decimal("12345678901234567890.123456789012"),
        Decimal("-3.50"),
        Decimal(0),
    ],
)
async def test_money_round_trips_as_the_exact_decimal(scratch, amount):
    row = await _store_and_read(scratch, amount=amount)
    assert isinstance(row.amount, Decimal)
    assert row.amount == amount
    assert row.amount.as_tuple().exponent == amount.as_tuple().exponent


async def test_money_accepts_ints(scratch):
    row = await _store_and_read(scratch, amount=3)
    assert row.amount == Decimal(3)


@pytest.mark.parametrize(
    ("amount", "says"),
    [(0.1, "must be a Decimal"), (True, "must be a Decimal"), (Decimal("NaN"), "finite")],
)
async def test_money_refuses_inexact_or_non_finite_amounts(scratch, amount, says):
    with pytest.raises(StatementError, match=says):
        await _store_and_read(scratch, amount=amount)


async def test_tables_have_the_indexes_their_queries_need(db_engine):
    await migrate(db_engine)

    def indexes(connection: sa.Connection) -> dict[str, set[tuple[str | None, ...]]]:
        inspector = sa.inspect(connection)
        return {
            table: {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
            for table in ("runs", "session_turns")
        }

    async with db_engine.connect() as connection:
        found = await connection.run_sync(indexes)
    assert found["runs"] == {("user_id", "created_at"), ("status", "created_at"), ("created_at",)}
    # v6 adds the indexes retention needs: a per-user delete, a TTL sweep by age.
    assert found["session_turns"] == {("session_id", "id"), ("user_id",), ("at",)}
