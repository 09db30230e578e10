"""Durable runs per second with 1 and 2 worker processes sharing one PostgreSQL queue.

Usage: ``python bench/durable_workers.py [--runs 200] [--repeats 3] [--workers 1 2]``

Each measurement queues ``--runs`` runs of the kill -9 harness's app (``scripts/kill9_app.py``:
a plan, then lookup, refund, email, lookup: 6 checkpointed steps and a plan vetting per run) with
its pauses off (``K9_FAST=1``: the tools and the model answer at once, so what is measured is
Bastion and DBOS), into a fresh PostgreSQL database, then starts the workers. Throughput is the
runs divided by the time from the first execution to the last, read off the app's execution log
(worker start-up is not counted). Configurations are interleaved and repeated; prints a JSON line
per measurement and a summary (median, min, max) per worker count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from kill9 import Worker, _create_pg_database, _drop_pg_database, _env  # noqa: E402

from bastion.durable import DurableAdmin  # noqa: E402
from bastion.messages import AgentRequest  # noqa: E402
from bastion.settings import Settings  # noqa: E402


async def measure(runs: int, workers: int) -> dict[str, object]:
    name, url = _create_pg_database()
    try:
        with tempfile.TemporaryDirectory(prefix="bastion-bw-") as tmp:
            data_dir = Path(tmp)
            log = data_dir / "k9.sqlite"
            env = _env(data_dir, log, url)
            env["K9_FAST"] = "1"
            settings = Settings(data_dir=data_dir, memory={"database_url": url})
            admin = DurableAdmin(settings=settings)
            deadline = datetime.now(UTC) + timedelta(minutes=30)
            for i in range(runs):
                request = AgentRequest(user_id=f"u{i % 50}", session_id=f"s{i}", message="hi")
                await admin.enqueue(request, deadline_at=deadline)
            started = [Worker(env, f"w{n}") for n in range(workers)]
            try:
                for worker in started:
                    worker.wait_ready()
                give_up = time.monotonic() + 900
                while time.monotonic() < give_up:
                    done = await admin.runs(status="SUCCESS", limit=runs * 2)
                    if len(done) >= runs:
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise RuntimeError(f"only {len(done)} of {runs} runs finished")
            finally:
                for worker in started:
                    worker.stop()
            conn = sqlite3.connect(log)
            first, last = conn.execute(
                "select min(started_ms), max(ended_ms) from executions"
            ).fetchone()
            conn.close()
            seconds = (last - first) / 1000
            return {
                "workers": workers,
                "runs": runs,
                "seconds": seconds,
                "runs_per_s": runs / seconds,
            }
    finally:
        _drop_pg_database(name)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    results: dict[int, list[float]] = {n: [] for n in args.workers}
    for _ in range(args.repeats):
        for n in args.workers:
            row = await measure(args.runs, n)
            print(json.dumps(row), flush=True)
            results[n].append(float(row["runs_per_s"]))  # type: ignore[arg-type]
    summary = {
        "machine": f"{os.cpu_count()} cpus, Python {platform.python_version()}",
        **{
            f"{n}_workers_runs_per_s": {
                "median": round(statistics.median(v), 1),
                "min": round(min(v), 1),
                "max": round(max(v), 1),
            }
            for n, v in results.items()
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
