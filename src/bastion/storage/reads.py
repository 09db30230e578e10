"""`ReadRunner`: a few reads that must agree, written once as one synchronous function.

A run's admission reads the user's facts, the session's summary and recent turns, and its budget
counters. Through the async SQLite driver each statement, each fetch, the ``BEGIN`` and the
connection's return to the pool is a hand-off to the driver's thread and back: about eight for a
one-statement read, measured at several milliseconds a run on a loaded 2-core machine. A
`ReadRunner` runs the whole read as a plain function of a synchronous `sa.Connection`:

* SQLite: on one of the runner's own threads (not the loop's default executor, which a
  library such as DBOS may replace and shut down), in one transaction (``BEGIN``, so every
  statement sees the same snapshot; WAL readers never wait for the writer), over connections of
  its own to the same file, tuned as every connection is
  (`bastion.storage.engine.sync_sqlite_engine`): one hand-off there and one back;
* PostgreSQL: through `AsyncConnection.run_sync` on the event loop (asyncpg is async all the way).

The function must only read. A caller cancelled while its read runs gets `CancelledError` at once;
the read itself finishes on its thread and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from bastion.storage.engine import sync_sqlite_engine

T = TypeVar("T")

#: Threads, and connections, a runner keeps for a SQLite file (reads beyond wait their turn).
THREADS = 2


class ReadRunner:
    """Runs synchronous read transactions against `engine`'s database (see the module docs).

    Args:
        engine: the database.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sync: sa.Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn` in a read transaction and return what it returns.

        Raises:
            Exception: what `fn` raised, or the database's error.
        """
        if self._engine.dialect.name != "sqlite":
            async with self._engine.connect() as connection:
                return await connection.run_sync(fn)
        with self._lock:
            if self._threads is None:
                self._sync = sync_sqlite_engine(
                    self._engine, begin="BEGIN", pool=QueuePool, pool_size=THREADS
                )
                self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="bastion-reads")
            sync, threads = self._sync, self._threads
        assert sync is not None
        return await asyncio.get_running_loop().run_in_executor(threads, _read, sync, fn)

    async def aclose(self) -> None:
        """Stop the runner's threads and close its connections, after the reads under way.

        Safe to repeat; a runner used again starts again.
        """
        with self._lock:
            sync, self._sync = self._sync, None
            threads, self._threads = self._threads, None
        if threads is None or sync is None:
            return
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()

        def stop() -> None:  # on a thread of its own: the loop's default executor may be gone
            try:
                threads.shutdown(wait=True)
                sync.dispose()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_done, stopped)

        stopper = threading.Thread(target=stop, name="bastion-reads-stop", daemon=True)
        stopper.start()
        await stopped
        stopper.join()  # it returns right after handing the result over: a moment at most


def _read(sync: sa.Engine, fn: Callable[[sa.Connection], T]) -> T:
    with sync.connect() as connection, connection.begin():
        return fn(connection)


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
