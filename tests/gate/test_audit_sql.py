"""SqlAuditLog on SQLite (a temporary file) and on the real PostgreSQL (a fresh database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.gate.audit import (
    GENESIS_HASH,
    REDACTED,
    InMemoryAuditLog,
    SqlAuditLog,
    verify,
)
from bastion.gate.interface import AuditEntry
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.storage.tables import audit_log

AT = datetime(2026, 3, 1, 12, 0, 0, 500, tzinfo=UTC)


def entry(n: int, **details: object) -> AuditEntry:
    return AuditEntry(
        at=AT + timedelta(seconds=n),
        action="authorize",
        decision="allow" if n % 2 == 0 else "deny",
        principal_id="c1",
        reason=f"reason {n}",
        run_id="run_1",
        tool_name="get_order",
        stage="execute",
        details={"args": {"n": n}, **details},
    )


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Two engines on one fresh, migrated database: two processes' worth of connections.

    `database_url` (tests/conftest.py) runs each test on SQLite and on PostgreSQL.
    """
    engines = [create_engine(database_url) for _ in range(2)]
    try:
        await migrate(engines[0])
        yield engines
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.fixture
def engine(engines: list[AsyncEngine]) -> AsyncEngine:
    return engines[0]


async def test_entries_round_trip_and_chain_like_the_in_memory_log(engine: AsyncEngine) -> None:
    log, memory = SqlAuditLog(engine=engine), InMemoryAuditLog()
    odd = {
        "amount": Decimal("12.50"),
        "big": 1e20,
        "small": 1.5e-7,
        "text": "é ✓ \x00",
        "password": "hunter2",
        "nested": {"list": [1, "2", None, True]},
    }
    for n in range(3):
        await log.append(entry(n, **odd))
        await memory.append(entry(n, **odd))
    stored = await log.read_chain()
    assert stored == await memory.read_chain()
    assert stored[0].prev_hash == GENESIS_HASH
    assert stored[0].entry.details["password"] == REDACTED
    assert stored[0].entry.at == AT
    assert verify(stored) is None


async def test_an_empty_log_reads_empty(engine: AsyncEngine) -> None:
    assert await SqlAuditLog(engine=engine).read_chain() == []


async def test_edited_row_is_detected(engine: AsyncEngine) -> None:
    log = SqlAuditLog(engine=engine)
    for n in range(4):
        await log.append(entry(n))
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(audit_log).where(audit_log.c.reason == "reason 2").values(decision="deny")
        )
    assert verify(await log.read_chain()) == 2


async def test_deleted_row_is_detected(engine: AsyncEngine) -> None:
    log = SqlAuditLog(engine=engine)
    for n in range(4):
        await log.append(entry(n))
    async with engine.begin() as conn:
        await conn.execute(sa.delete(audit_log).where(audit_log.c.reason == "reason 1"))
    assert verify(await log.read_chain()) == 1


async def test_concurrent_appends_never_fork_the_chain(engine: AsyncEngine) -> None:
    log = SqlAuditLog(engine=engine)
    await asyncio.gather(*(log.append(entry(n)) for n in range(30)))
    stored = await log.read_chain()
    assert len(stored) == 30
    assert verify(stored) is None


async def test_two_logs_on_one_database_never_fork_the_chain(engines: list[AsyncEngine]) -> None:
    # Each log has its own lock and engine, as two processes would: the database must serialise.
    first, second = (SqlAuditLog(engine=e) for e in engines)
    await asyncio.gather(
        *(first.append(entry(n)) for n in range(0, 20, 2)),
        *(second.append(entry(n)) for n in range(1, 20, 2)),
    )
    stored = await first.read_chain()
    assert sorted(int(item.entry.reason.split()[1]) for item in stored) == list(range(20))
    assert verify(stored) is None


async def test_a_failed_append_leaves_the_chain_intact(engine: AsyncEngine) -> None:
    log = SqlAuditLog(engine=engine)
    await log.append(entry(0))
    with pytest.raises(ValueError, match="has no timezone"):
        await log.append(
            AuditEntry(
                at=datetime(2026, 1, 1),  # noqa: DTZ001 - naive on purpose
                action="x",
                decision="deny",
                principal_id=None,
            )
        )
    await log.append(entry(1))
    stored = await log.read_chain()
    assert len(stored) == 2
    assert verify(stored) is None
