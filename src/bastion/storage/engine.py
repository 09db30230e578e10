"""Connecting to Bastion's database, and the few places where SQLite and PostgreSQL differ.

Every store (memory, audit, ledger, approvals) shares one `AsyncEngine` made here, so the SQLite
tuning and the URL rules live in one place:

* a URL is checked and rewritten to an async driver once, at start (`create_engine`); a bad one
  is a `ConfigError` naming it, password masked;
* SQLite gets WAL (readers never block the writer; switched on once when the engine is made,
  before its pool opens a connection), ``synchronous=NORMAL`` (durable at each checkpoint, safe
  with WAL), foreign keys and a busy timeout on every new connection; and
  SQLAlchemy, not the ``sqlite3`` module, emits ``BEGIN``, because the module's legacy mode
  autocommits DDL and never begins a transaction for a ``SELECT``: migrations would not be atomic
  and reads would not see one snapshot;
* `begin_write` opens a transaction that takes SQLite's write lock at once (``BEGIN IMMEDIATE``):
  a deferred transaction that reads and then writes can fail with "database is locked" instead of
  waiting for the busy timeout, when another connection wrote in between;
* `upsert` builds ``INSERT ... ON CONFLICT DO UPDATE`` with the dialect's own construct (both
  backends speak it, but SQLAlchemy has no portable spelling).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

from bastion.errors import ConfigError
from bastion.storage.statements import Statement

SQLITE_DRIVER = "sqlite+aiosqlite"
POSTGRES_DRIVER = "postgresql+asyncpg"

_DRIVERS = {
    "sqlite": SQLITE_DRIVER,
    SQLITE_DRIVER: SQLITE_DRIVER,
    "postgresql": POSTGRES_DRIVER,
    "postgres": POSTGRES_DRIVER,
    POSTGRES_DRIVER: POSTGRES_DRIVER,
}

_WAL = "PRAGMA journal_mode=WAL"

#: Applied to every new SQLite connection; see the module docstring for why each.
#: The busy timeout comes first so that switching the journal to WAL, which needs a lock, waits
#: for another connection instead of failing.
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=30000",
    _WAL,
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


# The execution option `begin_write` sets; the "begin" hook reads it to choose the BEGIN mode.
_BEGIN_MODE = "bastion_sqlite_begin"

_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def mask_url(url: str) -> str:
    """`url` with its password replaced by ``***`` (for messages and logs)."""
    return _PASSWORD.sub(r"\1***@", url)


def normalize_url(url: str) -> URL:
    """Parse `url` and rewrite it to the async driver Bastion uses for its backend.

    ``sqlite:///`` becomes ``sqlite+aiosqlite:///``; ``postgresql://`` and ``postgres://`` become
    ``postgresql+asyncpg://``.

    Raises:
        ConfigError: the URL does not parse, names another database or driver, or is an in-memory
            SQLite database (each pooled connection would get its own empty database).
    """
    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"database URL {shown!r} is not a valid URL: use e.g. 'sqlite:///path/to/bastion.db' "
            "or 'postgresql://user@host/dbname'"
        ) from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"database URL {shown!r} uses {parsed.drivername!r}, which Bastion does not support: "
            f"use '{SQLITE_DRIVER}' (or 'sqlite') or '{POSTGRES_DRIVER}' (or 'postgresql')"
        )
    parsed = parsed.set(drivername=driver)
    if driver == SQLITE_DRIVER and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"database URL {shown!r} is an in-memory SQLite database, which Bastion does not "
            "support (each pooled connection would see its own empty database): give a file path"
        )
    if driver == POSTGRES_DRIVER and not parsed.database:
        raise ConfigError(f"database URL {shown!r} names no database: add '/dbname' to it")
    return parsed


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url` (SQLite or PostgreSQL), tuned for Bastion.

    For SQLite, the file (and its directory) is created if missing and switched to WAL, here and
    now: a bad path fails at start rather than at the first query.

    Raises:
        ConfigError: the URL is bad or unsupported, the SQLite file cannot be created or opened, or
            the PostgreSQL driver is not installed.
    """
    parsed = normalize_url(url)
    if parsed.drivername == SQLITE_DRIVER:
        _prepare_sqlite_file(parsed, url)
    try:
        # A server connection can die while pooled (restart, idle timeout); a SQLite file cannot.
        engine = create_async_engine(parsed, pool_pre_ping=parsed.drivername == POSTGRES_DRIVER)
    except (ModuleNotFoundError, NoSuchModuleError) as exc:
        raise ConfigError(
            f"cannot open {mask_url(url)!r}: its driver is not installed ({exc}); for PostgreSQL "
            "install the extra: pip install 'bastion-agents[postgres]'"
        ) from exc
    if parsed.drivername == SQLITE_DRIVER:
        _tune_sqlite(engine)
    return engine


