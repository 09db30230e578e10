"""Real processes on one audit log: two appending at once never fork it; one killed mid-append
leaves no partial entry. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.gate.audit import SqlAuditLog, verify
from bastion.gate.interface import AuditEntry
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate

WRITER = Path(__file__).with_name("audit_writer.py")
KEY = b"p" * 32
_TIMEOUT_S = 60


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


async def writer(url: str, count: int, tag: str, *extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        url,
        KEY.hex(),
        str(count),
        tag,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def test_two_processes_appending_at_once_never_fork_the_chain(database_url, engine):
    count = 40
    procs = [await writer(database_url, count, tag) for tag in ("first", "second")]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), _TIMEOUT_S)
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    stored = await SqlAuditLog(engine=engine, key=KEY).read_chain()
    assert [r.seq for r in stored] == list(range(2 * count))
    reasons = [r.entry().reason for r in stored]
    for tag in ("first", "second"):
        assert [r for r in reasons if r.startswith(tag)] == [f"{tag} {n}" for n in range(count)]
    assert verify(stored, key=KEY).ok


async def test_a_process_killed_mid_append_leaves_no_partial_entry(database_url, engine):
    proc = await writer(database_url, 10, "doomed", "5")
    assert proc.stdout is not None
    lines = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), _TIMEOUT_S)).decode().strip()
        assert line, (await proc.stderr.read()).decode() if proc.stderr else "writer died"
        lines.append(line)
        if line == "inserted":  # entry 5's row is in, its transaction not committed
            break
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert lines == [*(f"appended {n}" for n in range(5)), "inserted"]

    log = SqlAuditLog(engine=engine, key=KEY)
    stored = await log.read_chain()
    assert [r.entry().reason for r in stored] == [f"doomed {n}" for n in range(5)]
    assert verify(stored, key=KEY).ok
    # The lock died with the process: the next append takes position 5 and the chain holds.
    await log.append(
        AuditEntry(
            at=datetime(2026, 3, 2, tzinfo=UTC), action="x", decision="allow", principal_id=None
        )
    )
    after = await log.read_chain()
    assert [r.seq for r in after] == list(range(6))
    assert verify(after, key=KEY).ok
