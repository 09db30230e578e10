"""A run interrupted by a crash finishes after a restart, and an unknown side effect waits for a
person instead of being repeated."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.clock import SystemClock
from bastion.durable import DurableAdmin
from bastion.memory.default import SqlMemory
from bastion.messages import AgentRequest, RunStatus
from bastion.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _settings(workers) -> Settings:
    return Settings(
        data_dir=workers.data_dir,
        memory={"database_url": workers.backend} if workers.backend else {},
        durable={"polling_interval_s": 0.05},
    )


async def _wait_status(settings: Settings, run_id: str, wanted: set[RunStatus]) -> RunStatus:
    memory = SqlMemory.from_url(settings.database_url, clock=SystemClock())
    await memory.start()
    try:
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            record = await memory.get_run(run_id)
            if record is not None and record.status in wanted:
                return record.status
            await asyncio.sleep(0.1)
        raise AssertionError(f"run {run_id} never reached {wanted}")
    finally:
        await memory.close()


def _emails(log: Path) -> int:
    conn = sqlite3.connect(log)
    try:
        return int(conn.execute("select count(*) from emails").fetchone()[0])
    finally:
        conn.close()


def _executions(log: Path, name: str) -> int:
    conn = sqlite3.connect(log)
    try:
        return int(
            conn.execute("select count(*) from executions where name = ?", (name,)).fetchone()[0]
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("die", "decision", "emails"),
    [("after-email", "skip", 1), ("before-email", "retry", 1)],
    ids=["sent-then-crashed", "crashed-before-sending"],
)
async def test_unknown_outcome_waits_for_an_operator(workers, die, decision, emails):
    settings = _settings(workers)
    admin = DurableAdmin(settings=settings)
    dying = workers("w1", K9_DIE=die)
    request = AgentRequest(user_id="u", session_id="s", message="refund please")
    await admin.enqueue(request, deadline_at=datetime.now(UTC) + timedelta(minutes=5))
    assert await asyncio.to_thread(dying.proc.wait, 60) == 137  # died mid-call
    workers("w1")  # restarted with the same id: recovers the run
    status = await _wait_status(settings, request.run_id, {RunStatus.AWAITING_OPERATOR})
    assert status is RunStatus.AWAITING_OPERATOR
    assert _emails(workers.log) == (1 if die == "after-email" else 0)  # never re-sent blindly
    await admin.send(request.run_id, "operator", {"action": decision, "by": "test"}, key="k1")
    await admin.send(request.run_id, "operator", {"action": decision, "by": "test"}, key="k1")
    final = await _wait_status(
        settings, request.run_id, {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED}
    )
    assert final is RunStatus.COMPLETED
    assert _emails(workers.log) == emails
    assert _executions(workers.log, "scripted:kill9") == 1  # the plan was never asked for again


async def test_operator_abort_ends_the_run(workers):
    settings = _settings(workers)
    admin = DurableAdmin(settings=settings)
    dying = workers("w1", K9_DIE="after-email")
    request = AgentRequest(user_id="u", session_id="s", message="refund please")
    await admin.enqueue(request, deadline_at=datetime.now(UTC) + timedelta(minutes=5))
    await asyncio.to_thread(dying.proc.wait, 60)
    workers("w1")
    await _wait_status(settings, request.run_id, {RunStatus.AWAITING_OPERATOR})
    await admin.send(request.run_id, "operator", {"action": "abort", "by": "test"}, key="k2")
    assert await _wait_status(settings, request.run_id, {RunStatus.ABORTED}) is RunStatus.ABORTED
    assert _emails(workers.log) == 1


async def test_a_dead_workers_runs_are_taken_over_by_a_live_one(workers):
    settings = _settings(workers)
    admin = DurableAdmin(settings=settings)
    dying = workers("doomed", K9_DIE="after-email")
    request = AgentRequest(user_id="u", session_id="s", message="refund please")
    await admin.enqueue(request, deadline_at=datetime.now(UTC) + timedelta(minutes=5))
    await asyncio.to_thread(dying.proc.wait, 60)
    workers("survivor")  # another id: takes over after the heartbeat timeout (2 s here)
    status = await _wait_status(settings, request.run_id, {RunStatus.AWAITING_OPERATOR})
    assert status is RunStatus.AWAITING_OPERATOR


async def test_a_second_live_worker_with_the_same_id_is_refused(workers):
    workers("same")
    second = workers("same", wait=False)
    code = await asyncio.to_thread(second.proc.wait, 60)
    await asyncio.to_thread(second.reader.join, 10)
    assert code == 2
    assert any("in use by a live process" in line for line in second.lines)
