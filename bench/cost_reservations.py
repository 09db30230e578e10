"""Budget reservations per second, and what a reservation adds to each model call.

Usage: ``python bench/cost_reservations.py [--calls 400] [--runs 5] [--backend B]``, where B is
``sqlite``, ``postgres`` or ``all`` (the default).

One "reservation" is what `bastion.cost.MeteredChatModel` adds around a model call with the
database ledger (`SqlCostController`): ``reserve`` (the worst case held on every budget in one
write transaction) then ``settle`` (the hold replaced by the actual cost, a second transaction).
Every call is charged to the run and to one user's daily budget, so all concurrent callers
contend for the same counter row: the worst case for the lock.

For each backend and concurrency (1 and 50 tasks in one process), ``--calls`` reserve+settle
pairs are made; the figure is pairs per second, median of ``--runs``. At concurrency 1 the median
latency of one pair is also given: the time a reservation adds to a model call; and the CPU
time of this process per pair (all threads: the event loop, SQLAlchemy and the SQLite writer),
which a loaded machine inflates far less than wall-clock latency. PostgreSQL is a fresh
database on 127.0.0.1:5432 (dropped after). Prints a JSON line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import SystemClock
from bastion.cost.pricing import PriceTable
from bastion.cost.sql import SqlCostController
from bastion.messages import AgentRequest, Principal
from bastion.models.interface import ChatMessage, ChatRequest, Usage
from bastion.settings import CostSettings, ModelPrice
from bastion.storage import create_engine

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL = "bench:paid"
CHAT = ChatRequest(messages=(ChatMessage(role="user", content="x" * 300),), max_tokens=256)
USAGE = Usage(input_tokens=90, output_tokens=100)


def _controller(engine: AsyncEngine) -> SqlCostController:
    settings = CostSettings.model_validate(
        {
            "prices": {MODEL: ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))},
            "user_daily_usd": "1000000",
        }
    )
    return SqlCostController(
        engine=engine, prices=PriceTable(settings), clock=SystemClock(), settings=settings
    )


async def _worker(cost: SqlCostController, run_id: str, calls: int, latencies: list[float]) -> None:
    request = AgentRequest(
        user_id="bench", session_id="s", message="m", run_id=run_id, max_budget_usd=Decimal(1000)
    )
    await cost.admit(request, Principal(id="bench"))
    for _ in range(calls):
        started = time.perf_counter()
        reservation = await cost.reserve(run_id, MODEL, CHAT)
        await cost.settle(reservation, USAGE)
        latencies.append(time.perf_counter() - started)
    await cost.finish(run_id)


async def _measure(url: str, concurrency: int, calls: int) -> dict[str, float]:
    engine = create_engine(url)
    try:
        cost = _controller(engine)
        await cost.start()
        await _worker(cost, f"warm-{uuid.uuid4().hex[:8]}", 20, [])
        latencies: list[float] = []
        per_task = max(1, calls // concurrency)
        started, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            for i in range(concurrency):
                run_id = f"r{i}-{uuid.uuid4().hex[:8]}"
                group.create_task(_worker(cost, run_id, per_task, latencies))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        return {
            "per_s": len(latencies) / elapsed,
            "cpu_ms": cpu / len(latencies) * 1000,
            "median_ms": statistics.median(latencies) * 1000,
            "p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000,
        }
    finally:
        await engine.dispose()


async def _postgres_url() -> tuple[str, AsyncEngine] | None:
    admin = create_engine(PG_ADMIN)
    name = f"bastion_bench_{uuid.uuid4().hex[:12]}"
    try:
        async with admin.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # the server is not there: skip PostgreSQL
        print(f"PostgreSQL unavailable ({exc!r}); skipped", file=sys.stderr)
        await admin.dispose()
        return None
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", admin


async def _drop(admin: AsyncEngine, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    async with admin.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.dispose()


async def main(calls: int, runs: int, backend: str) -> None:
    print(json.dumps({"python": platform.python_version(), "machine": platform.machine()}))
    backends: list[tuple[str, str]] = []
    cleanup: tuple[AsyncEngine, str] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        if backend in ("sqlite", "all"):
            backends.append(("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))
        if backend in ("postgres", "all"):
            found = await _postgres_url()
            if found is not None:
                backends.append(("postgres", found[0]))
                cleanup = (found[1], found[0])
        try:
            for name, url in backends:
                for concurrency in (1, 50):
                    samples = [await _measure(url, concurrency, calls) for _ in range(runs)]
                    print(
                        json.dumps(
                            {
                                "backend": name,
                                "concurrency": concurrency,
                                "reservations_per_s": round(
                                    statistics.median(s["per_s"] for s in samples), 1
                                ),
                                "pair_median_ms": round(
                                    statistics.median(s["median_ms"] for s in samples), 3
                                ),
                                "pair_p95_ms": round(
                                    statistics.median(s["p95_ms"] for s in samples), 3
                                ),
                                "cpu_ms_per_pair": round(
                                    statistics.median(s["cpu_ms"] for s in samples), 3
                                ),
                                "runs": runs,
                                "calls": calls,
                            }
                        ),
                        flush=True,
                    )
        finally:
            if cleanup is not None:
                await _drop(*cleanup)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.runs, args.backend))
