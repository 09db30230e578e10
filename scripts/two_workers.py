"""Two workers share a batch of runs over PostgreSQL; one is killed for good midway.

Usage: ``python scripts/two_workers.py [--runs 200] [--takeover-after 3]``

Both workers take runs from the same queue. Once a fifth of the runs are done, worker A is killed
with SIGKILL and never restarted; worker B takes its unfinished runs over once A's heartbeat is
older than ``--takeover-after`` seconds. Prints, as JSON: the runs completed by each worker; the
duplicated step executions, which must be 0: an execution of a step that started after the
step's checkpoint (a completed step run again) or while another execution of it was under way (a
step run in two places at once); the steps that A's death cut off and B ran again, which is
legitimate (the kill landed before the step's checkpoint: a read-only or idempotent tool reruns, a
non-idempotent one waits for an operator, and ``blind_reruns`` counts any email sent twice); and
how long after the kill the last run finished. Exits 1 unless every run completed with no
duplicated execution, no duplicated refund and no blind re-run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kill9 import (  # noqa: E402
    Worker,
    _create_pg_database,
    _drop_pg_database,
    _emails_sent,
    _env,
    _statuses,
    _tally,
)

from bastion.durable import DurableAdmin  # noqa: E402
from bastion.messages import AgentRequest, RunStatus  # noqa: E402
from bastion.settings import Settings  # noqa: E402


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--takeover-after", type=float, default=3.0)
    parser.add_argument(
        "--keep-failed", action="store_true", help="keep the database of a failed check"
    )
    args = parser.parse_args()
    name, url = _create_pg_database()
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix="bastion-2w-") as tmp:
            data_dir = Path(tmp)
            log = data_dir / "k9.sqlite"
            env = _env(data_dir, log, url)
            env["BASTION_DURABLE__TAKEOVER_AFTER_S"] = str(args.takeover_after)
            # Both start at once on a loaded machine: a slow launch is not a death.
            env["BASTION_DURABLE__STARTUP_GRACE_S"] = "15"
            settings = Settings(
                data_dir=data_dir,
                memory={"database_url": url},
                durable={"polling_interval_s": 0.05},
            )
            a, b = Worker(env, "A"), Worker(env, "B")
            a.wait_ready()
            b.wait_ready()
            admin = DurableAdmin(settings=settings)
            deadline = datetime.now(UTC) + timedelta(minutes=30)
            run_ids = [
                await admin.enqueue(
                    AgentRequest(user_id=f"u{i % 20}", session_id=f"s{i}", message=f"refund {i}"),
                    deadline_at=deadline,
                )
                for i in range(args.runs)
            ]
            while True:
                statuses = await _statuses(settings, run_ids)
                done = sum(s is not None and s.is_terminal for s in statuses.values())
                if done >= args.runs // 5:
                    break
                await asyncio.sleep(0.2)
            a.kill()
            killed_at = time.monotonic()
            killed_ms = int(time.time() * 1000)  # the app logs wall-clock milliseconds
            give_up = killed_at + 300
            paused: set[str] = set()
            while time.monotonic() < give_up:
                statuses = await _statuses(settings, run_ids)
                for run_id, status in statuses.items():
                    if status is RunStatus.AWAITING_OPERATOR and run_id not in paused:
                        # Answered as an operator would: it was sent (skip) or it was not (retry).
                        action = "skip" if _emails_sent(log, run_id) else "retry"
                        await admin.send(run_id, "operator", {"action": action}, key=run_id)
                        paused.add(run_id)
                if all(s is not None and s.is_terminal for s in statuses.values()):
                    break
                await asyncio.sleep(0.2)
            finished_after = time.monotonic() - killed_at
            b.stop()
            conn = sqlite3.connect(log)
            rows = conn.execute(
                "select workflow_id, step_id, started_ms, ended_ms from executions"
            ).fetchall()
            conn.close()
            checkpoints: dict[tuple[str, int], int | None] = {}
            for run_id in run_ids:
                for step in await admin.steps(run_id):
                    checkpoints[(run_id, step["step_id"])] = step["completed_ms"]
            duplicated, rerun = _duplicated(rows, checkpoints, killed_ms)
            tally = await _tally(admin, log, run_ids, statuses)
            interrupted = sum(1 for *_, ended in rows if ended is None)
            executors = Counter(w.executor_id for w in await admin.runs(limit=args.runs * 2))
            result = {
                "runs": args.runs,
                "completed": sum(s is RunStatus.COMPLETED for s in statuses.values()),
                "not_terminal": sum(not (s and s.is_terminal) for s in statuses.values()),
                "duplicated_step_executions": duplicated,
                "steps_rerun_after_the_kill": rerun,
                "duplicated_refunds": tally["duplicated_refunds"],
                "blind_reruns": tally["blind_reruns"],
                "interrupted_by_kill": interrupted,
                "paused_for_operator": len(paused),
                "runs_by_executor": dict(executors),
                "seconds_from_kill_to_last_run": round(finished_after, 1),
                "takeover_after_s": args.takeover_after,
            }
            result["ok"] = (
                result["completed"] == args.runs
                and duplicated == 0
                and tally["duplicated_refunds"] == 0
                and tally["blind_reruns"] == 0
                and result["not_terminal"] == 0
            )
            print(json.dumps(result))
            ok = bool(result["ok"])
            if not ok:
                for worker, name_ in ((a, "A"), (b, "B")):
                    print(f"-- worker {name_}:\n" + "".join(worker.lines[-40:]), file=sys.stderr)
            return 0 if ok else 1
    finally:
        if ok or not args.keep_failed:
            _drop_pg_database(name)
        else:
            print(f"kept database {name}", file=sys.stderr)


def _duplicated(
    rows: list[tuple[str, int, int, int | None]],
    checkpoints: dict[tuple[str, int], int | None],
    killed_ms: int,
) -> tuple[int, int]:
    """(duplicated executions, legitimate re-runs after the kill); see the module docstring."""
    by_step: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for wf, sid, started, ended in rows:
        # An execution with no end was cut off by the kill: it ended then.
        by_step.setdefault((wf, sid), []).append((started, killed_ms if ended is None else ended))
    duplicated = rerun = 0
    for key, runs in by_step.items():
        done = checkpoints.get(key)
        for started, ended in runs:
            others = [(s, e) for s, e in runs if (s, e) != (started, ended)]
            overlapping = any(s <= started < e for s, e in others)
            if (done is not None and started > done) or overlapping:
                duplicated += 1
            elif any(s < started for s, _ in others):
                rerun += 1
    return duplicated, rerun


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
