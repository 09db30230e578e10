"""SqlAuditLog on SQLite (a temporary file) and on the real PostgreSQL (a fresh database).

Each tamper class is done the way an intruder with write access to the database would do it: with
SQL on the ``audit_entries`` table, never through Bastion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.gate.audit import (
    GENESIS,
    AuditFilter,
    InMemoryAuditLog,
    SqlAuditLog,
    appended_together,
    canonical_body,
    seal,
    verify,
)
from bastion.gate.checkpoints import Checkpoint, read_checkpoints
from bastion.gate.interface import AuditEntry
from bastion.gate.redact import REDACTED
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.storage.tables import audit_entries
from bastion.testing.clock import FakeClock

AT = datetime(2026, 3, 1, 12, 0, 0, 500, tzinfo=UTC)
KEY = b"s" * 32


def entry(n: int, **details: object) -> AuditEntry:
    return AuditEntry(
        at=AT + timedelta(seconds=n),
        action="authorize",
        decision="allow" if n % 2 == 0 else "deny",
        principal_id=f"c{n % 3}",
        reason=f"reason {n}",
        run_id=f"run_{n % 2}",
        tool_name="get_order" if n % 4 else "refund",
        stage="execute",
        details={"args": {"n": n}, **details},
    )


@pytest.fixture
async def engines(database_url: str) -> AsyncIterator[list[AsyncEngine]]:
    """Two engines on one fresh, migrated database: two processes' worth of connections."""
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


def make_log(engine: AsyncEngine, tmp_path: Path | None = None, **kwargs: Any) -> SqlAuditLog:
    if tmp_path is not None:
        kwargs.setdefault("checkpoint_file", tmp_path / "checkpoints.jsonl")
        kwargs.setdefault("clock", FakeClock(wall_start=AT + timedelta(days=1)))
    return SqlAuditLog(engine=engine, key=KEY, **kwargs)


async def filled(engine: AsyncEngine, count: int, tmp_path: Path | None = None, **kw: Any):
    log = make_log(engine, tmp_path, **kw)
    for n in range(count):
        await log.append(entry(n))
    return log


async def sql(engine: AsyncEngine, *statements: Any) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


async def rows_of(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(audit_entries).order_by(audit_entries.c.seq))
        return [dict(row) for row in result.mappings().all()]


def where_seq(n: int) -> Any:
    return audit_entries.c.seq == n


# -- storing ---------------------------------------------------------------------------------


async def test_entries_round_trip_and_chain_exactly_like_the_in_memory_log(engine) -> None:
    log, memory = make_log(engine), InMemoryAuditLog(key=KEY)
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
    assert stored[0].prev_mac == GENESIS
    assert stored[0].entry().details["password"] == REDACTED
    assert stored[0].entry().at == AT
    assert verify(stored, key=KEY).ok


async def test_an_empty_log_reads_empty_and_verifies(engine) -> None:
    assert await make_log(engine).read_chain() == []


async def test_query_filters_by_run_principal_tool_decision_and_action(engine) -> None:
    log = await filled(engine, 12)
    assert [r.seq for r in await log.query(AuditFilter(run_id="run_1"))] == [1, 3, 5, 7, 9, 11]
    assert [r.seq for r in await log.query(AuditFilter(principal_id="c0"))] == [0, 3, 6, 9]
    assert [r.seq for r in await log.query(AuditFilter(tool_name="refund"))] == [0, 4, 8]
    both = AuditFilter(decision="deny", tool_name="get_order")
    assert [r.seq for r in await log.query(both)] == [1, 3, 5, 7, 9, 11]
    assert await log.query(AuditFilter(action="budget")) == []
    assert [r.seq for r in await log.query(AuditFilter(), limit=3)] == [9, 10, 11]


async def test_concurrent_appends_never_fork_the_chain(engine) -> None:
    log = make_log(engine)
    await asyncio.gather(*(log.append(entry(n)) for n in range(30)))
    stored = await log.read_chain()
    assert [r.seq for r in stored] == list(range(30))
    assert verify(stored, key=KEY).ok


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_process_appends_through_one_connection_at_a_time_on_postgres(engine) -> None:
    # Each append waits on the server for the advisory lock: were they all to wait there at
    # once, they would hold every pooled connection and starve the process's other writes.
    log = make_log(engine)
    out, most = 0, 0

    def checkout(*_: object) -> None:
        nonlocal out, most
        out += 1
        most = max(most, out)

    def checkin(*_: object) -> None:
        nonlocal out
        out -= 1

    pool = engine.sync_engine.pool
    sa.event.listen(pool, "checkout", checkout)
    sa.event.listen(pool, "checkin", checkin)
    try:
        await asyncio.gather(*(log.append(entry(n)) for n in range(20)))
    finally:
        sa.event.remove(pool, "checkout", checkout)
        sa.event.remove(pool, "checkin", checkin)
    assert most == 1
    assert [r.seq for r in await log.read_chain()] == list(range(20))


