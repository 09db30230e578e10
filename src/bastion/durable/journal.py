"""`Journal`: the checkpoints of a durable run's steps, in Bastion's own database.

A durable run is a DBOS workflow (DBOS starts it, recovers it after a crash, queues it, hands it
to another worker, delivers its messages and records how it ended), but its *steps* are not DBOS
steps: each checkpoint is one row of ``durable_steps``, written through the database's writer
with Bastion's other writes (`bastion.storage.writes`).

Why not DBOS's steps (a departure from DESIGN.md, issue 4): a DBOS step costs two transactions on
DBOS's system database, handed to DBOS's thread pool, with statements DBOS builds and compiles on
every call: measured alone at 2.7 ms of CPU a step on the 2-core machine (``bench/RESULTS.md``),
more than the whole per-step budget (1 ms). A journal row is one insert, and most ride along
(`bastion.storage.writes.Riders`) with the transaction that records what the step did for the
run (its step record, its spend): one commit a step instead of two or three. DBOS's guarantees
are kept:

* a recovered run replays: the workflow body runs again from the top and each step already
  journaled returns its recorded output instead of running again (`Execution.replay`);
* a step is matched by its position in the run's sequence of steps *and* its name, so a replay
  that would take another path stops with `ReplayMismatch` instead of mixing outputs;
* one writer per step: the key (run, position) takes the first write; an execution that finds its
  step already written by another execution (a worker presumed dead that still runs) stops with
  `RunTakenOver` and never acts on an output that is not the recorded one (it is a
  `bastion.errors.Superseded`: the run loop records nothing more of the run and lets it through,
  so the run is the other execution's to finish);
* a run cancelled from another process stops at its next step (its DBOS status is checked at a
  step at most every `CANCEL_CHECK_S`, and before every step with side effects).

When a checkpoint commits (`bastion.durable.steps.Execution.run`): a step with side effects, and
the intent before it, are committed before the run goes on, with every checkpoint before them
(nothing acts on a step's output outside the database before it is durable). A read-only step's
checkpoint (a model call, a lookup, a gate decision) rides with the run's next write, so it is
committed with the run's own record of what the step did, or before a side effect, a wait for a
message, a durable sleep or the run's end, whichever comes first. A crash before then loses the
step with that record: recovery runs it again, as it would a step that crashed before its
checkpoint (a model call may then be paid twice: the same is true of a crash during the call).

A checkpoint holds what the run needs to go on after a crash, which includes what a model planned
(arguments a user gave it, an account number, a token): outputs are sealed with AES-256-GCM under
a key derived from the server secret (`bastion.gate.secret.CHECKPOINTS_PURPOSE`), bound
to their run, position and name (a row copied elsewhere does not open), so a database dump or
backup shows no step's data. (DBOS's own checkpoints used to hold them in clear.)
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.errors import BastionError, Superseded
from bastion.storage.engine import insert_ignore_statement
from bastion.storage.reads import ReadRunner
from bastion.storage.tables import durable_steps
from bastion.storage.writes import Riders, TransactionRunner, Write

#: Sealed outputs start with this (the format's version).
_SEALED = "v1."

_COLUMNS = ("run_id", "seq", "name", "execution", "output", "started_ms", "completed_ms")
_INSERT = insert_ignore_statement(durable_steps, _COLUMNS, keys=("run_id", "seq"))


class ReplayMismatch(BastionError):
    """A recovered run took another path than the execution that journaled its steps."""

    user_message = (
        "This request could not be resumed after a restart: the agent's code changed the order of "
        "its steps. An operator can see it with `bastion runs show`."
    )


class CheckpointUnreadable(BastionError):
    """A checkpoint does not open under this process's key."""

    user_message = (
        "This request could not be resumed: its saved progress cannot be read with this "
        "server's secret."
    )


class RunTakenOver(Superseded):
    """Another execution of the run wrote the step this one was about to write."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled step: its position, name, output (JSON data) and timing (epoch ms)."""

    seq: int
    name: str
    execution: str
    output: Any
    started_ms: int
    completed_ms: int