def _prepare_sqlite_file(parsed: URL, url: str) -> None:
    """Create the file's directory, and switch the file to WAL before any pool connects to it.

    Switching needs a moment alone with the file; done here, once, the pool's connections find WAL
    already on and never meet a file half in the old rollback-journal mode.
    """
    if parsed.query.get("uri"):
        return  # a "file:" URI: SQLite resolves it, there is no plain path to prepare
    assert parsed.database is not None  # normalize_url refuses a URL without one
    path = Path(parsed.database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the directory {str(path.parent)!r} for database {mask_url(url)!r}: "
            f"{exc}"
        ) from exc
    try:
        connection = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        try:
            switch_to_wal(connection.cursor())
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the SQLite database {str(path)!r}: {exc}") from exc


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (see the module docstring); with it gone, the
        # pragmas below also run outside any transaction, which journal_mode=WAL requires.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                if pragma == _WAL:
                    switch_to_wal(cursor)
                else:
                    cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_MODE, "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def switch_to_wal(cursor: Any) -> None:
    """Switch a SQLite file to WAL through `cursor`, also when other connections race to do it."""
    try:
        cursor.execute(_WAL)
    except sqlite3.OperationalError:
        # Several connections switching a new file to WAL at once: the losers get "database is
        # locked" at once, as SQLite calls no busy handler there. A read (which does wait, and
        # refreshes this connection's view of the file) shows whether a winner switched it; if
        # none did, one more try, now that the others are done.
        cursor.execute("SELECT count(*) FROM sqlite_master")
        cursor.fetchall()
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() != "wal":
            cursor.execute(_WAL)


#: How often a write transaction that SQLite refuses at once as locked is tried again (~15 s).
_BEGIN_RETRIES = 12


