"""Checkpoint cost per step of durable execution, against the same run in process.

Usage: ``python bench/durable_steps.py [--repeats 7] [--steps 20] [--runs 3]
[--backend sqlite|postgres|all]``

A run whose plan has ``--steps`` trivial async tool calls runs end to end through `AgentSystem`
(gate, cost controller, breakers, evaluator, audit all on), on each backend with durable execution
off and on: SQLite (WAL, synchronous=NORMAL) and PostgreSQL. Configurations are interleaved and
repeated; each sample is the mean of ``--runs`` runs after a warm-up run. The per-step checkpoint
cost is (durable - in process, on the same database) / steps: what durability adds. For
PostgreSQL it is also given as a ratio to one synchronous commit (an INSERT committed on its own,
measured in the same run). Prints a JSON line with the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bastion import AgentRequest, AgentSystem, Principal, tool
from bastion.models.scripted import ScriptedModel
from bastion.settings import load_settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@tool(permissions=("t",))
async def noop(i: int) -> int:
    """Return i."""
    return i


def _plan(steps: int) -> str:
    return json.dumps(
        {
            "reasoning": "bench",
            "steps": [
                {"description": f"step {i}", "tool_name": "noop", "tool_args": {"i": i}}
                for i in range(steps)
            ],
        }
    )


#: Each configuration: (database, durable).
CONFIGS = {
    "in-process": ("sqlite", False),
    "sqlite": ("sqlite", True),
    "postgres-in-process": ("postgres", False),
    "postgres": ("postgres", True),
}


async def _one(config: str, steps: int, runs: int, data_dir: Path, pg_url: str | None) -> float:
    database, enabled = CONFIGS[config]
    durable = {"enabled": enabled, "polling_interval_s": 0.05}
    extra: dict[str, Any] = {}
    if database == "postgres":
        extra["memory"] = {"database_url": pg_url}
    settings = load_settings(
        data_dir=data_dir,
        durable=durable,
        planner={"max_steps": 50},
        run={"max_steps": 60},
        **extra,
    )
    model = ScriptedModel.matching([(".", _plan(steps))], name="scripted:bench")
    system = AgentSystem.from_settings(
        settings, tools=[noop], principals=[Principal(id="b", scopes=frozenset({"t"}))], model=model
    )
    async with system:
        await system.run(AgentRequest(user_id="b", session_id="warm", message="go"))  # warm-up
        started = time.perf_counter()
        for i in range(runs):
            response = await system.run(AgentRequest(user_id="b", session_id=f"s{i}", message="go"))
            assert response.ok, response
        elapsed = time.perf_counter() - started
    return elapsed / runs


def _sync_commit_ms(pg_url: str, n: int = 200) -> float:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("create table if not exists bench_commit (id serial primary key, v text)")
        started = time.perf_counter()
        for _ in range(n):
            conn.execute("insert into bench_commit (v) values ('x')")
        return (time.perf_counter() - started) / n * 1000


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="runs per sample (their mean)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args()
    configs = ["in-process"]
    if args.backend in ("sqlite", "all"):
        configs.append("sqlite")
    if args.backend in ("postgres", "all"):
        configs += ["postgres-in-process", "postgres"]
    pg_name = pg_url = None
    if "postgres" in configs:
        import psycopg

        pg_name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'create database "{pg_name}"')
        pg_url = f"postgresql://postgres@127.0.0.1:5432/{pg_name}"
    times: dict[str, list[float]] = {c: [] for c in configs}
    commits: list[float] = []
    try:
        for r in range(args.repeats):
            order = configs[:]
            random.Random(r).shuffle(order)  # interleaved, in a different order each round
            for config in order:
                with tempfile.TemporaryDirectory() as tmp:
                    times[config].append(
                        await _one(config, args.steps, args.runs, Path(tmp), pg_url)
                    )
            if pg_url:
                commits.append(_sync_commit_ms(pg_url))
    finally:
        if pg_name:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{pg_name}" with (force)')
    summary: dict[str, Any] = {
        "bench": "durable_steps",
        "steps": args.steps,
        "repeats": args.repeats,
        "runs_per_sample": args.runs,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    for config in configs:
        summary[f"{config}_run_ms"] = round(statistics.median(times[config]) * 1000, 2)
    for config, baseline in (("sqlite", "in-process"), ("postgres", "postgres-in-process")):
        if config not in times:
            continue
        base = statistics.median(times[baseline])
        per_step = [(t - base) / args.steps * 1000 for t in times[config]]
        summary[f"{config}_checkpoint_ms_per_step"] = {
            "median": round(statistics.median(per_step), 3),
            "min": round(min(per_step), 3),
            "max": round(max(per_step), 3),
        }
    if commits:
        commit = statistics.median(commits)
        summary["postgres_sync_commit_ms"] = round(commit, 3)
        summary["postgres_ratio_to_commit"] = round(
            summary["postgres_checkpoint_ms_per_step"]["median"] / commit, 2
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
