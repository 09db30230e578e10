"""Which durable processes are alive, and who finishes the runs of one that died for good.

DBOS without its (proprietary) Conductor recovers, at launch, only the runs tagged with the
launching process's executor id; two processes sharing an id would re-run each other's in-flight
steps. So every durable process registers here under a unique executor id and heartbeats; a
second live process asking for an id in use is refused; and a worker that finds a process whose
heartbeat is older than ``takeover_after_s`` claims it (one claimant wins, by a conditional
update) and re-enqueues its unfinished runs, which DBOS's queue then hands to exactly one runner.

Two guards keep a live process from being taken for dead. A process that has just registered is
given ``startup_grace_s`` to launch DBOS before its first beat (a slow start is not a death). And
a process whose beat came late anyway (a stalled machine) learns at its next beat that its runs
were taken over, and stops (`DurableEngine.beat`), so that no run goes on in two places; since
that beat is newer than the takeover, the runs it took meanwhile are claimable again if it dies.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.storage.engine import begin_write, upsert
from bastion.storage.tables import workers


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host.

    A worker killed -9 leaves a fresh heartbeat behind: on its own host, its restart need not wait
    for that heartbeat to age.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def auto_executor_id() -> str:
    """A fresh id for a process that was given none: host, pid and a random suffix."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    """A registered process."""

    executor_id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    taken_over_by: str | None


class WorkerRegistry:
    """This process's row in the ``workers`` table, and the takeover of dead ones."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        executor_id: str,
        takeover_after_s: float,
        startup_grace_s: float = 60.0,
    ) -> None:
        self.executor_id = executor_id
        self._engine = engine
        self._clock = clock
        self._stale = timedelta(seconds=takeover_after_s)
        # A process beats only once DBOS has launched (seconds, on a loaded machine): until then
        # its registration alone vouches for it.
        self._grace = timedelta(seconds=startup_grace_s)
        self._host = socket.gethostname()[:255]
        self._pid = os.getpid()

    async def register(self) -> None:
        """Claim this executor id for this process.

        Raises:
            ConfigError: another live process (fresh heartbeat, not stopped) holds the id.
        """
        now = self._clock.now()
        async with begin_write(self._engine) as connection:
            row = (
                await connection.execute(
                    sa.select(workers).where(workers.c.executor_id == self.executor_id)
                )
            ).one_or_none()
            if (
                row is not None
                and row.stopped_at is None
                and now - row.heartbeat_at < self._stale
                and (row.host, row.pid) != (self._host, self._pid)
                and not (row.host == self._host and not _pid_alive(row.pid))
            ):
                raise ConfigError(
                    f"executor id {self.executor_id!r} is in use by a live process (pid {row.pid} "
                    f"on {row.host}, last heartbeat {row.heartbeat_at:%H:%M:%S}): give this "
                    "worker another --id, or stop that one first"
                )
            await connection.execute(
                upsert(
                    connection,
                    workers,
                    {
                        "executor_id": self.executor_id,
                        "host": self._host,
                        "pid": self._pid,
                        "started_at": now,
                        "heartbeat_at": now,
                        "stopped_at": None,
                        "taken_over_by": None,
                        "taken_over_at": None,
                    },
                    keys=("executor_id",),
                )
            )

    async def heartbeat(self) -> str | None:
        """Say this process is alive; return who took its runs over meanwhile, if anyone did.

        A process whose heartbeat came late (a stalled machine, a long pause) may have been
        presumed dead and its unfinished runs handed to another worker while it still runs
        them: the caller must then stop (the engine exits the process; see `DurableEngine`).
        The beat is written anyway, so that if this process dies later, its newer runs are
        taken over again (`dead` counts a beat after a takeover as a new life).
        """
        async with begin_write(self._engine) as connection:
            await connection.execute(
                sa.update(workers)
                .where(workers.c.executor_id == self.executor_id)
                .values(heartbeat_at=self._clock.now())
            )
            taker: str | None = await connection.scalar(
                sa.select(workers.c.taken_over_by).where(workers.c.executor_id == self.executor_id)
            )
            return taker

    async def stop(self) -> None:
        """Say this process stopped (its unfinished runs are taken over after the timeout)."""
        async with begin_write(self._engine) as connection:
            await connection.execute(
                sa.update(workers)
                .where(workers.c.executor_id == self.executor_id)
                .values(stopped_at=self._clock.now())
            )

    async def dead(self) -> list[str]:
        """Executor ids whose heartbeat is stale and whose runs nobody has taken over yet."""
        now = self._clock.now()
        async with self._engine.connect() as connection:
            found = await connection.scalars(
                sa.select(workers.c.executor_id)
                .where(workers.c.heartbeat_at < now - self._stale)
                .where(workers.c.started_at < now - self._grace)
                .where(_not_taken_over_since_last_beat())
                .where(workers.c.executor_id != self.executor_id)
                .order_by(workers.c.heartbeat_at)
            )
            return list(found)

    async def claim(self, executor_id: str) -> bool:
        """Take over a dead executor; True for exactly one of several processes claiming it."""
        now = self._clock.now()
        async with begin_write(self._engine) as connection:
            result = await connection.execute(
                sa.update(workers)
                .where(workers.c.executor_id == executor_id)
                .where(_not_taken_over_since_last_beat())
                .where(workers.c.heartbeat_at < now - self._stale)
                .where(workers.c.started_at < now - self._grace)
                .values(taken_over_by=self.executor_id, taken_over_at=now)
            )
            return bool(result.rowcount == 1)

    async def all(self) -> list[WorkerInfo]:
        """Every registered process, most recent heartbeat first."""
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                sa.select(workers).order_by(workers.c.heartbeat_at.desc())
            )
            return [
                WorkerInfo(
                    executor_id=r.executor_id,
                    host=r.host,
                    pid=r.pid,
                    started_at=r.started_at,
                    heartbeat_at=r.heartbeat_at,
                    stopped_at=r.stopped_at,
                    taken_over_by=r.taken_over_by,
                )
                for r in rows
            ]


def _not_taken_over_since_last_beat() -> sa.ColumnElement[bool]:
    """Never taken over, or alive again after its takeover (it beat since): claimable once more."""
    return sa.or_(
        workers.c.taken_over_by.is_(None), workers.c.heartbeat_at > workers.c.taken_over_at
    )