async def test_two_logs_on_one_database_never_fork_the_chain(engines) -> None:
    # Each log has its own lock and engine, as two processes would: the database must serialise.
    first, second = (make_log(e) for e in engines)
    await asyncio.gather(
        *(first.append(entry(n)) for n in range(0, 20, 2)),
        *(second.append(entry(n)) for n in range(1, 20, 2)),
    )
    stored = await first.read_chain()
    assert sorted(int(r.entry().reason.split()[1]) for r in stored) == list(range(20))
    assert verify(stored, key=KEY).ok


async def test_a_second_entry_at_a_taken_position_is_refused_by_the_database(engine) -> None:
    await filled(engine, 2)
    [first, _] = await rows_of(engine)
    with pytest.raises(sa.exc.IntegrityError):
        await sql(engine, sa.insert(audit_entries).values(**{**first, "mac": "f" * 64}))


async def test_a_failed_append_leaves_no_partial_entry(engine, monkeypatch) -> None:
    log = await filled(engine, 2)

    def broken_columns(row):  # the insert fails mid-transaction, after the head was read
        raise RuntimeError("disk full")

    monkeypatch.setattr("bastion.gate.audit._columns", broken_columns)
    with pytest.raises(RuntimeError, match="disk full"):
        await log.append(entry(2))
    monkeypatch.undo()
    await log.append(entry(3))
    stored = await log.read_chain()
    assert [r.seq for r in stored] == [0, 1, 2]
    assert stored[2].entry().reason == "reason 3"
    assert verify(stored, key=KEY).ok


async def test_entries_appended_together_are_stored_as_the_block_ends_in_one_transaction(
    engine,
) -> None:
    log = await filled(engine, 2)
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    sa.event.listen(sa.Engine, "commit", count)
    try:
        async with appended_together():
            for n in range(2, 7):
                await log.append(entry(n))
            assert len(await log.read_chain()) == 2  # held back so far
    finally:
        sa.event.remove(sa.Engine, "commit", count)
    stored = await log.read_chain()
    assert [r.entry().reason for r in stored] == [f"reason {n}" for n in range(7)]
    assert verify(stored, key=KEY).ok
    assert len(commits) == 1


async def test_entries_appended_together_are_stored_when_the_block_raises(engine) -> None:
    log = make_log(engine)

    async def refuse_after_one() -> None:
        async with appended_together():
            await log.append(entry(0))
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        await refuse_after_one()
    assert [r.entry().reason for r in await log.read_chain()] == ["reason 0"]


async def test_entries_appended_together_that_cannot_be_stored_raise_at_the_end(
    engine, monkeypatch
) -> None:
    log = make_log(engine)

    def broken_columns(row):
        raise RuntimeError("disk full")

    monkeypatch.setattr("bastion.gate.audit._columns", broken_columns)
    reached_the_end = False

    async def append_two() -> None:
        nonlocal reached_the_end
        async with appended_together():
            await log.append(entry(0))
            await log.append(entry(1))
            reached_the_end = True

    with pytest.raises(RuntimeError, match="disk full"):
        await append_two()
    assert reached_the_end
    monkeypatch.undo()
    assert await log.read_chain() == []  # all or none


async def test_a_naive_time_is_refused_and_nothing_is_stored(engine) -> None:
    log = make_log(engine)
    with pytest.raises(ValueError, match="has no timezone"):
        await log.append(
            AuditEntry(
                at=datetime(2026, 1, 1),  # noqa: DTZ001 - naive on purpose
                action="x",
                decision="deny",
                principal_id=None,
            )
        )
    assert await log.read_chain() == []


# -- checkpoints -----------------------------------------------------------------------------


async def test_a_checkpoint_is_appended_every_n_entries(engine, tmp_path) -> None:
    log = await filled(engine, 11, tmp_path, checkpoint_every=5)
    stored = await log.read_chain()
    written = read_checkpoints(tmp_path / "checkpoints.jsonl", key=KEY)
    assert [(c.size, c.head) for c in written.checkpoints] == [
        (5, stored[4].mac),
        (10, stored[9].mac),
    ]
    assert written.problems == ()
    assert oct((tmp_path / "checkpoints.jsonl").stat().st_mode & 0o777) == "0o600"
    assert verify(stored, key=KEY, checkpoints=written.checkpoints).checkpoints_matched == 2


async def test_checkpoint_now_pins_the_current_end(engine, tmp_path) -> None:
    log = await filled(engine, 3)
    path = tmp_path / "manual.jsonl"
    written = await log.checkpoint(path, at=AT + timedelta(hours=1))
    assert written is not None
    assert (written.size, written.head) == (3, (await log.read_chain())[2].mac)
    assert read_checkpoints(path, key=KEY).checkpoints == (written,)


async def test_checkpoint_of_an_empty_log_writes_nothing(engine, tmp_path) -> None:
    assert await make_log(engine).checkpoint(tmp_path / "c.jsonl", at=AT) is None
    assert not (tmp_path / "c.jsonl").exists()


