"""Checkpoint cost per step of durable execution, against the same run in process.

Usage: ``python bench/durable_steps.py [--repeats 7] [--steps 20] [--runs 3]
[--backend sqlite|postgres|all]``

A run whose plan has ``--steps`` trivial async tool calls runs end to end through `AgentSystem`
(gate, cost controller, breakers, evaluator, audit all on), on each backend with durable execution
off and on: SQLite (WAL, synchronous=NORMAL) and PostgreSQL. Configurations are interleaved and
repeated; each sample is the median of ``--runs`` runs after a warm-up run (a mean until
session 6: one slow run, a garbage collection or a PostgreSQL checkpoint, moved it). The
per-step checkpoint cost is (durable - in process, on the same database) / steps: what
durability adds, including its share of the per-run cost (DBOS records the workflow's start and
end). With
``--short-steps N`` every configuration also runs N-step plans in the same rounds, which splits
that into a *marginal* cost per step (the slope between the two lengths) and a *fixed* cost per
run. For PostgreSQL each is also given as a ratio to one synchronous commit (an INSERT committed
on its own, measured in the same run). Because a run's total time is noisy (on PostgreSQL its
dozen transactions vary by milliseconds), the per-step cost is also measured inside runs
(``*_in_run_ms_per_step``): the median time from one step's start to the next's, durable
against in process. Prints a JSON line with the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
from bastion.messages import EventKind, RunEvent
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


async def _one(
    config: str, steps: int, runs: int, data_dir: Path, pg_url: str | None
) -> tuple[float, float]:
    """The median time of a run, and the median time from one step's start to the next's."""
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
        took: list[float] = []
        intervals: list[float] = []
        for i in range(runs):
            starts: list[float] = []

            def sink(event: RunEvent, starts: list[float] = starts) -> None:
                if event.kind is EventKind.STEP_STARTED:
                    starts.append(time.perf_counter())

            started = time.perf_counter()
            response = await system.run(
                AgentRequest(user_id="b", session_id=f"s{i}", message="go"), on_event=sink
            )
            took.append(time.perf_counter() - started)
            assert response.ok, response
            intervals += [b - a for a, b in itertools.pairwise(starts)]
    return statistics.median(took), statistics.median(intervals)


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
    parser.add_argument("--runs", type=int, default=3, help="runs per sample (their median)")
    parser.add_argument(
        "--short-steps", type=int, default=2, help="also N-step plans, for the marginal (0: no)"
    )
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
    lengths = [args.steps] + ([args.short_steps] if args.short_steps else [])
    times: dict[tuple[str, int], list[float]] = {(c, n): [] for c in configs for n in lengths}
    #: Each sample's median time from one step's start to the next's (the long runs).
    intervals: dict[str, list[float]] = {c: [] for c in configs}
    commits: list[float] = []
    try:
        for r in range(args.repeats):
            order = list(times)
            random.Random(r).shuffle(order)  # interleaved, in a different order each round
            for config, steps in order:
                with tempfile.TemporaryDirectory() as tmp:
                    run, interval = await _one(config, steps, args.runs, Path(tmp), pg_url)
                times[config, steps].append(run)
                if steps == args.steps:
                    intervals[config].append(interval)
            if pg_url:
                commits.append(_sync_commit_ms(pg_url))
    finally:
        if pg_name:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{pg_name}" with (force)')
    print(json.dumps(_summary(args, configs, times, intervals, commits)))
    return 0


def _summary(
    args: argparse.Namespace,
    configs: list[str],
    times: dict[tuple[str, int], list[float]],
    intervals: dict[str, list[float]],
    commits: list[float],
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "bench": "durable_steps",
        "steps": args.steps,
        "repeats": args.repeats,
        "runs_per_sample": args.runs,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    for (config, steps), samples in times.items():
        summary[f"{config}_{steps}_steps_run_ms"] = round(statistics.median(samples) * 1000, 2)
    commit = statistics.median(commits) if commits else None
    if commit is not None:
        summary["postgres_sync_commit_ms"] = round(commit, 3)
    for config, baseline in (("sqlite", "in-process"), ("postgres", "postgres-in-process")):
        if config in configs:
            summary.update(_costs(config, baseline, times, args.steps, args.short_steps, commit))
            summary.update(_in_run(config, baseline, intervals, commit))
    return summary


def _costs(
    config: str,
    baseline: str,
    times: dict[tuple[str, int], list[float]],
    steps: int,
    short_steps: int,
    commit: float | None,
) -> dict[str, Any]:
    """What `config` adds to `baseline` (paired round by round): per step, marginal, per run."""

    def added(n: int) -> list[float]:
        return [(t - b) * 1000 for t, b in zip(times[config, n], times[baseline, n], strict=True)]

    long = added(steps)
    costs: dict[str, Any] = {f"{config}_checkpoint_ms_per_step": _spread([a / steps for a in long])}
    if short_steps:
        short = added(short_steps)
        marginal = [(a - b) / (steps - short_steps) for a, b in zip(long, short, strict=True)]
        costs[f"{config}_marginal_ms_per_step"] = _spread(marginal)
        costs[f"{config}_fixed_ms_per_run"] = _spread(
            [b - m * short_steps for b, m in zip(short, marginal, strict=True)]
        )
    if config == "postgres" and commit is not None:
        for key in ("checkpoint", "marginal"):
            if f"postgres_{key}_ms_per_step" in costs:
                ratio = costs[f"postgres_{key}_ms_per_step"]["median"] / commit
                costs[f"postgres_{key}_ratio_to_commit"] = round(ratio, 2)
    return costs


def _in_run(
    config: str, baseline: str, intervals: dict[str, list[float]], commit: float | None
) -> dict[str, Any]:
    """What `config` adds to one step *inside* a run: the step-to-step time against `baseline`.

    A run's step-to-step times are many samples of one step's whole cost (the call, its record,
    its checkpoint), free of the run's start and end: the steadiest measure of the per-step
    cost, paired round by round like the others.
    """
    added = [(d - b) * 1000 for d, b in zip(intervals[config], intervals[baseline], strict=True)]
    costs: dict[str, Any] = {
        f"{config}_step_interval_ms": round(statistics.median(intervals[config]) * 1000, 3),
        f"{baseline}_step_interval_ms": round(statistics.median(intervals[baseline]) * 1000, 3),
        f"{config}_in_run_ms_per_step": _spread(added),
    }
    if config == "postgres" and commit is not None:
        costs["postgres_in_run_ratio_to_commit"] = round(statistics.median(added) / commit, 2)
    return costs


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
