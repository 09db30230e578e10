import asyncio
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.errors import ConfigError
from bastion.storage import begin_write, create_engine, mask_url, normalize_url, upsert
from bastion.storage import engine as engine_module


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///data/b.db", "sqlite+aiosqlite:///data/b.db"),
        ("sqlite+aiosqlite:////abs/b.db", "sqlite+aiosqlite:////abs/b.db"),
        ("postgresql://u:pw@h:5433/db", "postgresql+asyncpg://u:pw@h:5433/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db?ssl=require", "postgresql+asyncpg://u@h/db?ssl=require"),
    ],
)
def test_urls_are_rewritten_to_the_async_drivers(given, expected):
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "not a valid URL"),
        ("mysql://root:hunter2@db/app", "does not support"),
        ("postgresql+psycopg2://root:hunter2@db/app", "does not support"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql://root:hunter2@db", "names no database"),
    ],
)
def test_bad_or_unsupported_urls_are_config_errors_with_the_password_masked(url, says):
    with pytest.raises(ConfigError, match=says) as caught:
        create_engine(url)
    assert "hunter2" not in str(caught.value)


def test_unsupported_url_is_named_in_the_error():
    with pytest.raises(ConfigError) as caught:
        create_engine("mysql://root:hunter2@db/app")
    assert "mysql://root:***@db/app" in str(caught.value)


def test_mask_url_hides_only_the_password():
    assert mask_url("postgresql://bob:s3cr:et@h:1/db") == "postgresql://bob:***@h:1/db"
    assert mask_url("postgresql://bob@h/db") == "postgresql://bob@h/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_missing_driver_is_a_config_error_saying_what_to_install(monkeypatch):
    def no_driver(*args: Any, **kwargs: Any) -> AsyncEngine:
        raise ModuleNotFoundError("No module named 'asyncpg'")

    monkeypatch.setattr(engine_module, "create_async_engine", no_driver)
    with pytest.raises(ConfigError, match=r"bastion-agents\[postgres\]") as caught:
        create_engine("postgresql://bob:hunter2@h/db")
    assert "hunter2" not in str(caught.value)


async def test_sqlite_parent_directory_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "bastion.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
    finally:
        await engine.dispose()
    assert path.is_file()


def test_sqlite_directory_that_cannot_be_created_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the directory"):
        create_engine(f"sqlite:///{blocker}/sub/bastion.db")


async def _pragma(engine: AsyncEngine, name: str) -> Any:
    async with engine.connect() as connection:
        return await connection.scalar(sa.text(f"PRAGMA {name}"))


