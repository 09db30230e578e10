"""`TransactionRunner`: one short write transaction, written once as a synchronous function.

Hot write paths (the cost ledger reserves and settles around every model call) are a few small
statements each. Through the async SQLite driver every statement is several hand-offs to the
driver's thread and back, which costs far more than SQLite's own work (measured: ~5 ms for a
five-statement transaction on a loaded 2-core machine, against ~0.1 ms for the same transaction
run whole on one thread). So the transaction is a plain function of a synchronous SQLAlchemy
`Connection`, and the runner runs it:

* SQLite: whole, on a thread of its own, over its own connection to the same file (tuned as
  `bastion.storage.engine` tunes every connection, and begun with ``BEGIN IMMEDIATE``): one
  hand-off per transaction. One thread, so this process's writes through the runner queue in
  order, as SQLite would serialise them anyway; other processes wait on the busy timeout;
* PostgreSQL: through `AsyncConnection.run_sync` inside `begin_write`, on the event loop (the
  asyncpg driver is async all the way: nothing to gain from a thread).

The function may run more than once (a write SQLite refuses at once as locked is retried whole,
the transaction having been rolled back): it must only read and write the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from bastion.storage.engine import SQLITE_PRAGMAS, begin_write

T = TypeVar("T")

#: How often a transaction SQLite refuses at once as locked is tried again.
_LOCKED_RETRIES = 12


class TransactionRunner:
    """Runs synchronous write transactions against `engine`'s database (see the module docs).

    Args:
        engine: the database; for SQLite the runner opens its own connection to the same file.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync: sa.Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-writes")
            self._sync = _sync_sqlite_engine(engine)

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn` in one write transaction: committed if it returns, rolled back if it raises."""
        if self._sync is None or self._thread is None:
            async with begin_write(self._engine) as connection:
                return await connection.run_sync(fn)
        loop = asyncio.get_running_loop()
        # Shielded: a transaction handed to the thread finishes (or rolls back) there whatever
        # happens to the caller, and the caller's cancellation still propagates.
        return await asyncio.shield(loop.run_in_executor(self._thread, self._transact, fn))

    def _transact(self, fn: Callable[[sa.Connection], T]) -> T:
        assert self._sync is not None
        attempt = 0
        while True:
            try:
                with self._sync.begin() as connection:
                    return fn(connection)
            except OperationalError as exc:
                # As `begin_write`: a few SQLite states refuse a write at once instead of waiting
                # for the busy timeout. The transaction was rolled back: run it again.
                if "locked" not in str(exc) or attempt >= _LOCKED_RETRIES:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt))  # noqa: TID251 - a lock, not logic
                attempt += 1

    async def aclose(self) -> None:
        """Close the SQLite connection and stop the thread. Safe to call twice."""
        if self._thread is not None and self._sync is not None:
            sync, thread = self._sync, self._thread
            self._sync, self._thread = None, None
            await asyncio.get_running_loop().run_in_executor(thread, sync.dispose)
            thread.shutdown(wait=False)


def _sync_sqlite_engine(engine: AsyncEngine) -> sa.Engine:
    url = engine.url.set(drivername="sqlite")
    # One connection, made and used on the runner's one thread.
    sync = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})

    @event.listens_for(sync, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, see storage.engine
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
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return sync
