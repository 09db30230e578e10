"""A separate process appending to an audit log, for the multi-process and crash tests.

Usage: python audit_writer.py DATABASE_URL KEY_HEX COUNT TAG [HANG_AT]

Appends COUNT entries (reason "TAG n"), printing "appended n" after each. With HANG_AT, the
append of entry HANG_AT stops after its row is inserted and before its transaction commits,
prints "inserted" and waits for a line on stdin that never comes: the test kills it there.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from bastion.gate.audit import SqlAuditLog
from bastion.gate.interface import AuditEntry
from bastion.storage.engine import create_engine

_INSERTS = ("INSERT INTO audit_entries", 'INSERT INTO "audit_entries"')


async def main(url: str, key: bytes, count: int, tag: str, hang_at: int | None) -> None:
    engine = create_engine(url)
    current = {"n": -1}

    def hang() -> None:
        print("inserted", flush=True)
        sys.stdin.readline()

    def hang_after_insert(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # PostgreSQL: runs on the event loop, where the append's transaction runs; blocking here
        # keeps the row inserted and the transaction open.
        if statement.startswith(_INSERTS) and current["n"] == hang_at:
            hang()

    def trace_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # SQLite: the writer thread runs the insert on the driver's cursor, past SQLAlchemy's
        # events; the driver's trace sees the COMMIT begin, right after the row went in.
        def trace(statement: str) -> None:
            if statement.startswith("COMMIT") and current["n"] == hang_at:
                hang()

        if url.startswith("sqlite"):
            dbapi_connection.set_trace_callback(trace)

    event.listen(sa.Engine, "after_cursor_execute", hang_after_insert)
    event.listen(sa.Engine, "connect", trace_sqlite)
    log = SqlAuditLog(engine=engine, key=key)
    try:
        for n in range(count):
            current["n"] = n
            await log.append(
                AuditEntry(
                    at=datetime(2026, 3, 1, tzinfo=UTC),
                    action="authorize",
                    decision="allow",
                    principal_id=tag,
                    reason=f"{tag} {n}",
                )
            )
            print(f"appended {n}", flush=True)
    finally:
        await log.aclose()
        await engine.dispose()


if __name__ == "__main__":
    url, key_hex, count, tag, *rest = sys.argv[1:]
    asyncio.run(main(url, bytes.fromhex(key_hex), int(count), tag, int(rest[0]) if rest else None))
