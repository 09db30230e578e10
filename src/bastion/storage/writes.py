"""`TransactionRunner`: short write transactions, written once as synchronous functions.

The hot write paths (a run's step records and events, its audit entries, the cost ledger around
every model call) are a few small statements each. Through the async SQLite driver every statement
is several hand-offs to the driver's thread and back, which costs far more than SQLite's own work
(measured: ~5 ms for a five-statement transaction on a loaded 2-core machine, against ~0.1 ms for
the same transaction run whole on one thread). So a write is a plain function of a synchronous
SQLAlchemy `Connection`, and the runner runs it:

* SQLite: on the database's **one writer thread** for this process, shared by every runner of the
  same engine, over a connection of its own to the same file (tuned as `bastion.storage.engine`
  tunes every connection, and begun with ``BEGIN IMMEDIATE``). The writer commits in groups:
  the functions queued while it was busy run in one transaction, each inside a savepoint of its
  own (so one that raises is rolled back alone and its caller gets the error), and one commit makes
  them all durable. A function's caller resumes only after that commit, so nothing is acknowledged
  before it is on disk (as far as ``synchronous`` promises). One thread per database also means this
  process's writes never wait on each other's locks (SQLite's busy handler sleeps a millisecond or
  more at a time); other processes still wait on the busy timeout;
* PostgreSQL: through `AsyncConnection.run_sync` inside `begin_write`, on the event loop (the
  asyncpg driver is async all the way: nothing to gain from a thread), one transaction each,
  in a task of its own so that it too completes whatever happens to its caller.

A function may run more than once (a group that SQLite refuses at once as locked is rolled back
and tried again whole): it must only read and write the database.

**Riders** (`Riders`, `RIDERS`): writes that need not be committed at once, only before anything
acts on them, wait in the caller's context and are carried by the next transaction any runner runs
there on the same database (a durable run's checkpoint of a read-only step rides with the run's
own record of that step: one commit instead of two). A transaction that fails gives its riders
back, to be carried by the next one; `TransactionRunner.flush` commits those waiting, after the
transactions carrying others have settled, when the caller is about to act on them.

The writer thread starts with the first write and stops when the last runner of its engine is
closed (`TransactionRunner.aclose`); a runner never closed leaves the thread to end with the
process (it is a daemon thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from bastion.storage.engine import begin_write, sync_sqlite_engine

T = TypeVar("T")

#: How often a group SQLite refuses at once as locked is tried again.
_LOCKED_RETRIES = 12
#: The most functions committed together (bounds a group's transaction and its latency).
MAX_GROUP = 256


Write = Callable[[sa.Connection], Any]


@dataclass(eq=False)
class Riders:
    """Writes waiting to ride along with the next transaction run on `engine`'s database.

    Set one as `RIDERS` in a context: every `TransactionRunner` of the same engine carries the
    waiting riders into the next transaction it runs in that context (each rider runs first, in
    the order added; one that raises fails that transaction, whose caller gets the error). What
    rides may be lost in a crash with everything after it: a rider is for a write nothing outside
    the database acts on until `TransactionRunner.flush` has committed it.
    """

    engine: AsyncEngine
    _waiting: list[Write] = field(default_factory=list)
    #: Transactions under way that carry riders (they are given back if it fails).
    _carried: set[asyncio.Future[Any]] = field(default_factory=set)

    def add(self, write: Write) -> None:
        """Queue `write` for the next transaction on this database in the owner's context."""
        self._waiting.append(write)

    @property
    def waiting(self) -> int:
        """How many riders wait for a transaction."""
        return len(self._waiting)

    async def settle(self) -> None:
        """Wait until no transaction carrying riders is under way (a failed one gave them back)."""
        while self._carried:
            await asyncio.wait(list(self._carried))

    def _board(self, engine: AsyncEngine) -> list[Write]:
        if engine is not self.engine or not self._waiting:
            return []
        taken, self._waiting = self._waiting, []
        return taken

    def _track(self, future: asyncio.Future[Any], taken: list[Write]) -> None:
        self._carried.add(future)

        def settled(done: asyncio.Future[Any]) -> None:
            self._carried.discard(done)
            if done.cancelled() or done.exception() is not None:
                self._waiting[:0] = taken  # rolled back with their transaction: wait again

        future.add_done_callback(settled)


