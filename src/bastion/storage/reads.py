"""`ReadRunner`: a few reads that must agree, written once as one synchronous function.

A run's admission reads the user's facts, the session's summary and recent turns, and its budget
counters. Through the async SQLite driver each statement, each fetch, the ``BEGIN`` and the
connection's return to the pool is a hand-off to the driver's thread and back: about eight for a
one-statement read, measured at several milliseconds a run on a loaded 2-core machine. A
`ReadRunner` runs the whole read as a plain function of a synchronous `sa.Connection`:

* SQLite: on a thread of the event loop's default executor, in one transaction (``BEGIN``, so
  every statement sees the same snapshot; WAL readers never wait for the writer), over a small
  pool of connections of its own to the same file, tuned as every connection is
  (`bastion.storage.engine.sync_sqlite_engine`): one hand-off there and one back;
* PostgreSQL: through `AsyncConnection.run_sync` on the event loop (asyncpg is async all the way).

The function must only read. A caller cancelled while its read runs gets `CancelledError` at once;
the read itself finishes on its thread and its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from bastion.storage.engine import sync_sqlite_engine

T = TypeVar("T")

#: Connections a runner keeps to a SQLite file (reads beyond these wait for one to be free).
POOL_SIZE = 4


class ReadRunner:
    """Runs synchronous read transactions against `engine`'s database (see the module docs).

    Args:
        engine: the database.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync: sa.Engine | None = None
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn` in a read transaction and return what it returns.

        Raises:
            Exception: what `fn` raised, or the database's error.
        """
        if self._engine.dialect.name != "sqlite":
            async with self._engine.connect() as connection:
                return await connection.run_sync(fn)
        return await asyncio.get_running_loop().run_in_executor(None, self._read, fn)

    def _read(self, fn: Callable[[sa.Connection], T]) -> T:
        with self._connect() as connection, connection.begin():
            return fn(connection)

    def _connect(self) -> sa.Connection:
        with self._lock:
            if self._sync is None:
                self._sync = sync_sqlite_engine(
                    self._engine, begin="BEGIN", pool=QueuePool, pool_size=POOL_SIZE
                )
            return self._sync.connect()

    async def aclose(self) -> None:
        """Close the runner's connections. Safe to repeat; a runner used again reconnects."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.dispose()
