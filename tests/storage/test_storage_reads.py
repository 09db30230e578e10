"""`ReadRunner`: a read written as one synchronous function, run whole (on SQLite on a thread,
in one snapshot); errors raised, connections given back, closing and reuse."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from bastion.storage.reads import ReadRunner

_T = sa.table("t", sa.column("k", sa.Integer), sa.column("v", sa.String))


@pytest.fixture
async def engine(db_engine):
    async with db_engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
        await conn.execute(sa.insert(_T), [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}])
    return db_engine


def values(conn: sa.Connection) -> list[str]:
    return list(conn.scalars(sa.select(_T.c.v).order_by(_T.c.k)))


async def test_a_read_returns_what_its_function_returns_and_sees_committed_writes(engine):
    reads = ReadRunner(engine)
    try:
        assert await reads.run(values) == ["a", "b"]
        async with engine.begin() as conn:
            await conn.execute(sa.insert(_T).values(k=3, v="c"))
        assert await reads.run(values) == ["a", "b", "c"]
    finally:
        await reads.aclose()


async def test_on_sqlite_a_read_runs_off_the_event_loop_in_one_snapshot(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL reads run on the event loop, at its default isolation")
    path = engine.url.database
    seen: dict[str, object] = {}

    def read_around_a_write(conn: sa.Connection) -> tuple[list[str], list[str]]:
        seen["thread"] = threading.current_thread()
        before = values(conn)
        other = sqlite3.connect(path, isolation_level=None)  # another writer commits meanwhile
        try:
            other.execute("INSERT INTO t (k, v) VALUES (9, 'z')")
        finally:
            other.close()
        return before, values(conn)

    reads = ReadRunner(engine)
    try:
        before, after = await reads.run(read_around_a_write)
        assert before == after == ["a", "b"]  # the same snapshot throughout
        assert await reads.run(values) == ["a", "b", "z"]  # the next read sees the write
    finally:
        await reads.aclose()
    assert seen["thread"] is not threading.main_thread()


async def test_an_error_is_raised_and_the_runner_still_reads(engine):
    reads = ReadRunner(engine)

    def fails(conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT nothing FROM nowhere"))

    try:
        for _ in range(12):  # more than its pool holds: each failed read gave its connection back
            with pytest.raises(sa.exc.OperationalError if _sqlite(engine) else sa.exc.DBAPIError):
                await reads.run(fails)
        assert await reads.run(values) == ["a", "b"]
    finally:
        await reads.aclose()


async def test_a_closed_runner_reconnects_when_used_again_and_closing_twice_is_fine(engine):
    reads = ReadRunner(engine)
    assert await reads.run(values) == ["a", "b"]
    await reads.aclose()
    await reads.aclose()
    assert await reads.run(values) == ["a", "b"]
    await reads.aclose()


async def test_a_cancelled_caller_is_cancelled_at_once(engine):
    if not _sqlite(engine):
        pytest.skip("the read thread is SQLite's")
    started, release = threading.Event(), threading.Event()

    def slow(conn: sa.Connection) -> list[str]:
        started.set()
        release.wait(timeout=30)
        return values(conn)

    reads = ReadRunner(engine)
    try:
        task = asyncio.ensure_future(reads.run(slow))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await reads.run(values) == ["a", "b"]
    finally:
        release.set()
        await reads.aclose()


def _sqlite(engine) -> bool:
    return engine.dialect.name == "sqlite"


async def test_reads_do_not_depend_on_the_loops_default_executor(engine):
    """DBOS replaces the loop's default executor and shuts it down when it stops: reads (and
    closing the runner) must go on regardless."""
    if not _sqlite(engine):
        pytest.skip("the read threads are SQLite's")
    reads = ReadRunner(engine)
    await asyncio.get_running_loop().shutdown_default_executor()
    try:
        assert await reads.run(values) == ["a", "b"]
    finally:
        await reads.aclose()
    assert not [t for t in threading.enumerate() if t.name.startswith("bastion-reads")]
