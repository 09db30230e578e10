"""`TransactionRunner`: functions committed (or rolled back) whole; on SQLite one shared writer
per database that commits concurrent writes in groups, each write isolated in its savepoint."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from bastion.storage.writes import TransactionRunner, _Writer

_T = sa.table("t", sa.column("k", sa.Integer), sa.column("v", sa.String))


@pytest.fixture
async def engine(db_engine):
    async with db_engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
    return db_engine


async def rows(engine) -> dict[int, str]:
    async with engine.connect() as conn:
        return dict((await conn.execute(sa.select(_T.c.k, _T.c.v))).all())


def insert(k: int, v: str):
    def fn(conn: sa.Connection) -> int:
        conn.execute(sa.insert(_T).values(k=k, v=v))
        return k

    return fn


def insert_then_fail(k: int):
    def fn(conn: sa.Connection) -> None:
        conn.execute(sa.insert(_T).values(k=k, v="never"))
        raise ValueError(f"no {k}")

    return fn


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bastion-writes"]


async def test_a_function_is_committed_and_its_result_returned(engine):
    runner = TransactionRunner(engine)
    try:
        assert await runner.run(insert(1, "a")) == 1
    finally:
        await runner.aclose()
    assert await rows(engine) == {1: "a"}


async def test_a_function_that_raises_is_rolled_back_whole_and_its_error_raised(engine):
    runner = TransactionRunner(engine)
    try:
        with pytest.raises(ValueError, match="no 2"):
            await runner.run(insert_then_fail(2))
    finally:
        await runner.aclose()
    assert await rows(engine) == {}


async def test_concurrent_writes_commit_together_and_a_failing_one_is_rolled_back_alone(engine):
    runner = TransactionRunner(engine)
    try:
        results = await asyncio.gather(
            *(runner.run(insert(k, f"v{k}")) for k in range(20)),
            runner.run(insert_then_fail(99)),
            runner.run(insert(0, "duplicate key")),  # an IntegrityError of its own
            return_exceptions=True,
        )
    finally:
        await runner.aclose()
    assert results[:20] == list(range(20))
    assert isinstance(results[20], ValueError)
    assert isinstance(results[21], sa.exc.IntegrityError)
    assert await rows(engine) == {k: f"v{k}" for k in range(20)}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_concurrent_sqlite_writes_are_grouped_into_fewer_transactions(engine):
    commits = []

    def count(conn):
        commits.append(conn)

    sa.event.listen(sa.Engine, "commit", count)
    runner = TransactionRunner(engine)
    try:
        await runner.run(insert(-1, "start the writer"))
        commits.clear()
        await asyncio.gather(*(runner.run(insert(k, "x")) for k in range(50)))
    finally:
        sa.event.remove(sa.Engine, "commit", count)
        await runner.aclose()
    assert len(await rows(engine)) == 51
    assert 1 <= len(commits) < 50


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_runners_of_one_database_share_one_writer_that_the_last_close_stops(engine):
    before = len(writer_threads())
    first, second = TransactionRunner(engine), TransactionRunner(engine)
    await first.run(insert(1, "a"))
    await second.run(insert(2, "b"))
    assert len(writer_threads()) == before + 1
    await first.aclose()
    await second.run(insert(3, "c"))  # still served
    await second.aclose()
    assert len(writer_threads()) == before
    assert id(engine) not in _Writer._registry
    # A runner used after closing attaches again.
    await second.run(insert(4, "d"))
    await second.aclose()
    assert await rows(engine) == {1: "a", 2: "b", 3: "c", 4: "d"}


async def test_a_cancelled_caller_does_not_undo_its_write_and_close_waits_for_it(engine):
    runner = TransactionRunner(engine)
    try:
        task = asyncio.create_task(runner.run(insert(7, "kept")))
        await asyncio.sleep(0)  # noqa: TID251 - let the task hand its write over
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await runner.aclose()
    assert await rows(engine) == {7: "kept"}


async def test_a_write_sqlite_refuses_at_once_as_locked_is_run_again_whole(engine):
    """The writer talks to SQLite's cursor directly (``BEGIN IMMEDIATE``, savepoints), so the
    driver's own "database is locked" must be retried like SQLAlchemy's."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the writer thread is SQLite's")
    import sqlite3

    refusals = {"left": 2}

    def flaky(conn: sa.Connection) -> int:
        conn.execute(sa.insert(_T).values(k=7, v="x"))
        if refusals["left"]:
            refusals["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return 7

    def fails(conn: sa.Connection) -> None:
        raise sqlite3.OperationalError("no such table: nowhere")

    runner = TransactionRunner(engine)
    try:
        assert await runner.run(flaky) == 7
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await runner.run(fails)  # not a lock: raised at once, not tried again
    finally:
        await runner.aclose()
    assert refusals["left"] == 0
    assert await rows(engine) == {7: "x"}
