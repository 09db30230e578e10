"""`TransactionRunner`: functions committed (or rolled back) whole; on SQLite one shared writer
per database that commits concurrent writes in groups, each write isolated in its savepoint."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from bastion.storage import create_engine
from bastion.storage.writes import RIDERS, Riders, TransactionRunner, _Writer

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


# -- riders ------------------------------------------------------------------------------------


async def _riding(riders: Riders, fn):
    """Run `fn` (a coroutine function) with `riders` as the context's riders."""
    token = RIDERS.set(riders)
    try:
        return await fn()
    finally:
        RIDERS.reset(token)


async def test_riders_commit_with_the_next_transaction_in_their_context(engine):
    riders = Riders(engine)
    riders.add(insert(1, "rider"))
    runner = TransactionRunner(engine)
    try:
        await runner.run(insert(2, "outside"))  # another context: nothing rides
        assert (await rows(engine), riders.waiting) == ({2: "outside"}, 1)
        assert await _riding(riders, lambda: runner.run(insert(3, "own"))) == 3
    finally:
        await runner.aclose()
    assert await rows(engine) == {1: "rider", 2: "outside", 3: "own"}
    assert riders.waiting == 0


async def test_riders_wait_for_a_transaction_on_their_own_database(engine, tmp_path):
    other = create_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    riders = Riders(engine)
    riders.add(insert(1, "rider"))
    runner = TransactionRunner(other)
    try:
        await _riding(riders, lambda: runner.run(lambda conn: None))
    finally:
        await runner.aclose()
        await other.dispose()
    assert (await rows(engine), riders.waiting) == ({}, 1)


async def test_a_transaction_that_fails_is_rolled_back_with_its_riders_who_wait_again(engine):
    riders = Riders(engine)
    riders.add(insert(1, "rider"))
    runner = TransactionRunner(engine)
    try:
        with pytest.raises(ValueError, match="no 2"):
            await _riding(riders, lambda: runner.run(insert_then_fail(2)))
        assert (await rows(engine), riders.waiting) == ({}, 1)
        await runner.flush(riders)
    finally:
        await runner.aclose()
    assert (await rows(engine), riders.waiting) == ({1: "rider"}, 0)


async def test_a_rider_that_raises_fails_the_transaction_carrying_it(engine):
    riders = Riders(engine)
    riders.add(insert_then_fail(1))
    runner = TransactionRunner(engine)
    try:
        with pytest.raises(ValueError, match="no 1"):
            await _riding(riders, lambda: runner.run(insert(2, "own")))
    finally:
        await runner.aclose()
    assert await rows(engine) == {}  # the carrier's own write went with it


async def test_flush_with_nothing_waiting_writes_nothing(engine):
    runner = TransactionRunner(engine)
    try:
        await runner.flush(Riders(engine))
    finally:
        await runner.aclose()
    assert await rows(engine) == {}


async def test_flush_waits_for_the_transaction_carrying_riders_and_commits_them_if_it_fails(
    engine,
):
    if engine.dialect.name != "sqlite":
        pytest.skip("only SQLite's writer thread can be held mid-transaction by a test")
    held, release = threading.Event(), threading.Event()

    def slow_then_fail(conn: sa.Connection) -> None:
        held.set()
        release.wait(30)
        raise ValueError("refused")

    riders = Riders(engine)
    riders.add(insert(1, "rider"))
    runner = TransactionRunner(engine)
    try:
        carrier = asyncio.create_task(_riding(riders, lambda: runner.run(slow_then_fail)))
        await asyncio.to_thread(held.wait, 30)
        assert riders.waiting == 0  # boarded the held transaction
        flushing = asyncio.create_task(runner.flush(riders))
        for _ in range(10):
            await asyncio.sleep(0)  # noqa: TID251 - let the flush run as far as it can
        assert not flushing.done()  # the rider is neither committed nor given back yet
        release.set()
        with pytest.raises(ValueError, match="refused"):
            await carrier
        await flushing
    finally:
        release.set()
        await runner.aclose()
    assert await rows(engine) == {1: "rider"}
