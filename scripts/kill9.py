"""kill -9 harness for durable execution: kill a worker at random points, restart it, count.

Usage: ``python scripts/kill9.py --trials 30 --backend sqlite|postgres [--runs 4] [--seed N]``

Each trial queues ``--runs`` runs of `kill9_app` (plan, lookup, refund, email, lookup), starts a
worker, kills it with SIGKILL once or twice at random moments, restarts it, and waits until every
run is terminal. A run that finds, on recovery, that its (non-idempotent) email call was cut off
pauses for an operator; the harness answers as an operator would: ``skip`` if the email is in the
outbox (it was sent), ``retry`` if not. Then it counts, from the tools' own execution log joined
with the runs' checkpoints (the journal):

* lost completed steps: a tool or model execution that started after its step's checkpoint;
* repeated model calls: the same, for model calls;
* duplicated refunds: more than one refund row for a run;
* blind re-runs of the non-idempotent tool: more than one email for a step;
* runs not terminal after the last restart.

It also reports how many tool or model calls the kills interrupted (``interrupted_calls``), which
shows that the kills landed mid-run.

It prints these counts and exits 1 if any is not zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import kill9_app  # noqa: E402

from bastion.clock import SystemClock  # noqa: E402
from bastion.durable import DurableAdmin  # noqa: E402
from bastion.memory.default import SqlMemory  # noqa: E402
from bastion.messages import AgentRequest, RunStatus  # noqa: E402
from bastion.settings import Settings  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _env(data_dir: Path, log: Path, db_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BASTION_DATA_DIR": str(data_dir),
            "BASTION_DURABLE__POLLING_INTERVAL_S": "0.05",
            "BASTION_DURABLE__HEARTBEAT_S": "0.5",
            "K9_LOG": str(log),
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        }
    )
    if db_url:
        env["BASTION_MEMORY__DATABASE_URL"] = db_url
    return env


class Worker:
    """A `bastion worker` subprocess, ready once it said so."""

    def __init__(self, env: dict[str, str], worker_id: str = "k9") -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.cli.main",
                "worker",
                "--app",
                "kill9_app:build",
                "--id",
                worker_id,
                "--concurrency",
                "8",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "ready" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self.ready.wait(timeout):
            self.proc.kill()
            raise RuntimeError("worker did not start:\n" + "".join(self.lines[-30:]))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _create_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"k9_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return name, f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


async def _statuses(settings: Settings, run_ids: list[str]) -> dict[str, RunStatus | None]:
    memory = SqlMemory.from_url(settings.database_url, clock=SystemClock())
    for _ in range(20):  # the workers hold SQLite's write lock at times: wait for our turn
        try:
            await memory.start()
            break
        except Exception:
            await asyncio.sleep(0.5)
    try:
        out: dict[str, RunStatus | None] = {}
        for run_id in run_ids:
            record = await memory.get_run(run_id)
            out[run_id] = None if record is None else record.status
        return out
    finally:
        await memory.close()


async def _report_ended_otherwise(
    settings: Settings, index: int, statuses: dict[str, RunStatus | None]
) -> None:
    """Say on stderr why each run that ended without completing ended so."""
    ended = [r for r, s in statuses.items() if s is not None and s.is_terminal]
    ended = [r for r in ended if statuses[r] is not RunStatus.COMPLETED]
    if not ended:
        return
    memory = SqlMemory.from_url(settings.database_url, clock=SystemClock())
    await memory.start()
    try:
        for run_id in ended:
            record = await memory.get_run(run_id)
            why = "?" if record is None else f"{record.status.value}: {record.error}"
            print(f"trial {index}: run {run_id} ended {why}", file=sys.stderr)
    finally:
        await memory.close()


def _emails_sent(log: Path, run_id: str) -> int:
    import sqlite3

    conn = sqlite3.connect(log)
    try:
        return int(
            conn.execute("select count(*) from emails where run_id = ?", (run_id,)).fetchone()[0]
        )
    finally:
        conn.close()


async def trial(
    index: int, backend: str, runs: int, rng: random.Random, base: Path
) -> dict[str, int]:
    data_dir = base / f"trial{index}"
    data_dir.mkdir(parents=True)
    log = data_dir / "k9.sqlite"
    pg_name, db_url = _create_pg_database() if backend == "postgres" else (None, None)
    env = _env(data_dir, log, db_url)
    settings = Settings(
        data_dir=data_dir,
        memory={"database_url": db_url} if db_url else {},
        durable={"polling_interval_s": 0.05},
    )
    admin = DurableAdmin(settings=settings)
    counts = {"kills": 0, "paused_for_operator": 0}
    worker: Worker | None = None
    try:
        worker = Worker(env)
        worker.wait_ready()
        deadline = datetime.now(UTC) + timedelta(minutes=10)
        run_ids = []
        for k in range(runs):
            request = AgentRequest(user_id="u", session_id=f"s{index}-{k}", message=f"refund {k}")
            run_ids.append(await admin.enqueue(request, deadline_at=deadline))
        for _ in range(rng.randint(1, 2)):
            await asyncio.sleep(rng.uniform(0.05, 0.9))
            worker.kill()
            counts["kills"] += 1
            worker = Worker(env)
            worker.wait_ready()
        resolved: set[str] = set()
        give_up = time.monotonic() + 300
        while True:
            statuses = await _statuses(settings, run_ids)
            for run_id, status in statuses.items():
                if status is RunStatus.AWAITING_OPERATOR and run_id not in resolved:
                    action = "skip" if _emails_sent(log, run_id) else "retry"
                    await admin.send(
                        run_id,
                        "operator",
                        {"action": action, "by": "harness"},
                        key=f"{run_id}:harness",
                    )
                    resolved.add(run_id)
                    counts["paused_for_operator"] += 1
            if all(s is not None and s.is_terminal for s in statuses.values()):
                break
            if time.monotonic() > give_up:
                break
            await asyncio.sleep(0.2)
        worker.stop()
        stuck = [r for r, s in statuses.items() if not (s is not None and s.is_terminal)]
        if stuck:
            dbos_status = {w.run_id: w.status for w in await admin.runs(limit=1000)}
            print(
                f"trial {index}: not terminal: "
                + ", ".join(f"{r} (store {statuses[r]}, dbos {dbos_status.get(r)})" for r in stuck)
                + "\nworker log tail:\n"
                + "".join(worker.lines[-15:]),
                file=sys.stderr,
            )
        await _report_ended_otherwise(settings, index, statuses)
        counts.update(await _tally(admin, log, run_ids, statuses))
        return counts
    finally:
        if worker is not None and worker.proc.poll() is None:
            worker.kill()  # never leave a worker behind, whatever went wrong
        if pg_name:
            _drop_pg_database(pg_name)


async def _tally(
    admin: DurableAdmin, log: Path, run_ids: list[str], statuses: dict[str, RunStatus | None]
) -> dict[str, int]:
    raw = kill9_app.counts(str(log))
    checkpoints: dict[tuple[str, int], int | None] = {}
    for run_id in run_ids:
        for step in await admin.steps(run_id):
            checkpoints[(run_id, step["step_id"])] = step["completed_ms"]
    lost = repeated_model = 0
    for workflow_id, step_id, kind, _name, _key, started_ms, _ended in raw["executions"]:
        done = checkpoints.get((workflow_id, step_id))
        if done is not None and started_ms > done:
            lost += 1
            repeated_model += kind == "model"
    per_key: dict[str, int] = defaultdict(int)
    for key, count in raw["emails"]:
        per_key[key] += count
    return {
        "runs": len(run_ids),
        "interrupted_calls": sum(row[6] is None for row in raw["executions"]),
        "completed": sum(s is RunStatus.COMPLETED for s in statuses.values()),
        "lost_completed_steps": lost,
        "repeated_model_calls": repeated_model,
        "duplicated_refunds": sum(max(0, n - 1) for _run, n in raw["refunds"]),
        "blind_reruns": sum(max(0, n - 1) for n in per_key.values()),
        "not_terminal": sum(not (s is not None and s.is_terminal) for s in statuses.values()),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the totals as JSON only")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    totals: dict[str, int] = defaultdict(int)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bastion-kill9-") as tmp:
        for i in range(args.trials):
            counts = await trial(i, args.backend, args.runs, rng, Path(tmp))
            for key, value in counts.items():
                totals[key] += value
            if not args.json:
                print(f"trial {i + 1}/{args.trials}: {counts}", flush=True)
    totals["trials"] = args.trials
    totals["seconds"] = round(time.monotonic() - started)
    bad = [
        k
        for k in (
            "lost_completed_steps",
            "repeated_model_calls",
            "duplicated_refunds",
            "blind_reruns",
            "not_terminal",
        )
        if totals[k]
    ]
    result = {"backend": args.backend, "seed": seed, **totals, "ok": not bad}
    print(json.dumps(result))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