async def test_a_checkpoint_that_cannot_be_written_is_logged_not_fatal(
    engine, tmp_path, caplog
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = make_log(
        engine,
        checkpoint_file=blocker / "c.jsonl",
        checkpoint_every=1,
        clock=FakeClock(),
    )
    with caplog.at_level(logging.ERROR, logger="bastion.gate.audit"):
        await log.append(entry(0))
    assert len(await log.read_chain()) == 1
    assert "could not append the audit checkpoint" in caplog.text


def test_checkpoint_every_must_be_positive(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SqlAuditLog(engine=None, key=KEY, checkpoint_every=0)  # type: ignore[arg-type]


# -- every tamper class, done with SQL -------------------------------------------------------


async def verified(log: SqlAuditLog, tmp_path: Path | None = None):
    checkpoints: tuple[Checkpoint, ...] = ()
    if tmp_path is not None:
        checkpoints = read_checkpoints(tmp_path / "checkpoints.jsonl", key=KEY).checkpoints
    return verify(await log.read_chain(), key=KEY, checkpoints=checkpoints)


async def test_sql_a_byte_edited_in_a_body(engine) -> None:
    log = await filled(engine, 6)
    body = sa.func.replace(audit_entries.c.body, "reason 3", "reason 8")
    await sql(engine, sa.update(audit_entries).where(where_seq(3)).values(body=body))
    assert (await verified(log)).first_bad == 3


async def test_sql_a_filter_column_edited(engine) -> None:
    log = await filled(engine, 6)
    await sql(engine, sa.update(audit_entries).where(where_seq(4)).values(principal_id="c9"))
    report = await verified(log)
    assert report.first_bad == 4
    assert "principal_id column" in (report.problem or "")


async def test_sql_an_entry_deleted(engine) -> None:
    log = await filled(engine, 6)
    await sql(engine, sa.delete(audit_entries).where(where_seq(2)))
    assert (await verified(log)).first_bad == 2


async def test_sql_two_entries_swapped(engine) -> None:
    log = await filled(engine, 6)
    rows = await rows_of(engine)
    swapped = [(1, rows[2]), (2, rows[1])]
    await sql(
        engine,
        *(
            sa.update(audit_entries)
            .where(where_seq(seq))
            .values(**{k: v for k, v in row.items() if k != "seq"})
            for seq, row in swapped
        ),
    )
    assert (await verified(log)).first_bad == 1


async def test_sql_a_forged_entry_inserted(engine) -> None:
    log = await filled(engine, 6)
    rows = await rows_of(engine)
    # Make room at position 3 (highest first, so no two rows ever share a position), then forge.
    moves = [
        sa.update(audit_entries).where(where_seq(seq)).values(seq=seq + 1)
        for seq in range(5, 2, -1)
    ]
    body = canonical_body(3, seal(entry(3)))
    forged = {
        **rows[3],
        "seq": 3,
        "body": body,
        "prev_mac": rows[2]["mac"],
        "mac": hashlib.sha256(body.encode()).hexdigest(),
    }
    await sql(engine, *moves, sa.insert(audit_entries).values(**forged))
    assert (await verified(log)).first_bad == 3


async def test_sql_the_tail_truncated_is_found_against_a_checkpoint(engine, tmp_path) -> None:
    log = await filled(engine, 10, tmp_path, checkpoint_every=5)
    await sql(engine, sa.delete(audit_entries).where(audit_entries.c.seq >= 7))
    assert (await verified(log)).ok  # what the chain alone cannot see
    report = await verified(log, tmp_path)
    assert report.first_bad == 7


async def test_sql_the_chain_recomputed_without_the_key(engine) -> None:
    log = await filled(engine, 8)
    rows = await rows_of(engine)
    prev = rows[4]["mac"]
    updates = []
    for row in rows[5:]:
        body = json.loads(row["body"])
        body["reason"] = "rewritten"
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        mac = hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()
        updates.append(
            sa.update(audit_entries)
            .where(where_seq(row["seq"]))
            .values(body=text, prev_mac=prev, mac=mac)
        )
        prev = mac
    await sql(engine, *updates)
    assert (await verified(log)).first_bad == 5


async def test_sql_an_old_copy_restored_and_appended_to(engine, tmp_path) -> None:
    clock = FakeClock(wall_start=AT + timedelta(days=1))
    log = await filled(engine, 6, tmp_path, checkpoint_every=5, clock=clock)
    backup = await rows_of(engine)  # a backup taken at 6 entries
    for n in range(6, 10):
        await log.append(entry(n))  # the checkpoint at 10 is written now
    clock.advance(3600)
    await sql(
        engine,
        sa.delete(audit_entries),
        *(sa.insert(audit_entries).values(**row) for row in backup),
    )
    assert (await verified(log, tmp_path)).first_bad == 6  # restored: its tail is missing
    for n in range(3):  # and the system goes on appending to the restored copy, with the key
        await log.append(replace(entry(100 + n), at=clock.now()))
    assert (await verified(log)).ok
    report = await verified(log, tmp_path)
    assert report.first_bad == 6
    assert "older copy" in (report.problem or "")
