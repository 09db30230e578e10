"""What the HTTP API reads from the database: runs (paged by cursor), spend, the audit log.

Writes stay with the components (runs are written by the run itself, through the Memory Manager;
audit entries by the gate). This store reads the same tables through its own engine, opened and
migrated at the server's start, so that reads never queue behind a run's writes on one connection.

Cursor pagination: runs are ordered by ``(created_at, run_id)`` descending, and a cursor is the
last row's pair, URL-safe base64 of JSON; a page never skips nor repeats a run, however many are
created meanwhile (an offset would).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.cost.usage import GroupBy, UsageLine, usage_report
from bastion.gate.audit import AuditFilter, StoredEntry, VerifyReport, verify
from bastion.gate.checkpoints import CheckpointFile, read_checkpoints
from bastion.gate.wiring import GateWiring
from bastion.memory.interface import MemoryManager, RunRecord
from bastion.messages import RunStatus
from bastion.storage.tables import runs


class BadCursor(ValueError):
    """A cursor this server did not hand out."""


def encode_cursor(created_at: datetime, run_id: str) -> str:
    """The cursor after the run created at `created_at` with id `run_id`."""
    raw = json.dumps([created_at.isoformat(), run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, run_id)`` pair of a cursor.

    Raises:
        BadCursor: the cursor is not one of ours.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, run_id = json.loads(raw)
        created_at = datetime.fromisoformat(at)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadCursor(f"cursor {cursor!r} is not valid: pass next_cursor as returned") from exc
    if created_at.tzinfo is None or not isinstance(run_id, str):
        raise BadCursor(f"cursor {cursor!r} is not valid: pass next_cursor as returned")
    return created_at, run_id


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPage:
    """A page of run headers and the cursor of the next page (None on the last)."""

    runs: list[RunRecord]
    next_cursor: str | None


class ServerStore:
    """The API's reads, on its own engine (a whole run is read through the system's memory).

    Args:
        engine: the database the system writes (the settings' ``database_url``), migrated by
            the system's start.
        wiring: the gate's parts on that engine (audit log, key store, audit key).
        memory: the system's Memory Manager (reads a run with its plan, steps and events).
    """

    def __init__(self, *, engine: AsyncEngine, wiring: GateWiring, memory: MemoryManager) -> None:
        self.engine = engine
        self.wiring = wiring
        self._memory = memory

    async def close(self) -> None:
        """Dispose of the engine."""
        await self.engine.dispose()

    async def ping(self) -> None:
        """Run ``SELECT 1`` (raises when the database is unreachable)."""
        async with self.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its plan, steps and events."""
        return await self._memory.get_run(run_id)

    async def run_header(self, run_id: str) -> RunRecord | None:
        """The run's header only."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(sa.select(runs).where(runs.c.run_id == run_id))
            ).one_or_none()
        return None if row is None else _header(row)

    async def list_runs(
        self,
        *,
        user_id: str | None,
        status: RunStatus | None = None,
        session_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Run headers, newest first, after `cursor`.

        Raises:
            BadCursor: `cursor` is not one this store handed out.
        """
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
        if user_id is not None:
            query = query.where(runs.c.user_id == user_id)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if session_id is not None:
            query = query.where(runs.c.session_id == session_id)
        if cursor is not None:
            at, run_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    runs.c.created_at < at,
                    sa.and_(runs.c.created_at == at, runs.c.run_id < run_id),
                )
            )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query.limit(limit + 1))).all()
        records = [_header(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = records[-1] if records and more else None
        return RunPage(
            runs=records,
            next_cursor=None if last is None else encode_cursor(last.created_at, last.run_id),
        )

    async def usage(
        self, *, user_id: str | None, since: datetime | None = None, by: GroupBy = "model"
    ) -> list[UsageLine]:
        """Calls, tokens and spend from the cost ledger, grouped `by` (`bastion.cost.usage`)."""
        return await usage_report(self.engine, user=user_id, since=since, by=by)

    async def audit(self, where: AuditFilter, *, limit: int) -> list[StoredEntry]:
        """The newest `limit` audit entries matching `where`, oldest first."""
        return await self.wiring.audit.query(where, limit=limit)

    async def verify_audit(self) -> tuple[VerifyReport, CheckpointFile | None]:
        """Verify the whole audit chain with the audit key, and the checkpoint file if any.

        As ``bastion audit verify`` does: the checkpoints (kept outside the database) catch a
        cut-off tail or an older copy restored, which the chain alone cannot.
        """
        path = self.wiring.checkpoint_file
        checkpoints = None
        if await asyncio.to_thread(path.exists):
            checkpoints = await asyncio.to_thread(read_checkpoints, path, key=self.wiring.audit_key)
        entries = await self.wiring.audit.read_chain()
        report = verify(
            entries,
            key=self.wiring.audit_key,
            checkpoints=() if checkpoints is None else checkpoints.checkpoints,
        )
        return report, checkpoints


def _header(row: sa.Row[Any]) -> RunRecord:
    m = row._mapping
    return RunRecord(
        run_id=m["run_id"],
        user_id=m["user_id"],
        session_id=m["session_id"],
        request_message=m["request_message"],
        status=RunStatus(m["status"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        answer=m["answer"],
        error=m["error"],
        total_cost_usd=m["total_cost_usd"],
        model=m["model"],
    )
