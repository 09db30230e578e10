"""The worker registry: unique live ids, heartbeats, dead workers claimed by exactly one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from bastion.durable.workers import WorkerRegistry, auto_executor_id
from bastion.errors import ConfigError
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.storage.tables import workers
from bastion.testing import FakeClock


@pytest.fixture
async def engine(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await migrate(engine)
    yield engine
    await engine.dispose()


def _registry(engine, clock, executor_id, takeover_after_s=30.0, startup_grace_s=0.0):
    return WorkerRegistry(
        engine=engine,
        clock=clock,
        executor_id=executor_id,
        takeover_after_s=takeover_after_s,
        startup_grace_s=startup_grace_s,
    )


async def _pretend_other_process(engine, executor_id, pid):
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(workers).where(workers.c.executor_id == executor_id).values(pid=pid)
        )


def _live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return proc


async def test_a_second_live_process_cannot_take_a_live_id(engine):
    clock = FakeClock()
    await _registry(engine, clock, "w1").register()
    other = _live_pid()
    try:
        await _pretend_other_process(engine, "w1", other.pid)
        with pytest.raises(ConfigError, match="in use by a live process"):
            await _registry(engine, clock, "w1").register()
    finally:
        other.kill()
        other.wait()


async def test_a_dead_pid_on_this_host_frees_its_id_at_once(engine):
    clock = FakeClock()
    await _registry(engine, clock, "w1").register()
    gone = _live_pid()
    gone.kill()
    gone.wait()
    await _pretend_other_process(engine, "w1", gone.pid)
    await _registry(engine, clock, "w1").register()  # no error: that process is dead


async def test_a_stale_heartbeat_frees_the_id(engine):
    clock = FakeClock()
    await _registry(engine, clock, "w1").register()
    other = _live_pid()
    try:
        await _pretend_other_process(engine, "w1", other.pid)
        clock.advance(31)
        await _registry(engine, clock, "w1").register()
    finally:
        other.kill()
        other.wait()


async def test_dead_workers_are_claimed_by_exactly_one_survivor(engine):
    clock = FakeClock()
    dead = _registry(engine, clock, "dead")
    await dead.register()
    clock.advance(10)
    a, b = _registry(engine, clock, "a"), _registry(engine, clock, "b")
    await a.register()
    await b.register()
    assert await a.dead() == []  # 10 s is not stale yet
    clock.advance(25)
    await a.heartbeat()
    await b.heartbeat()
    assert await a.dead() == ["dead"]
    assert [await a.claim("dead"), await b.claim("dead")] == [True, False]
    assert await b.dead() == []
    info = {w.executor_id: w for w in await a.all()}
    assert info["dead"].taken_over_by == "a"


async def test_a_fresh_heartbeat_is_never_claimed(engine):
    clock = FakeClock()
    alive = _registry(engine, clock, "alive")
    await alive.register()
    survivor = _registry(engine, clock, "survivor")
    await survivor.register()
    clock.advance(29)
    await alive.heartbeat()
    clock.advance(29)
    assert await survivor.claim("alive") is False


async def test_stop_is_recorded(engine):
    clock = FakeClock()
    registry = _registry(engine, clock, "w")
    await registry.register()
    await registry.stop()
    [info] = await registry.all()
    assert info.stopped_at is not None


def test_auto_ids_are_unique_and_name_the_process():
    first, second = auto_executor_id(), auto_executor_id()
    assert first != second
    assert str(os.getpid()) in first


async def test_a_worker_presumed_dead_learns_it_and_is_claimable_again_once_it_beat(engine):
    clock = FakeClock()
    slow, survivor = _registry(engine, clock, "slow"), _registry(engine, clock, "survivor")
    await slow.register()
    await survivor.register()
    assert await slow.heartbeat() is None  # nobody took it over
    clock.advance(31)  # a stalled machine: the slow worker's beat is late
    assert await survivor.heartbeat() is None
    assert await survivor.claim("slow") is True
    assert await survivor.dead() == []  # claimed once: not again while it stays silent
    clock.advance(40)
    assert await survivor.claim("slow") is False
    # It was alive after all: its next beat tells it who took its runs (it must stop) ...
    assert await slow.heartbeat() == "survivor"
    # ... and if it dies after that beat, the runs it took since are claimable again.
    clock.advance(31)
    assert await survivor.dead() == ["slow"]
    assert await survivor.claim("slow") is True
    # A restart under the same id is a new life: nobody has taken that one over.
    await _registry(engine, clock, "slow").register()
    assert await slow.heartbeat() is None


async def test_the_engine_stops_a_process_whose_runs_were_taken_over(engine, tmp_path):
    from bastion.durable.engine import DurableEngine
    from bastion.settings import Settings

    clock = FakeClock()
    fenced: list[str] = []
    durable = DurableEngine(
        settings=Settings(data_dir=tmp_path, durable={"executor_id": "slow"}),
        store=engine,
        clock=clock,
        checkpoint_key=bytes(32),
        on_fenced=lambda: fenced.append("stopped"),
    )
    durable.serve_queue = False
    await durable.registry.register()
    await durable.beat()
    assert fenced == []
    clock.advance(31)
    assert await _registry(engine, clock, "survivor").claim("slow") is True
    await durable.beat()
    assert fenced == ["stopped"]


def test_a_takeover_timeout_shorter_than_three_beats_is_refused(tmp_path):
    from bastion.settings import load_settings

    with pytest.raises(ConfigError, match="at least 3 heartbeats"):
        load_settings(data_dir=tmp_path, durable={"heartbeat_s": 5, "takeover_after_s": 10})


async def test_a_starting_process_is_not_taken_for_dead_within_its_grace(engine):
    clock = FakeClock()
    starting = _registry(engine, clock, "starting", startup_grace_s=60)
    survivor = _registry(engine, clock, "survivor", startup_grace_s=60)
    await starting.register()  # ... and then DBOS takes long to launch: no beat yet
    clock.advance(45)
    await survivor.register()
    assert await survivor.dead() == []
    assert await survivor.claim("starting") is False
    clock.advance(16)  # past the grace with no beat at all: it died while starting
    assert await survivor.dead() == ["starting"]
    assert await survivor.claim("starting") is True
