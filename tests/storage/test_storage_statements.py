"""`Statement`: the hot writes' statements, run straight on SQLite's cursor and through
SQLAlchemy elsewhere, storing exactly what SQLAlchemy would and failing as it would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from bastion.storage.engine import (
    insert_ignore_statement,
    insert_statement,
    update_statement,
    upsert_statement,
)
from bastion.storage.statements import Statement
from bastion.storage.tables import Money, UtcDateTime

_META = sa.MetaData()
_ITEMS = sa.Table(
    "items",
    _META,
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("data", sa.JSON, nullable=True),
    sa.Column("amount", Money, nullable=True),
    sa.Column("note", sa.String(50), nullable=True),
)
_COLUMNS = ("k", "at", "data", "amount", "note")
_AT = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
async def engine(db_engine):
    async with db_engine.begin() as conn:
        await conn.run_sync(_META.create_all)
    return db_engine


def row(k: int, **changes):
    base = {"k": k, "at": _AT, "data": {"a": [1, "x"]}, "amount": Decimal("0.10"), "note": None}
    return base | changes


async def stored(engine) -> list[tuple]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(_ITEMS).order_by(_ITEMS.c.k))
        return [tuple(r) for r in result]


async def run(engine, fn):
    async with engine.begin() as conn:
        return await conn.run_sync(fn)


async def test_rows_written_directly_read_back_as_sqlalchemy_wrote_them(engine):
    """Times, JSON and exact decimals go through the same bind processors either way."""
    direct = insert_statement(_ITEMS, _COLUMNS)
    other_zone = _AT.astimezone(timezone(timedelta(hours=5)))
    assert await run(engine, lambda c: direct.execute(c, row(1, at=other_zone, note="n"))) == 1
    await run(engine, lambda c: c.execute(sa.insert(_ITEMS), row(2, at=other_zone, note="n")))
    first, second = await stored(engine)
    assert first == (1, _AT, {"a": [1, "x"]}, Decimal("0.10"), "n")
    assert first[1:] == second[1:]


async def test_several_rows_are_one_call_and_the_count_is_the_rows_changed(engine):
    statement = insert_ignore_statement(_ITEMS, _COLUMNS, keys=("k",))
    changed = await run(engine, lambda c: statement.execute(c, [row(1), row(2), row(3)]))
    assert changed == (3 if engine.dialect.name == "sqlite" else -1)  # asyncpg does not count
    # Already there: ignored, nothing changed.
    assert await run(engine, lambda c: statement.execute(c, [row(1, note="again")])) == 0
    assert [r[0] for r in await stored(engine)] == [1, 2, 3]
    assert {r[4] for r in await stored(engine)} == {None}


async def test_an_upsert_replaces_the_row_with_the_same_key(engine):
    statement = upsert_statement(_ITEMS, _COLUMNS, keys=("k",))
    await run(engine, lambda c: statement.execute(c, row(1)))
    await run(engine, lambda c: statement.execute(c, row(1, note="new", data=None)))
    assert await stored(engine) == [(1, _AT, None, Decimal("0.10"), "new")]


async def test_it_runs_inside_the_callers_transaction(engine):
    statement = insert_statement(_ITEMS, _COLUMNS)

    def insert_then_fail(conn: sa.Connection) -> None:
        statement.execute(conn, row(1))
        raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await run(engine, insert_then_fail)
    assert await stored(engine) == []


async def test_a_refused_row_raises_sqlalchemys_own_error(engine):
    statement = insert_statement(_ITEMS, _COLUMNS)
    await run(engine, lambda c: statement.execute(c, row(1, note="secret-value")))
    with pytest.raises(IntegrityError) as caught:
        await run(engine, lambda c: statement.execute(c, row(1, note="secret-value")))
    if engine.dialect.name == "sqlite":  # the direct path leaves the values out of the message
        assert "secret-value" not in str(caught.value)
    with pytest.raises(IntegrityError):  # several rows: the same
        await run(engine, lambda c: statement.execute(c, [row(2), row(2)]))
    assert [r[0] for r in await stored(engine)] == [1]


async def test_a_value_its_type_refuses_is_a_statement_error_naming_why(engine):
    statement = insert_statement(_ITEMS, _COLUMNS)
    naive = _AT.replace(tzinfo=None)
    with pytest.raises(StatementError, match="naive datetime"):
        await run(engine, lambda c: statement.execute(c, row(1, at=naive)))
    with pytest.raises(StatementError, match="note"):  # a parameter missing
        await run(engine, lambda c: statement.execute(c, {"k": 1, "at": _AT}))


async def test_a_query_gives_the_drivers_rows(engine):
    await run(engine, lambda c: insert_statement(_ITEMS, _COLUMNS).execute(c, [row(1), row(5)]))
    query = Statement(sa.text("SELECT k, note FROM items WHERE k >= :low ORDER BY k DESC"))
    assert await run(engine, lambda c: query.rows(c, {"low": 2})) == [(5, None)]
    assert await run(engine, lambda c: query.rows(c, {"low": 9})) == []


def test_an_empty_list_of_rows_is_refused(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    _META.create_all(engine)
    with engine.begin() as conn, pytest.raises(ValueError, match="at least one"):
        insert_statement(_ITEMS, _COLUMNS).execute(conn, [])


async def test_an_update_changes_the_rows_whose_keys_match_and_counts_them(engine):
    await run(engine, lambda c: insert_statement(_ITEMS, _COLUMNS).execute(c, [row(1), row(2)]))
    update = update_statement(_ITEMS, ("note", "amount"), keys=("k",))
    params = {"note": "changed", "amount": Decimal("2.50"), "k_k": 2}
    assert await run(engine, lambda c: update.execute(c, params)) == 1
    assert await run(engine, lambda c: update.execute(c, params | {"k_k": 9})) == 0
    assert [(r[0], r[3], r[4]) for r in await stored(engine)] == [
        (1, Decimal("0.10"), None),
        (2, Decimal("2.50"), "changed"),
    ]
    with pytest.raises(ValueError, match="at least one column"):
        update_statement(_ITEMS, (), keys=("k",))
