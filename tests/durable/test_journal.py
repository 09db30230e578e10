"""The step journal: replay, a replay that takes another path, two executions, cancellation,
sealed outputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOS
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.flow.conftest import ALICE, plan

from bastion import AgentRequest, RunStatus, tool
from bastion.durable import DurableAdmin
from bastion.durable.codec import JsonSerializer, encode_run_input
from bastion.durable.engine import APP_NAME, RUN_QUEUE, sqlite_engine, system_database_url
from bastion.durable.journal import (
    CheckpointUnreadable,
    Entry,
    Journal,
    ReplayMismatch,
    RunTakenOver,
)
from bastion.durable.steps import (
    CANCEL_CHECK_S,
    DurableClock,
    DurableInbox,
    Execution,
    current_step,
)
from bastion.durable.workflow import WORKFLOW_NAME
from bastion.errors import ConfigError
from bastion.models.scripted import ScriptedModel
from bastion.settings import load_settings
from bastion.storage import create_engine, migrate
from bastion.storage.tables import durable_steps
from bastion.storage.writes import TransactionRunner
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock

RUN = "run-1"
KEY = bytes(range(32))


@pytest.fixture
async def engine(tmp_path: Path, backend: str | None) -> AsyncIterator[AsyncEngine]:
    """A migrated database of each backend."""
    engine = create_engine(backend or f"sqlite:///{tmp_path / 'bastion.sqlite'}")
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def journal(engine: AsyncEngine) -> AsyncIterator[Journal]:
    journal = Journal(engine, key=KEY)
    try:
        yield journal
    finally:
        await journal.aclose()


async def _never_cancelled(_run_id: str) -> bool:
    return False


async def _execution(journal: Journal, token: str, **options: Any) -> Execution:
    options.setdefault("cancelled", _never_cancelled)
    return Execution(
        run_id=RUN, token=token, journal=journal, recorded=await journal.load(RUN), **options
    )


def _counting(value: Any) -> tuple[list[int | None], Callable[[], Awaitable[Any]]]:
    calls: list[int | None] = []

    async def step() -> Any:
        calls.append(current_step())
        return value

    return calls, step


async def test_a_recorded_step_returns_its_output_without_running_again(journal):
    first = await _execution(journal, "e1")
    calls, step = _counting({"order": "A1", "amount": 12.5, "items": [1, 2]})
    assert await first.run("tool:lookup", step, check=False) == {
        "order": "A1",
        "amount": 12.5,
        "items": [1, 2],
    }
    assert calls == [0]  # the step knew its position while it ran
    await first.flush()

    replay = await _execution(journal, "e2")
    assert await replay.run("tool:lookup", step, check=False) == {
        "order": "A1",
        "amount": 12.5,
        "items": [1, 2],
    }
    assert calls == [0]  # not run again
    calls_after, after = _counting("next")
    assert await replay.run("tool:email", after, check=False) == "next"
    assert calls_after == [1]
    await replay.flush()
    assert [(e.seq, e.name, e.execution, e.output) for e in await journal.steps(RUN)] == [
        (0, "tool:lookup", "e1", None),  # listed without their outputs
        (1, "tool:email", "e2", None),
    ]


async def test_a_replay_that_takes_another_path_stops(journal):
    first = await _execution(journal, "e1")
    await first.run("tool:lookup", _counting(1)[1], check=False)
    await first.flush()
    replay = await _execution(journal, "e2")
    calls, other = _counting(2)
    with pytest.raises(ReplayMismatch, match="'tool:lookup' when first run and is 'tool:refund'"):
        await replay.run("tool:refund", other, check=False)
    assert calls == []


async def test_a_step_journaled_by_another_execution_stops_this_one(journal):
    # Two live executions of one run (a worker presumed dead goes on): the first write wins.
    zombie = await _execution(journal, "zombie")
    taker = await _execution(journal, "taker")
    await taker.run("tool:lookup", _counting("taker's")[1], check=False)
    await taker.flush()
    await zombie.run("tool:lookup", _counting("zombie's")[1], check=False)
    with pytest.raises(RunTakenOver, match="another execution"):
        await zombie.flush()
    [entry] = (await journal.load(RUN)).values()
    assert (entry.execution, entry.output) == ("taker", "taker's")


async def _journaled(journal: Journal, run_id: str = RUN) -> list[tuple[int, str]]:
    return [(e.seq, e.name) for e in await journal.steps(run_id)]


async def test_a_read_only_steps_checkpoint_commits_with_the_runs_next_write(journal, engine):
    # E.g. a lookup's checkpoint and the run's record of the lookup: one transaction.
    execution = await _execution(journal, "e1")
    deactivate = execution.activate()
    runner = TransactionRunner(engine)
    try:
        await execution.run("tool:lookup", _counting("A1")[1], check=False)
        assert await _journaled(journal) == []  # waits for the run's next write
        await runner.run(journal.write("other", Entry(0, "record", "e1", 1, 1, 2)))
        assert await _journaled(journal) == [(0, "tool:lookup")]
    finally:
        deactivate()
        await runner.aclose()


async def test_a_step_with_side_effects_runs_once_the_checkpoints_before_it_are_committed(
    journal,
):
    execution = await _execution(journal, "e1")
    await execution.run("model:m", _counting("plan")[1], check=False)
    seen: list[list[tuple[int, str]]] = []

    async def refund() -> str:
        seen.append(await _journaled(journal))
        return "refunded"

    assert await execution.run("tool:refund", refund, check=True) == "refunded"
    assert seen == [[(0, "model:m")]]
    # Its own is committed before the run goes on, with no write of the run's to carry it.
    assert await _journaled(journal) == [(0, "model:m"), (1, "tool:refund")]


async def test_a_taken_over_executions_next_write_fails_with_its_checkpoint(journal, engine):
    zombie = await _execution(journal, "zombie")
    taker = await _execution(journal, "taker")
    await taker.run("tool:lookup", _counting("taker's")[1], check=False)
    await taker.flush()
    deactivate = zombie.activate()
    runner = TransactionRunner(engine)
    try:
        await zombie.run("tool:lookup", _counting("zombie's")[1], check=False)
        with pytest.raises(RunTakenOver, match="another execution"):
            # The zombie's record of its lookup, say: rolled back, never over the taker's.
            await runner.run(journal.write("other", Entry(0, "record", "zombie", 1, 1, 2)))
    finally:
        deactivate()
        await runner.aclose()
    assert await _journaled(journal, "other") == []
    assert (await journal.load(RUN))[0].execution == "taker"


async def test_a_durable_sleep_is_committed_before_it_sleeps(journal):
    slept: list[list[tuple[int, str]]] = []

    class Watching(FakeClock):
        async def sleep(self, seconds: float) -> None:
            slept.append(await _journaled(journal))
            await super().sleep(seconds)

    execution = await _execution(journal, "e1")
    deactivate = execution.activate()
    try:
        await execution.run("model:m", _counting("plan")[1], check=False)
        await DurableClock(Watching()).sleep(30)
    finally:
        deactivate()
    assert slept == [[(0, "model:m"), (1, "sleep")]]


async def test_a_run_commits_its_checkpoints_before_it_waits_for_a_message(journal, monkeypatch):
    waited: list[list[tuple[int, str]]] = []

    async def recv_async(topic: str, timeout_seconds: float) -> dict[str, Any]:
        waited.append(await _journaled(journal))
        return {"decision": "approve"}

    monkeypatch.setattr(DBOS, "recv_async", recv_async)
    execution = await _execution(journal, "e1")
    deactivate = execution.activate()
    try:
        await execution.run("model:m", _counting("plan")[1], check=False)
        assert await DurableInbox().receive("approval", timeout_s=60) == {"decision": "approve"}
    finally:
        deactivate()
    assert waited == [[(0, "model:m")]]


async def test_a_write_repeated_by_its_own_execution_is_accepted(journal):
    # E.g. a write retried after its commit's answer was lost on the way back.
    entry = Entry(0, "model:m", "e1", {"text": "hi"}, 1, 2)
    await journal.record(RUN, entry)
    await journal.record(RUN, entry)
    assert await journal.load(RUN) == {0: entry}


async def test_a_cancelled_run_stops_before_its_next_step(journal):
    async def cancelled(_run_id: str) -> bool:
        return True

    execution = await _execution(journal, "e1", cancelled=cancelled)
    calls, step = _counting(1)
    with pytest.raises(asyncio.CancelledError):
        await execution.run("tool:refund", step, check=True)
    assert calls == []
    assert await journal.steps(RUN) == []


async def test_cancellation_is_checked_at_most_every_interval_unless_asked(journal):
    checks: list[str] = []
    now = [100.0]

    async def cancelled(run_id: str) -> bool:
        checks.append(run_id)
        return False

    execution = await _execution(journal, "e1", cancelled=cancelled, monotonic=lambda: now[0])
    await execution.run("a", _counting(1)[1], check=False)  # DBOS checked as the run started
    now[0] += CANCEL_CHECK_S / 2
    await execution.run("b", _counting(2)[1], check=False)
    assert checks == []
    await execution.run("c", _counting(3)[1], check=True)  # a side effect always checks
    assert len(checks) == 1
    now[0] += CANCEL_CHECK_S / 2
    await execution.run("d", _counting(4)[1], check=False)
    assert len(checks) == 1
    now[0] += CANCEL_CHECK_S / 2
    await execution.run("e", _counting(5)[1], check=False)  # a second since the last check
    assert checks == [RUN] * 2


async def test_forget_deletes_the_runs_journal_only(journal):
    await journal.record(RUN, Entry(0, "a", "e1", 1, 1, 2))
    await journal.record("other", Entry(0, "a", "e1", 1, 1, 2))
    assert await journal.forget([RUN, "never-ran"]) == 1
    assert await journal.steps(RUN) == []
    assert len(await journal.load("other")) == 1


async def test_a_run_cancelled_from_elsewhere_runs_no_further_side_effect(tmp_path):
    """``bastion runs cancel`` in another process: the run stops before its next side effect."""
    entered, release = asyncio.Event(), asyncio.Event()
    refunds: list[str] = []

    @tool(permissions=("basic",), timeout_s=60)
    async def wait_for_stock() -> str:
        """Waits until released."""
        entered.set()
        await release.wait()
        return "in stock"

    @tool(permissions=("basic",), side_effects=True, idempotent=True)
    async def refund(order_id: str) -> str:
        """Refunds an order."""
        refunds.append(order_id)
        return "refunded"

    settings = load_settings(
        data_dir=tmp_path, durable={"enabled": True, "polling_interval_s": 0.01}
    )
    model = ScriptedModel(
        [plan(("wait_for_stock", {}), ("refund", {"order_id": "A1"}))], name="scripted:test"
    )
    system = AgentSystem.from_settings(
        settings,
        tools=[wait_for_stock, refund],
        principals=[ALICE],
        model=model,
        clock=FakeClock(),
    )
    request = AgentRequest(user_id="alice", session_id="s1", message="refund A1")
    async with system:
        running = asyncio.create_task(system.run(request))
        await asyncio.wait_for(entered.wait(), 30)
        assert system.durable is not None
        waiting = asyncio.create_task(system.durable.wait(request.run_id))  # another waiter
        await DurableAdmin(settings=settings).cancel(request.run_id)  # as another process does
        release.set()
        response = await asyncio.wait_for(running, 60)
        waited = await asyncio.wait_for(waiting, 60)
        record = await system.components.memory.get_run(request.run_id)
    assert refunds == []
    assert response.status is RunStatus.CANCELLED
    assert waited.status is RunStatus.CANCELLED
    assert record is not None
    assert record.status is RunStatus.CANCELLED


async def test_a_run_of_a_version_that_checkpointed_in_dbos_is_not_resumed(tmp_path):
    from dbos import DBOSClient

    settings = load_settings(data_dir=tmp_path, durable={"enabled": True})
    url = system_database_url(settings)
    engine = sqlite_engine(url, "NORMAL")
    client = DBOSClient(
        system_database_engine=engine, serializer=JsonSerializer(), application_name=APP_NAME
    )
    request = AgentRequest(user_id="u", session_id="s", message="refund please")
    try:
        client._sys_db.run_migrations()
        client.enqueue(
            {
                "queue_name": RUN_QUEUE,
                "workflow_name": WORKFLOW_NAME,
                "workflow_id": request.run_id,
                "app_version": "bastion-run-2",
                "queue_partition_key": "u",
            },
            encode_run_input(request, datetime.now(UTC) + timedelta(minutes=5)),
        )
    finally:
        client.destroy()
        engine.dispose()
    admin = DurableAdmin(settings=settings)
    with pytest.raises(ConfigError, match=r"bastion-run-2.*cannot replay"):
        await admin.resume(request.run_id)
    [stranded] = await admin.stranded()
    assert stranded.app_version == "bastion-run-2"  # left as it was


async def _stored(engine: AsyncEngine) -> list[tuple[str, int, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.select(durable_steps.c.run_id, durable_steps.c.seq, durable_steps.c.output)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_outputs_are_sealed_at_rest(journal, engine):
    secret = "sk-canary-0123456789abcdef"
    await journal.record(RUN, Entry(0, "model:m", "e1", {"text": f"use {secret}"}, 1, 2))
    [(run_id, seq, stored)] = await _stored(engine)
    assert (run_id, seq) == (RUN, 0)
    assert secret not in stored
    assert "use" not in stored
    assert (await journal.load(RUN))[0].output == {"text": f"use {secret}"}


async def test_a_checkpoint_does_not_open_under_another_key(journal, engine):
    await journal.record(RUN, Entry(0, "model:m", "e1", "plan", 1, 2))
    other = Journal(engine, key=bytes(32))
    try:
        with pytest.raises(CheckpointUnreadable, match="another secret"):
            await other.load(RUN)
    finally:
        await other.aclose()


async def test_a_checkpoint_moved_to_another_place_does_not_open(journal, engine):
    # Sealed outputs are bound to their run, position and name: a row's output copied over
    # another step's (to replay a refund's outcome elsewhere, say) is refused, not replayed.
    await journal.record(RUN, Entry(0, "tool:refund", "e1", "refunded 500", 1, 2))
    await journal.record(RUN, Entry(1, "tool:lookup", "e1", "order A1", 3, 4))
    async with engine.begin() as connection:
        refund = (
            await connection.execute(
                sa.select(durable_steps.c.output).where(durable_steps.c.seq == 0)
            )
        ).scalar_one()
        await connection.execute(
            sa.update(durable_steps).where(durable_steps.c.seq == 1).values(output=refund)
        )
    with pytest.raises(CheckpointUnreadable, match="checkpoint 1 \\(tool:lookup\\)"):
        await journal.load(RUN)