class Journal:
    """Reads and writes the step journal of `engine`'s database (see the module docs).

    Args:
        engine: Bastion's database.
        key: 32 bytes that seal the outputs; without it, only what needs no output works
            (`steps`, `forget`).
    """

    def __init__(self, engine: AsyncEngine, *, key: bytes | None = None) -> None:
        self.engine = engine
        self._writes = TransactionRunner(engine)
        self._reads = ReadRunner(engine)
        self._aead = None if key is None else AESGCM(key)

    def _seal(self, run_id: str, entry: Entry) -> str:
        aead = self._require_key()
        nonce = os.urandom(12)
        data = json.dumps(entry.output, separators=(",", ":"), ensure_ascii=False).encode()
        sealed = aead.encrypt(nonce, data, _bound(run_id, entry.seq, entry.name))
        return _SEALED + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def _open(self, run_id: str, seq: int, name: str, text: str) -> Any:
        aead = self._require_key()
        try:
            if not text.startswith(_SEALED):
                raise ValueError("not a sealed checkpoint")
            raw = base64.urlsafe_b64decode(text[len(_SEALED) :])
            data = aead.decrypt(raw[:12], raw[12:], _bound(run_id, seq, name))
        except (InvalidTag, ValueError) as exc:
            raise CheckpointUnreadable(
                f"checkpoint {seq} ({name}) of run {run_id} does not open with this server's "
                "secret: it was written under another secret (BASTION_GATE__SECRET or the "
                "gate.secret file), or altered"
            ) from exc
        return json.loads(data)

    def _require_key(self) -> AESGCM:
        if self._aead is None:
            raise RuntimeError("this Journal was opened without the checkpoint key")
        return self._aead

    async def load(self, run_id: str) -> dict[int, Entry]:
        """The steps journaled for `run_id` so far, by position.

        Raises:
            CheckpointUnreadable: a checkpoint does not open under this journal's key.
        """

        def read(connection: sa.Connection) -> dict[int, Entry]:
            rows = connection.execute(
                sa.select(
                    durable_steps.c.seq,
                    durable_steps.c.name,
                    durable_steps.c.execution,
                    durable_steps.c.output,
                    durable_steps.c.started_ms,
                    durable_steps.c.completed_ms,
                ).where(durable_steps.c.run_id == run_id)
            )
            return {
                int(seq): Entry(
                    int(seq),
                    name,
                    execution,
                    self._open(run_id, int(seq), name, output),
                    int(s),
                    int(c),
                )
                for seq, name, execution, output, s, c in rows
            }

        return await self._reads.run(read)

    async def record(self, run_id: str, entry: Entry) -> None:
        """Write `entry` once; committed when this returns.

        Raises:
            RunTakenOver: another execution of the run wrote this step first.
        """
        await self._writes.run(self.write(run_id, entry))

    def write(self, run_id: str, entry: Entry) -> Write:
        """The write of `entry` (sealed now), to run in a transaction (a rider: see `Riders`).

        The write raises `RunTakenOver` if another execution of the run wrote this step first
        (the transaction is then rolled back, with whatever else it held).
        """
        row = {
            "run_id": run_id,
            "seq": entry.seq,
            "name": entry.name,
            "execution": entry.execution,
            "output": self._seal(run_id, entry),
            "started_ms": entry.started_ms,
            "completed_ms": entry.completed_ms,
        }

        def write(connection: sa.Connection) -> None:
            if _INSERT.execute(connection, row) == 1:
                return
            # Written already: by this execution (a write retried after its commit was lost on
            # the way back) or by another one.
            found: str = connection.execute(
                sa.select(durable_steps.c.execution).where(
                    durable_steps.c.run_id == run_id, durable_steps.c.seq == entry.seq
                )
            ).scalar_one()
            if found != entry.execution:
                raise RunTakenOver(
                    f"step {entry.seq} ({entry.name}) of run {run_id} was checkpointed by another "
                    "execution of the run (another worker took it over): this one stops"
                )

        return write

    async def flush(self, riders: Riders) -> None:
        """Commit the checkpoints riding in `riders` (see `Riders`); done when this returns.

        Raises:
            RunTakenOver: another execution of the run wrote one of them first.
        """
        await self._writes.flush(riders)

    async def steps(self, run_id: str) -> list[Entry]:
        """The run's journaled steps, in order, without their outputs (``None``)."""

        def read(connection: sa.Connection) -> list[Entry]:
            rows = connection.execute(
                sa.select(
                    durable_steps.c.seq,
                    durable_steps.c.name,
                    durable_steps.c.execution,
                    durable_steps.c.started_ms,
                    durable_steps.c.completed_ms,
                )
                .where(durable_steps.c.run_id == run_id)
                .order_by(durable_steps.c.seq)
            )
            return [
                Entry(int(q), name, execution, None, int(s), int(c))
                for q, name, execution, s, c in rows
            ]

        return await self._reads.run(read)

    async def forget(self, run_ids: Sequence[str]) -> int:
        """Delete the journal of `run_ids`; returns how many steps were deleted."""
        if not run_ids:
            return 0
        wanted = sorted(set(run_ids))

        def delete(connection: sa.Connection) -> int:
            result = connection.execute(
                sa.delete(durable_steps).where(durable_steps.c.run_id.in_(wanted))
            )
            return int(result.rowcount or 0)

        return await self._writes.run(delete)

    async def aclose(self) -> None:
        """Let go of the writer and the read threads. Safe to repeat."""
        try:
            await self._writes.aclose()
        finally:
            await self._reads.aclose()


def _bound(run_id: str, seq: int, name: str) -> bytes:
    """What a sealed output is bound to: its run, position and name."""
    return f"{run_id}\x00{seq}\x00{name}".encode()


__all__ = [
    "CheckpointUnreadable",
    "Entry",
    "Journal",
    "ReplayMismatch",
    "RunTakenOver",
]