async def test_every_sqlite_connection_is_tuned(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        # Two connections at once: the second is a new one and must be tuned as well.
        async with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert await connection.scalar(sa.text("PRAGMA journal_mode")) == "wal"
                assert await connection.scalar(sa.text("PRAGMA synchronous")) == 1  # NORMAL
                assert await connection.scalar(sa.text("PRAGMA foreign_keys")) == 1
                assert await connection.scalar(sa.text("PRAGMA busy_timeout")) == 30000
                # The sqlite3 module emits no BEGIN of its own; SQLAlchemy's "begin" hook does.
                pooled = await connection.get_raw_connection()
                assert pooled.dbapi_connection is not None
                assert pooled.dbapi_connection.isolation_level is None
    finally:
        await engine.dispose()
    # WAL is a property of the file, so it stays on for any other program that opens it.
    raw = sqlite3.connect(tmp_path / "b.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


async def test_sqlite_ddl_is_transactional(tmp_path):
    # The sqlite3 module's legacy mode would autocommit the CREATE TABLE; we emit BEGIN ourselves.
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await transaction.rollback()
            tables = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
        assert tables == []
    finally:
        await engine.dispose()


async def test_begin_write_takes_the_sqlite_write_lock_at_once(tmp_path):
    path = tmp_path / "b.db"
    engine = create_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with begin_write(engine):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.execute("ROLLBACK")
        # A plain transaction stays deferred: it holds no lock until it writes.
        async with engine.connect() as connection, connection.begin():
            await connection.exec_driver_sql("SELECT 1")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
        await engine.dispose()


async def test_a_write_cancelled_while_it_begins_gives_its_lock_back(tmp_path):
    # The writer's BEGIN IMMEDIATE waits on the driver's thread for a lock held elsewhere; its
    # caller is cancelled meanwhile. The connection must not be left holding SQLite's write lock
    # (SQLAlchemy invalidates a connection whose statement was cancelled), or every later write
    # would wait out the busy timeout.
    path = tmp_path / "c.db"
    engine = create_engine(f"sqlite:///{path}")
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")

        async def write() -> None:
            async with begin_write(engine):
                pass

        task = asyncio.create_task(write())
        for _ in range(100):  # until the task waits in its BEGIN (its connection is checked out)
            if engine.sync_engine.pool.checkedout():  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)  # noqa: TID251 - a real thread, not logic
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        holder.execute("ROLLBACK")

        def take_the_lock() -> None:
            late = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                late.execute("BEGIN IMMEDIATE")
                late.execute("ROLLBACK")
            finally:
                late.close()

        await asyncio.to_thread(take_the_lock)
    finally:
        holder.close()
        await engine.dispose()


_scratch = sa.MetaData()
_pairs = sa.Table(
    "scratch_pairs",
    _scratch,
    sa.Column("k", sa.String(10), primary_key=True),
    sa.Column("v", sa.String(10), nullable=False),
    sa.Column("w", sa.String(10), nullable=False),
)


async def test_begin_write_commits_and_rolls_back(db_engine):
    async with db_engine.begin() as connection:
        await connection.run_sync(_scratch.create_all)
    async with begin_write(db_engine) as connection:
        await connection.execute(sa.insert(_pairs).values(k="a", v="1", w="1"))

    async def insert_then_fail() -> None:
        async with begin_write(db_engine) as connection:
            await connection.execute(sa.insert(_pairs).values(k="b", v="1", w="1"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await insert_then_fail()
    async with db_engine.connect() as connection:
        assert list(await connection.scalars(sa.select(_pairs.c.k))) == ["a"]


async def test_upsert_inserts_then_updates_every_non_key_column(db_engine):
    async with db_engine.begin() as connection:
        await connection.run_sync(_scratch.create_all)
    async with begin_write(db_engine) as connection:
        await connection.execute(
            upsert(connection, _pairs, {"k": "a", "v": "1", "w": "1"}, keys=["k"])
        )
        await connection.execute(
            upsert(connection, _pairs, {"k": "b", "v": "1", "w": "1"}, keys=["k"])
        )
        await connection.execute(
            upsert(connection, _pairs, {"k": "a", "v": "2", "w": "3"}, keys=["k"])
        )
    async with db_engine.connect() as connection:
        rows = (await connection.execute(sa.select(_pairs).order_by(_pairs.c.k))).all()
    assert [tuple(r) for r in rows] == [("a", "2", "3"), ("b", "1", "1")]


def test_upsert_refuses_other_dialects():
    connection: Any = SimpleNamespace(dialect=SimpleNamespace(name="mysql"))
    with pytest.raises(ConfigError, match="mysql"):
        upsert(connection, _pairs, {"k": "a", "v": "1", "w": "1"}, keys=["k"])


def test_a_sqlite_file_that_cannot_be_opened_is_a_config_error(tmp_path):
    (tmp_path / "taken.db").mkdir()
    with pytest.raises(ConfigError, match="cannot open the SQLite database"):
        create_engine(f"sqlite:///{tmp_path / 'taken.db'}")


def test_create_engine_switches_a_new_sqlite_file_to_wal_before_any_connection(tmp_path):
    path = tmp_path / "b.db"
    create_engine(f"sqlite:///{path}")  # no connection made, so nothing to dispose of
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


class _ScriptedCursor:
    """Answers `PRAGMA journal_mode` with `mode`; the first WAL switch fails as if locked."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.executed: list[str] = []

    def execute(self, sql: str) -> None:
        self.executed.append(sql)
        if sql == "PRAGMA journal_mode=WAL" and self.executed.count(sql) == 1:
            raise sqlite3.OperationalError("database is locked")

    def fetchone(self) -> tuple[str]:
        return (self.mode,)

    def fetchall(self) -> list[tuple[int]]:
        return [(0,)]


@pytest.mark.parametrize(
    ("mode_after_losing", "tries"), [("wal", 1), ("delete", 2)], ids=["switched", "not-switched"]
)
def test_losing_the_race_to_switch_to_wal_is_fine(mode_after_losing, tries):
    cursor = _ScriptedCursor(mode_after_losing)
    engine_module.switch_to_wal(cursor)
    assert cursor.executed.count("PRAGMA journal_mode=WAL") == tries
    assert "PRAGMA journal_mode" in cursor.executed


async def test_a_sqlite_file_uri_is_left_to_sqlite_and_still_tuned(tmp_path):
    path = tmp_path / "by-uri.db"
    engine = create_engine(f"sqlite:///file:{path}?mode=rwc&uri=true")
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(sa.text("PRAGMA journal_mode")) == "wal"
    finally:
        await engine.dispose()
    assert path.is_file()


async def test_a_write_refused_at_once_as_locked_is_tried_again(tmp_path, monkeypatch):
    """SQLite sometimes answers "database is locked" at BEGIN without waiting (a killed process's
    WAL being recovered): the write waits and tries again instead of failing."""
    import sqlalchemy as sa_
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.ext.asyncio import AsyncTransaction

    from bastion.storage.engine import begin_write, create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}")
    refusals = {"left": 2}

    real_start = AsyncTransaction.start

    async def flaky_start(self, is_ctxmanager=False):
        if refusals["left"]:
            refusals["left"] -= 1
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        return await real_start(self, is_ctxmanager)

    monkeypatch.setattr(AsyncTransaction, "start", flaky_start)
    try:
        async with begin_write(engine) as connection:
            assert await connection.scalar(sa_.text("select 1")) == 1
        assert refusals["left"] == 0
        refusals["left"] = 99
        with pytest.raises(OperationalError, match="locked"):
            async with begin_write(engine):
                pass
    finally:
        await engine.dispose()
