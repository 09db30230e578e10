"""The run's workflow: what a run started here is spared (the journal's read, the wait for DBOS
to record its end), and what still holds when it is."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbos._sys_db import SystemDatabase
from tests.durable.conftest import SCRIPTS
from tests.flow.conftest import ALICE, plan

from bastion import AgentRequest, RunStatus, tool
from bastion.durable import DurableAdmin
from bastion.durable.journal import Entry, Journal
from bastion.errors import Superseded
from bastion.models.scripted import ScriptedModel
from bastion.settings import Settings, load_settings
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock

refunds: list[str] = []


@tool(permissions=("basic",), side_effects=True, idempotent=True)
async def refund(order_id: str) -> str:
    """Refunds an order."""
    refunds.append(order_id)
    return "refunded"


@pytest.fixture
def settings(tmp_path: Path, backend: str | None) -> Settings:
    extra: dict[str, Any] = {"memory": {"database_url": backend}} if backend else {}
    return load_settings(
        data_dir=tmp_path, durable={"enabled": True, "polling_interval_s": 0.01}, **extra
    )


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[AgentSystem]:
    refunds.clear()
    model = ScriptedModel([plan(("refund", {"order_id": "A1"}))], name="scripted:test")
    system = AgentSystem.from_settings(
        settings, tools=[refund], principals=[ALICE], model=model, clock=FakeClock()
    )
    yield system
    await system.close()


def _request() -> AgentRequest:
    return AgentRequest(user_id="alice", session_id="s1", message="refund A1")


async def _workflow_status(settings: Settings, run_id: str) -> str | None:
    runs = {w.run_id: w.status for w in await DurableAdmin(settings=settings).runs()}
    return runs.get(run_id)


async def test_a_run_started_here_does_not_read_its_journal(system, monkeypatch):
    """DBOS runs the body from this start only if the start created the workflow: nothing ran
    before, so there is nothing to read (a recovered run reads it: tests/durable/test_recovery)."""
    loads: list[str] = []
    original = Journal.load

    async def load(self: Journal, run_id: str) -> dict[int, Entry]:
        loads.append(run_id)
        return await original(self, run_id)

    monkeypatch.setattr(Journal, "load", load)
    async with system:
        response = await system.run(_request())
        assert system.durable is not None
        steps = await system.durable.journal.steps(response.run_id)
    assert response.status is RunStatus.COMPLETED
    assert loads == []
    assert refunds == ["A1"]
    assert [s.name for s in steps if s.name.startswith("tool:")] == ["tool:refund"]


async def test_a_fresh_run_whose_id_was_journaled_before_stops_before_acting(system, settings):
    """A run id reused after DBOS's records were lost: its old journal is not read, and the first
    checkpoint of the new execution meets it: the run stops, refunding nothing."""
    request = _request()
    async with system:
        assert system.durable is not None
        await system.durable.journal.record(
            request.run_id, Entry(0, "authenticate", "an-earlier-execution", {}, 0, 0)
        )
        response = await system.run(request)
        record = await system.components.memory.get_run(request.run_id)
    assert refunds == []
    assert response.status is RunStatus.FAILED
    assert response.message == "This request is being handled by another worker."
    assert "checkpointed by another execution" in (response.error or "")
    # Stopped at its first write after the checkpoint: the run's record says no more than
    # that it was admitted (a taken-over execution leaves the run to the one that took it).
    assert record is not None
    assert record.status is RunStatus.ADMITTED
    assert await _workflow_status(settings, request.run_id) == "ERROR"


async def test_the_answer_does_not_wait_for_dbos_to_record_the_runs_end(
    system, settings, monkeypatch
):
    """The caller gets the answer once the run's records are committed; DBOS's record of the end
    follows, and closing the system waits for it (the run is not left to be recovered)."""
    recording, release, recorded = threading.Event(), threading.Event(), threading.Event()
    original = SystemDatabase.update_workflow_outcome

    def slow_outcome(self: SystemDatabase, *args: Any, **kwargs: Any) -> Any:
        recording.set()
        if not release.wait(60):
            raise TimeoutError("the test never released the outcome")
        done = original(self, *args, **kwargs)
        recorded.set()
        return done

    monkeypatch.setattr(SystemDatabase, "update_workflow_outcome", slow_outcome)
    assert system.durable is not None
    engine = system.durable
    shutting_down = asyncio.Event()
    recorded_at_teardown: list[bool] = []
    shutdown, teardown = engine.shutdown, engine._teardown

    async def watched_shutdown() -> None:
        shutting_down.set()
        await shutdown()

    def watched_teardown() -> None:
        recorded_at_teardown.append(recorded.is_set())
        teardown()

    monkeypatch.setattr(engine, "shutdown", watched_shutdown)
    monkeypatch.setattr(engine, "_teardown", watched_teardown)
    try:
        await system.start()
        response = await asyncio.wait_for(system.run(_request()), 30)
        # Answered, though DBOS cannot have recorded the end: that waits for `release`.
        assert response.status is RunStatus.COMPLETED
        record = await system.components.memory.get_run(response.run_id)
        assert record is not None
        assert record.status is RunStatus.COMPLETED
        assert await asyncio.to_thread(recording.wait, 30)  # DBOS is recording it
        closing = asyncio.create_task(system.close())
        await shutting_down.wait()
        release.set()
        await closing
    finally:
        release.set()
    assert recorded_at_teardown == [True]  # the shutdown waited for the record
    assert await _workflow_status(settings, response.run_id) == "SUCCESS"
    assert refunds == ["A1"]


async def test_a_run_whose_end_dbos_cannot_record_still_answers_and_says_so(
    system, settings, caplog
):
    """The run stays pending in DBOS (recovered at the next start, it replays to its end)."""

    def refuse(self: SystemDatabase, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("the system database refused the outcome")

    original = SystemDatabase.update_workflow_outcome
    SystemDatabase.update_workflow_outcome = refuse  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="bastion.durable"):
            async with system:
                response = await system.run(_request())
    finally:
        SystemDatabase.update_workflow_outcome = original  # type: ignore[method-assign]
    assert response.status is RunStatus.COMPLETED
    assert "the end of a run was not recorded" in caplog.text
    assert await _workflow_status(settings, response.run_id) == "PENDING"


def _executions(log: Path) -> dict[str, int]:
    conn = sqlite3.connect(log)
    try:
        rows = conn.execute("select name, count(*) from executions group by name").fetchall()
        return {name: int(count) for name, count in rows}
    finally:
        conn.close()


def _spawn(script: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_run_killed_after_it_answered_finishes_on_restart_running_nothing_again(
    workers, settings
):
    """The process dies after the caller had the answer, before DBOS recorded the end: the
    restarted executor replays the run to the same end, and no tool or model call runs again."""
    env = workers.env(K9_FAST="1", BASTION_DURABLE__EXECUTOR_ID="w1")
    proc = _spawn(SCRIPTS / "answer_then_hang.py", env)
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        # Both the answer and DBOS starting (and never finishing) to record the run's end.
        while not ("recording the end\n" in lines and any(x.startswith("{") for x in lines)):
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
            assert line, f"the process ended early: {lines}"
            lines.append(line)
    finally:
        proc.kill()  # kill -9: DBOS never recorded the end
        proc.wait()
        proc.stdout.close()
    answered = json.loads(next(x for x in lines if x.startswith("{")))
    assert answered["status"] == "completed"
    before = _executions(workers.log)
    assert before == {"scripted:kill9": 1, "lookup": 2, "refund": 1, "email": 1}
    admin = DurableAdmin(settings=settings)
    assert await _workflow_status(settings, answered["run_id"]) == "PENDING"

    workers("w1")  # the same executor again: recovers its pending run
    give_up = time.monotonic() + 60
    while await _workflow_status(settings, answered["run_id"]) != "SUCCESS":
        assert time.monotonic() < give_up, "the recovered run never ended"
        await asyncio.sleep(0.1)
    assert _executions(workers.log) == before  # replayed: nothing ran again
    [run] = [w for w in await admin.runs() if w.run_id == answered["run_id"]]
    assert run.status == "SUCCESS"


async def test_an_execution_superseded_while_responding_records_no_failure(system, monkeypatch):
    """Superseded at the run's last writes: the run loop lets it through instead of recording
    the run as failed (the run is the other execution's to finish)."""
    import bastion.system

    async def superseded(*_args: Any, **_kwargs: Any) -> Any:
        raise Superseded("another execution wrote this run's end first")

    monkeypatch.setattr(bastion.system, "respond", superseded)
    async with system:
        response = await system.run(_request())
        record = await system.components.memory.get_run(response.run_id)
    assert response.status is RunStatus.FAILED
    assert response.message == Superseded.user_message
    assert "wrote this run's end first" in (response.error or "")
    assert record is not None
    assert record.status is not RunStatus.FAILED  # nothing recorded by this execution
