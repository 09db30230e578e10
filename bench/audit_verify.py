"""Benchmark `bastion audit verify` on a large audit log (target: 100k entries under 2 s).

Builds a log of ``--entries`` realistic gate decisions (authorize entries with redacted args,
chained with the keyed MAC exactly as `SqlAuditLog` chains them) in a fresh SQLite file, then times,
``--runs`` times each:

* ``read``: `SqlAuditLog.read_chain` (every row, in ``seq`` order, through SQLAlchemy);
* ``verify``: `bastion.gate.audit.verify` over the rows read (positions, links, MACs, columns) and
  one checkpoint at the end;
* ``total``: both, as ``bastion audit verify`` spends them (minus the CLI's start-up), and
  ``total CPU``, the CPU time of the same (all threads): on a shared, busy machine the wall-clock
  figures grow with the load, the CPU time much less.

It also times appends through `SqlAuditLog.append` (``--appends`` of them, one transaction each) for
scale. Medians are printed. Run from the repository root:

    .venv/bin/python bench/audit_verify.py                  # 100k entries, 5 runs
    .venv/bin/python bench/audit_verify.py --entries 10000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bastion.gate.audit import GENESIS, SqlAuditLog, link, verify
from bastion.gate.checkpoints import make_checkpoint
from bastion.gate.interface import AuditEntry
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.storage.tables import audit_entries

KEY = os.urandom(32)
START = datetime(2026, 3, 1, tzinfo=UTC)
TOOLS = ("lookup_order", "track_shipment", "search_kb", "issue_refund", "escalate_to_human")


def decision(n: int) -> AuditEntry:
    """The n-th entry: an authorization like those a busy support agent makes."""
    return AuditEntry(
        at=START + timedelta(milliseconds=37 * n),
        action="authorize",
        decision="deny" if n % 11 == 0 else "allow",
        principal_id=f"c{n % 500}",
        reason="allowed" if n % 11 else f"customer c{n % 500} may not access order A{n:06d}",
        run_id=f"run_{n // 6:020x}",
        tool_name=TOOLS[n % len(TOOLS)],
        stage="execute" if n % 2 else "plan",
        details={"args": {"order_id": f"A{n:06d}", "reason": "Shipping was charged twice."}},
    )


async def build(url: str, entries: int) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
        prev, batch = GENESIS, []
        async with engine.begin() as conn:
            for n in range(entries):
                row = link(KEY, seq=n, prev_mac=prev, entry=decision(n))
                prev = row.mac
                batch.append(
                    {
                        "seq": row.seq,
                        "at": row.at,
                        "action": row.action,
                        "decision": row.decision,
                        "principal_id": row.principal_id,
                        "run_id": row.run_id,
                        "tool_name": row.tool_name,
                        "body": row.body,
                        "prev_mac": row.prev_mac,
                        "mac": row.mac,
                    }
                )
                if len(batch) == 5000:
                    await conn.execute(sa.insert(audit_entries), batch)
                    batch = []
            if batch:
                await conn.execute(sa.insert(audit_entries), batch)
    finally:
        await engine.dispose()


async def time_verify(url: str, runs: int) -> dict[str, list[float]]:
    engine = create_engine(url)
    times: dict[str, list[float]] = {"read": [], "verify": [], "total": [], "total CPU": []}
    try:
        log = SqlAuditLog(engine=engine, key=KEY)
        for _ in range(runs):
            cpu = time.process_time()
            started = time.perf_counter()
            rows = await log.read_chain()
            read = time.perf_counter()
            checkpoint = make_checkpoint(
                KEY, size=len(rows), head=rows[-1].mac, at=rows[-1].at + timedelta(seconds=1)
            )
            report = verify(rows, key=KEY, checkpoints=[checkpoint])
            done = time.perf_counter()
            if not report.ok or report.checkpoints_matched != 1:
                raise SystemExit(f"the benchmark's own log does not verify: {report}")
            times["read"].append(read - started)
            times["verify"].append(done - read)
            times["total"].append(done - started)
            times["total CPU"].append(time.process_time() - cpu)
    finally:
        await engine.dispose()
    return times


async def time_appends(url: str, appends: int) -> float:
    engine = create_engine(url)
    try:
        await migrate(engine)
        log = SqlAuditLog(engine=engine, key=KEY)
        started = time.perf_counter()
        for n in range(appends):
            await log.append(decision(n))
        return (time.perf_counter() - started) / appends
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--appends", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-audit-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'audit.db'}"
        started = time.perf_counter()
        await build(url, args.entries)
        built = time.perf_counter() - started
        times = await time_verify(url, args.runs)
        append_s = await time_appends(
            f"sqlite+aiosqlite:///{Path(tmp) / 'appends.db'}", args.appends
        )
    python = platform.python_version()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {python}, load {load}")
    print(f"built {args.entries} entries in {built:.1f} s; medians of {args.runs} runs:")
    for name, values in times.items():
        spread = f"min {min(values):.3f} s, max {max(values):.3f} s"
        print(f"  {name:<10}{statistics.median(values):.3f} s  ({spread})")
    print(f"  append {append_s * 1000:.2f} ms each (SQLite, one transaction per entry)")


if __name__ == "__main__":
    asyncio.run(main())