#: The riders of the caller's context, if any (see `Riders`).
RIDERS = contextvars.ContextVar[Riders | None]("bastion_riders", default=None)


def _carrying(
    riders: list[Write], fn: Callable[[sa.Connection], T]
) -> Callable[[sa.Connection], T]:
    def both(connection: sa.Connection) -> T:
        for ride in riders:
            ride(connection)
        return fn(connection)

    return both


def _nothing(_connection: sa.Connection) -> None:
    return None


class TransactionRunner:
    """Runs synchronous write transactions against `engine`'s database (see the module docs).

    Args:
        engine: the database. On SQLite every runner of the same engine shares one writer.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer: _Writer | None = None
        #: PostgreSQL transactions under way (`aclose` waits for them).
        self._in_flight: set[asyncio.Future[Any]] = set()

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run `fn` in a write transaction: committed if it returns, rolled back if it raises.

        The riders waiting in the caller's context (`RIDERS`) for this database run first, in
        the same transaction.

        Raises:
            Exception: what `fn` (or a rider) raised, or the database's error.
        """
        return await self._run(fn, RIDERS.get())

    async def flush(self, riders: Riders) -> None:
        """Commit `riders`: once the transactions carrying some have settled, those waiting.

        When this returns, every rider added before the call is committed.

        Raises:
            Exception: what a rider raised, or the database's error (they wait again).
        """
        await riders.settle()
        if riders.waiting:
            await self._run(_nothing, riders)

    async def _run(self, fn: Callable[[sa.Connection], T], riders: Riders | None) -> T:
        taken = [] if riders is None else riders._board(self._engine)
        if taken:
            fn = _carrying(taken, fn)
        future: asyncio.Future[T]
        if self._engine.dialect.name != "sqlite":
            future = asyncio.ensure_future(self._transact(fn))
            self._in_flight.add(future)
            future.add_done_callback(self._in_flight.discard)
        else:
            if self._writer is None:
                self._writer = _Writer.attach(self._engine)
            job: _Job[T] = _Job(fn, asyncio.get_running_loop())
            self._writer.submit(job)
            future = job.future
        if taken:
            assert riders is not None
            riders._track(future, taken)
        # Shielded: a function handed to the writer (or its own task) is committed or rolled back
        # whatever happens to the caller, and the caller's cancellation still propagates.
        return await asyncio.shield(future)

    async def _transact(self, fn: Callable[[sa.Connection], T]) -> T:
        async with begin_write(self._engine) as connection:
            return await connection.run_sync(fn)

    async def aclose(self) -> None:
        """Wait for the writes under way and let go of the shared writer. Safe to repeat.

        The last runner of an engine to let go stops its writer thread. A runner used again
        after `aclose` attaches to the writer again (and must be closed again).
        """
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.detach()


@dataclass(eq=False)
class _Job(Generic[T]):
    fn: Callable[[sa.Connection], T]
    loop: asyncio.AbstractEventLoop

    def __post_init__(self) -> None:
        self.future: asyncio.Future[T] = self.loop.create_future()


#: A group's per-job savepoint (see `_Writer._commit`).
_SAVEPOINT = "SAVEPOINT bastion_job"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT bastion_job"
_RELEASE = "RELEASE SAVEPOINT bastion_job"

#: Put on a writer's queue to stop its thread once the jobs before it are done.
_STOP = object()