@asynccontextmanager
async def begin_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for writes: committed on exit, rolled back on an exception.

    On SQLite it begins with ``BEGIN IMMEDIATE``, taking the database's write lock at once (waiting
    up to the busy timeout for another writer), so a read-then-write transaction cannot fail
    half-way on a lock. On PostgreSQL it is an ordinary transaction.
    """
    attempt = 0
    while True:
        connection = await engine.connect()
        try:
            if engine.dialect.name == "sqlite":
                await connection.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
            transaction = connection.begin()
            await transaction.start()
        except OperationalError as exc:
            await connection.close()
            # SQLite answers "database is locked" at once, without waiting for the busy timeout,
            # in a few states (a WAL left by a killed process being recovered, a checkpoint under
            # way): wait and try again rather than fail the write. Nothing was done yet.
            if "locked" not in str(exc) or attempt >= _BEGIN_RETRIES:
                raise
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))  # noqa: TID251 - a lock, not logic
            attempt += 1
            continue
        break
    try:
        try:
            yield connection
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
    finally:
        await connection.close()


def insert_ignore(
    connection: AsyncConnection | sa.Connection, table: sa.Table, *, keys: Sequence[str]
) -> sa.Insert:
    """``INSERT`` into `table`, silently keeping the row already there when `keys` match.

    Used where a durable replay may write the same row again (events of a replayed run): the first
    write wins and nothing is duplicated. Execute with the rows as parameters.

    Raises:
        ConfigError: `connection` is neither SQLite nor PostgreSQL.
    """
    name = connection.dialect.name
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    raise ConfigError(f"insert_ignore is not implemented for the {name!r} dialect")


@functools.cache
def upsert_statement(
    table: sa.Table, columns: tuple[str, ...], *, keys: tuple[str, ...]
) -> Statement:
    """`upsert` for rows of `columns`, built once: ``.execute(connection, row)`` it.

    Written as SQL text with typed parameters because SQLAlchemy cannot cache the compiled form
    of its dialect-specific ``ON CONFLICT`` constructs (they recompile on every execution, about
    a quarter of a millisecond each); a `Statement` compiles it once and, on SQLite, runs it
    straight on the cursor. SQLite (3.24+) and PostgreSQL read the same text.
    """
    updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns if c not in keys)
    return _insert_on_conflict(table, columns, keys, f"DO UPDATE SET {updates}")


@functools.cache
def insert_ignore_statement(
    table: sa.Table, columns: tuple[str, ...], *, keys: tuple[str, ...]
) -> Statement:
    """`insert_ignore` for rows of `columns`, built once and cached (see `upsert_statement`).

    ``.execute(connection, rows)`` it.
    """
    return _insert_on_conflict(table, columns, keys, "DO NOTHING")


@functools.cache
def insert_statement(table: sa.Table, columns: tuple[str, ...]) -> Statement:
    """A plain ``INSERT`` of rows of `columns` into `table`, built once: ``.execute`` it."""
    return Statement(_insert_text(table, columns, ""))


@functools.cache
def update_statement(
    table: sa.Table, columns: tuple[str, ...], *, keys: tuple[str, ...]
) -> Statement:
    """``UPDATE`` `columns` of the rows of `table` whose `keys` match, built once.

    ``.execute(connection, params)`` it: the new values under the columns' names, the keys' values
    under ``k_`` and the key's name (``{"status": ..., "k_run_id": ...}``); it returns the number
    of rows changed.
    """
    if not columns or not keys:
        raise ValueError("an update needs at least one column and one key")
    sets = ", ".join(f"{_quote(c)} = :{c}" for c in columns)
    where = " AND ".join(f"{_quote(k)} = :k_{k}" for k in keys)
    sql = f"UPDATE {_quote(table.name)} SET {sets} WHERE {where}"
    binds = [sa.bindparam(c, type_=table.c[c].type) for c in columns]
    binds += [sa.bindparam(f"k_{k}", type_=table.c[k].type) for k in keys]
    return Statement(sa.text(sql).bindparams(*binds))


def _insert_on_conflict(
    table: sa.Table, columns: tuple[str, ...], keys: tuple[str, ...], action: str
) -> Statement:
    conflict = ", ".join(_quote(k) for k in keys)
    return Statement(_insert_text(table, columns, f" ON CONFLICT ({conflict}) {action}"))


def _insert_text(table: sa.Table, columns: tuple[str, ...], tail: str) -> sa.TextClause:
    names = ", ".join(_quote(c) for c in columns)
    values = ", ".join(f":{c}" for c in columns)
    sql = f"INSERT INTO {_quote(table.name)} ({names}) VALUES ({values}){tail}"
    return sa.text(sql).bindparams(*(sa.bindparam(c, type_=table.c[c].type) for c in columns))


def _quote(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def upsert(
    connection: AsyncConnection | sa.Connection,
    table: sa.Table,
    row: Mapping[str, Any],
    *,
    keys: Sequence[str],
) -> sa.TextClause:
    """``INSERT`` `row` into `table`, or, where its `keys` match a row already there, update that.

    Every column of `row` that is not one of `keys` is overwritten. Execute it on SQLite or
    PostgreSQL (both read the same statement, see `upsert_statement`).

    Raises:
        ConfigError: `connection` is neither SQLite nor PostgreSQL.
    """
    if connection.dialect.name not in ("sqlite", "postgresql"):
        raise ConfigError(f"upsert is not implemented for the {connection.dialect.name!r} dialect")
    return upsert_statement(table, tuple(row), keys=tuple(keys)).clause.bindparams(**row)


def sync_sqlite_engine(
    engine: AsyncEngine, *, begin: str, pool: type[Pool], **pool_options: int
) -> sa.Engine:
    """A synchronous engine on `engine`'s SQLite file, its connections tuned as `engine`'s are.

    For work done whole on a thread of its own (`bastion.storage.writes`,
    `bastion.storage.reads`): one hand-off to that thread instead of one per statement.

    Args:
        engine: the async engine (a SQLite one).
        begin: the statement that begins its transactions (``"BEGIN IMMEDIATE"`` for writes,
            ``"BEGIN"`` for reads that must see one snapshot).
        pool: its pool class (`StaticPool`: one connection; `QueuePool`: a few).
        pool_options: passed to `sa.create_engine` (``pool_size``, ``max_overflow``).
    """
    url = engine.url.set(drivername="sqlite")
    sync = sa.create_engine(
        url, poolclass=pool, connect_args={"check_same_thread": False}, **pool_options
    )

    @event.listens_for(sync, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (module docstring)
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                # Only the switch to WAL can fail (locked); `create_engine` switched the file
                # to WAL when the async engine was made, so it is on already.
                with contextlib.suppress(sqlite3.OperationalError):
                    cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(sync, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Straight on the cursor (a statement through SQLAlchemy costs far more).
        cursor = connection.connection.cursor()
        try:
            cursor.execute(begin)
        finally:
            cursor.close()

    return sync