class _Writer:
    """One SQLite database's writer thread in this process, and the runners attached to it."""

    _registry: ClassVar[dict[int, _Writer]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine  # held: its id keys the registry, so it must outlive the entry
        self.users = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sync = sync_sqlite_engine(engine, begin="BEGIN IMMEDIATE", pool=StaticPool)
        #: The writer's one connection, opened on its thread and kept (a checkout per write
        #: would cost more than most writes).
        self._connection: sa.Connection | None = None
        self._thread = threading.Thread(target=self._serve, name="bastion-writes", daemon=True)
        self._thread.start()

    @classmethod
    def attach(cls, engine: AsyncEngine) -> _Writer:
        with cls._registry_lock:
            writer = cls._registry.get(id(engine))
            if writer is None:
                writer = cls._registry[id(engine)] = cls(engine)
            writer.users += 1
            return writer

    async def detach(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            del self._registry[id(self.engine)]
            stopped = asyncio.get_running_loop().create_future()
            self._queue.put((_STOP, stopped.get_loop(), stopped))
        await stopped
        self._thread.join()  # it returns right after stopping: a moment at most

    def submit(self, job: _Job[Any]) -> None:
        self._queue.put(job)

    # -- on the writer thread --------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            group: list[_Job[Any]] = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = next((item for item in group if isinstance(item, tuple)), None)
            jobs = [item for item in group if isinstance(item, _Job)]
            if jobs:
                _deliver(jobs, self._commit(jobs))
            if stop is not None:
                if self._connection is not None:
                    self._connection.close()
                self._sync.dispose()
                _, loop, stopped = stop
                _call_soon(loop, _set_result, stopped, None)
                return

    def _commit(self, jobs: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        """Run `jobs` in one transaction; each one's (ok, result or exception)."""
        if len(jobs) == 1:
            fn = jobs[0].fn
            try:
                return [(True, self._transact(fn))]
            except Exception as exc:
                return [(False, exc)]

        def group(connection: sa.Connection) -> list[tuple[bool, Any]]:
            # Savepoints straight on the cursor: SQLAlchemy's own (`begin_nested`) cost two
            # compiled statements a job, and the functions never make savepoints themselves.
            cursor = connection.connection.cursor()
            outcomes: list[tuple[bool, Any]] = []
            try:
                for job in jobs:
                    cursor.execute(_SAVEPOINT)
                    try:
                        value = job.fn(connection)
                    except Exception as exc:
                        cursor.execute(_ROLLBACK_TO)
                        cursor.execute(_RELEASE)
                        if _locked(exc):
                            raise  # the whole group again (see _transact)
                        outcomes.append((False, exc))
                    else:
                        cursor.execute(_RELEASE)
                        outcomes.append((True, value))
            finally:
                cursor.close()
            return outcomes

        try:
            return self._transact(group)
        except Exception as exc:  # the commit itself failed: nothing of the group was written
            return [(False, exc)] * len(jobs)

    def _transact(self, fn: Callable[[sa.Connection], T]) -> T:
        attempt = 0
        while True:
            try:
                connection = self._connect()
                with connection.begin():
                    return fn(connection)
            except (OperationalError, sqlite3.OperationalError) as exc:
                # As `begin_write`: a few SQLite states refuse a write at once instead of waiting
                # for the busy timeout. The transaction was rolled back: run it again.
                if not _locked(exc) or attempt >= _LOCKED_RETRIES:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt))  # noqa: TID251 - a lock, not logic
                attempt += 1

    def _connect(self) -> sa.Connection:
        if self._connection is None or self._connection.invalidated or self._connection.closed:
            if self._connection is not None:
                self._connection.close()
            self._connection = self._sync.connect()
        return self._connection


# A forked child has none of its parent's threads: it starts its own writers.
os.register_at_fork(after_in_child=_Writer._registry.clear)


def _locked(exc: BaseException) -> bool:
    # The driver's own error where the writer talks to the cursor directly (`BEGIN IMMEDIATE`).
    return isinstance(exc, (OperationalError, sqlite3.OperationalError)) and "locked" in str(exc)


def _deliver(jobs: list[_Job[Any]], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each job's outcome to its loop: one wake-up per loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job[Any], bool, Any]]] = {}
    for job, (ok, value) in zip(jobs, outcomes, strict=True):
        by_loop.setdefault(job.loop, []).append((job, ok, value))
    for loop, items in by_loop.items():
        _call_soon(loop, _settle, items)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    # The caller's loop may be gone (it ended while its write was queued): nobody waits then.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _settle(items: list[tuple[_Job[Any], bool, Any]]) -> None:
    for job, ok, value in items:
        if job.future.done():  # the caller was cancelled; the write stands regardless
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _set_result(future: asyncio.Future[None], value: None) -> None:
    if not future.done():
        future.set_result(value)
