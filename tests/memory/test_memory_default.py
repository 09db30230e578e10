from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.errors import ConfigError
from bastion.memory import MemoryManager, RunRecord, SqlMemory
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    EventKind,
    PlanStep,
    RunEvent,
    RunStatus,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
    Verdict,
)
from bastion.storage import LATEST_VERSION
from bastion.storage.tables import run_steps, schema_version

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _request(
    message: str = "where is my order?", *, user: str = "u1", session: str = "s1", run: str = "r1"
) -> AgentRequest:
    return AgentRequest(user_id=user, session_id=session, message=message, run_id=run)


def _plan(revision: int = 0) -> AgentPlan:
    return AgentPlan(
        steps=(
            PlanStep(
                step_id=1,
                description="look the order up",
                tool_name="get_order",
                tool_args={"order_id": "A-1", "fields": ["status", {"nested": True}]},
                expect={"keys": ["status"]},
                status=StepStatus.SUCCESS,
                result={"status": "shipped", "items": [1, 2.5, None]},
                cost_usd=Decimal("0.000000075"),
            ),
            PlanStep(step_id=2, description="refund", tool_name="refund", tool_args={"n": 3}),
        ),
        reasoning=f"revision {revision}",
        revision=revision,
        model="local:qwen",
    )


def _step_record(status: StepStatus = StepStatus.FAILED, attempts: int = 2) -> StepRecord:
    return StepRecord(
        step=_plan().steps[1],
        status=status,
        outcome=ToolOutcome.failure(
            ToolErrorKind.TIMEOUT, "refund service slow", duration_s=30.5, transient=True
        ),
        verdict=Verdict(passed=False, reason="timed out", retryable=True),
        attempts=attempts,
        plan_revision=1,
        tool_name="refund_fallback",
    )


def _event(seq: int, run: str = "r1", kind: EventKind = EventKind.STATUS) -> RunEvent:
    return RunEvent(
        run_id=run, seq=seq, kind=kind, at=_T0 + timedelta(seconds=seq), data={"seq": seq}
    )


def test_sql_memory_is_a_memory_manager(memory):
    manager: MemoryManager = memory
    assert isinstance(manager, SqlMemory)


# -- lifecycle -----------------------------------------------------------------------------------


async def test_start_migrates_and_is_safe_to_call_twice(memory, db_engine):
    await memory.start()
    async with db_engine.connect() as connection:
        versions = list(await connection.scalars(sa.select(schema_version.c.version)))
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))


async def test_using_it_before_start_is_a_clear_error(db_engine, clock):
    memory = SqlMemory(engine=db_engine, clock=clock)
    with pytest.raises(RuntimeError, match=r"await memory.start\(\)"):
        await memory.get_run("r1")


async def test_using_it_after_close_is_a_clear_error(memory):
    await memory.close()
    with pytest.raises(RuntimeError, match="not started"):
        await memory.list_runs()


async def test_from_url_owns_its_engine_and_disposes_of_it(database_url, clock):
    async with SqlMemory.from_url(database_url, clock=clock) as memory:
        pool = memory.engine.pool
        await memory.create_run(_request(), at=_T0)
        assert await memory.get_run("r1") is not None
    assert memory.engine.pool is not pool  # dispose() replaced the pool, closing its connections


async def test_a_shared_engine_is_left_open(memory, db_engine):
    pool = db_engine.pool
    await memory.close()
    assert db_engine.pool is pool


def test_from_url_refuses_a_bad_url(clock):
    with pytest.raises(ConfigError, match="does not support"):
        SqlMemory.from_url("mysql://x@h/db", clock=clock)


async def test_start_on_an_unreachable_database_is_a_config_error(clock):
    memory = SqlMemory.from_url("postgresql://bob:hunter2@127.0.0.1:1/nowhere", clock=clock)
    try:
        with pytest.raises(ConfigError, match="cannot connect to the database") as caught:
            await memory.start()
        assert "hunter2" not in str(caught.value)
    finally:
        await memory.close()


async def test_start_on_a_newer_schema_is_a_config_error(memory, db_engine, clock):
    async with db_engine.begin() as connection:
        await connection.execute(sa.insert(schema_version).values(version=LATEST_VERSION + 1))
    with pytest.raises(ConfigError, match="upgrade Bastion"):
        await SqlMemory(engine=db_engine, clock=clock).start()


# -- runs ----------------------------------------------------------------------------------------


async def test_a_run_round_trips_exactly(memory, clock):
    request = _request()
    await memory.create_run(request, at=clock.now())
    await memory.save_plan("r1", _plan(revision=0))
    await memory.save_plan("r1", _plan(revision=1))
    await memory.save_step("r1", 1, _step_record())
    await memory.save_step("r1", 0, StepRecord(step=_plan().steps[0], status=StepStatus.SUCCESS))
    await memory.append_events([_event(2, kind=EventKind.PLAN), _event(1)])
    finished = datetime(2026, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    await memory.update_run(
        "r1",
        status=RunStatus.COMPLETED,
        at=finished,
        answer="Your order has shipped.",
        total_cost_usd=Decimal("0.000000123"),
        model="local:qwen",
    )

    run = await memory.get_run("r1")

    assert run == RunRecord(
        run_id="r1",
        user_id="u1",
        session_id="s1",
        request_message="where is my order?",
        status=RunStatus.COMPLETED,
        created_at=_T0,
        updated_at=finished,
        answer="Your order has shipped.",
        total_cost_usd=Decimal("0.000000123"),
        model="local:qwen",
        plan=_plan(revision=1),
        steps=(StepRecord(step=_plan().steps[0], status=StepStatus.SUCCESS), _step_record()),
        events=(_event(1), _event(2, kind=EventKind.PLAN)),
    )
    assert run is not None
    assert run.updated_at.tzinfo is UTC
    assert run.updated_at.hour == 1
    assert run.created_at.tzinfo is UTC
    assert run.events[0].at.tzinfo is UTC
    assert run.status is RunStatus.COMPLETED
    assert run.plan is not None
    assert run.plan.steps[0].cost_usd.as_tuple() == Decimal("0.000000075").as_tuple()
    outcome = run.steps[1].outcome
    assert outcome is not None
    assert outcome.error_kind is ToolErrorKind.TIMEOUT


async def test_an_unknown_run_is_none(memory):
    assert await memory.get_run("nope") is None


async def test_a_new_run_is_admitted_with_no_cost(memory):
    await memory.create_run(_request(), at=_T0)
    run = await memory.get_run("r1")
    assert run is not None
    assert (run.status, run.total_cost_usd, run.plan, run.steps, run.events) == (
        RunStatus.ADMITTED,
        Decimal(0),
        None,
        (),
        (),
    )
    assert run.updated_at == run.created_at == _T0


async def test_a_run_id_is_used_once(memory):
    await memory.create_run(_request(), at=_T0)
    with pytest.raises(ValueError, match="run 'r1' already exists"):
        await memory.create_run(_request("again"), at=_T0)


async def test_update_keeps_what_it_is_not_given(memory):
    await memory.create_run(_request(), at=_T0)
    await memory.update_run(
        "r1", status=RunStatus.RUNNING, at=_T0, answer="a", error="e", model="m",
        total_cost_usd=Decimal("0.5"),
    )  # fmt: skip
    await memory.update_run("r1", status=RunStatus.FAILED, at=_T0 + timedelta(seconds=1))
    run = await memory.get_run("r1")
    assert run is not None
    assert (run.status, run.answer, run.error, run.model, run.total_cost_usd) == (
        RunStatus.FAILED,
        "a",
        "e",
        "m",
        Decimal("0.5"),
    )
    assert run.updated_at == _T0 + timedelta(seconds=1)


async def test_updating_an_unknown_run_names_it(memory):
    with pytest.raises(ValueError, match="cannot update run 'ghost': no such run"):
        await memory.update_run("ghost", status=RunStatus.RUNNING, at=_T0)


async def test_saving_a_step_again_replaces_it(memory):
    await memory.create_run(_request(), at=_T0)
    await memory.save_step("r1", 0, _step_record(StepStatus.RUNNING, attempts=1))
    await memory.save_step("r1", 0, _step_record(StepStatus.SUCCESS, attempts=2))
    run = await memory.get_run("r1")
    assert run is not None
    assert run.steps == (_step_record(StepStatus.SUCCESS, attempts=2),)


async def test_saving_a_plan_revision_again_replaces_it(memory):
    await memory.create_run(_request(), at=_T0)
    await memory.save_plan("r1", _plan(revision=0))
    changed = AgentPlan(steps=_plan().steps[:1], reasoning="shorter", revision=0)
    await memory.save_plan("r1", changed)
    run = await memory.get_run("r1")
    assert run is not None
    assert run.plan == changed


async def test_a_step_row_names_its_status_and_the_tool_actually_run(memory, db_engine):
    await memory.create_run(_request(), at=_T0)
    await memory.save_step("r1", 0, _step_record())  # refund, replaced by its fallback
    await memory.save_step("r1", 1, StepRecord(step=_plan().steps[0], status=StepStatus.SUCCESS))
    async with db_engine.connect() as connection:
        rows = await connection.execute(
            sa.select(run_steps.c.idx, run_steps.c.status, run_steps.c.tool_name).order_by("idx")
        )
        assert [tuple(r) for r in rows] == [
            (0, "failed", "refund_fallback"),
            (1, "success", "get_order"),
        ]


async def test_a_negative_step_index_is_refused(memory):
    await memory.create_run(_request(), at=_T0)
    with pytest.raises(ValueError, match="must not be negative"):
        await memory.save_step("r1", -1, _step_record())


_WRITES_TO_GHOST = {
    "plan": lambda memory: memory.save_plan("ghost", _plan()),
    "step": lambda memory: memory.save_step("ghost", 0, _step_record()),
    "events": lambda memory: memory.append_events([_event(1, run="ghost")]),
}


@pytest.mark.parametrize("write", sorted(_WRITES_TO_GHOST))
async def test_writing_to_an_unknown_run_names_it(memory, write):
    with pytest.raises(ValueError, match=r"no such run \['ghost'\]"):
        await _WRITES_TO_GHOST[write](memory)


async def test_a_repeated_event_seq_keeps_the_first_and_adds_the_new(memory):
    await memory.create_run(_request(), at=_T0)
    await memory.append_events([_event(1)])
    await memory.append_events([_event(2), _event(1, kind=EventKind.ANSWER)])
    run = await memory.get_run("r1")
    assert run is not None
    assert run.events == (_event(1), _event(2))


async def test_appending_no_events_writes_nothing(memory):
    await memory.append_events([])
    assert await memory.list_runs() == []


async def test_event_data_that_is_not_json_is_stored_as_its_json_form(memory):
    await memory.create_run(_request(), at=_T0)
    data: dict[str, Any] = {"cost": Decimal("0.25"), "at": _T0, "tags": ("a", "b")}
    await memory.append_events(
        [RunEvent(run_id="r1", seq=1, kind=EventKind.ANSWER, at=_T0, data=data)]
    )
    run = await memory.get_run("r1")
    assert run is not None
    assert run.events[0].data == {"cost": "0.25", "at": "2026-01-01T00:00:00Z", "tags": ["a", "b"]}


async def test_events_of_several_runs_go_in_one_batch(memory):
    await memory.create_run(_request(run="r1"), at=_T0)
    await memory.create_run(_request(run="r2"), at=_T0)
    await memory.append_events([_event(1, run="r1"), _event(1, run="r2"), _event(2, run="r1")])
    first, second = await memory.get_run("r1"), await memory.get_run("r2")
    assert first is not None
    assert second is not None
    assert [e.seq for e in first.events] == [1, 2]
    assert second.events == (_event(1, run="r2"),)


async def _runs(memory: SqlMemory) -> None:
    specs = [
        ("a", "u1", RunStatus.COMPLETED, 1),
        ("b", "u2", RunStatus.FAILED, 2),
        ("c", "u1", RunStatus.FAILED, 3),
        ("d", "u1", RunStatus.ADMITTED, 4),
    ]
    for run_id, user, status, minute in specs:
        at = _T0 + timedelta(minutes=minute)
        await memory.create_run(_request(user=user, run=run_id), at=at)
        if status is not RunStatus.ADMITTED:
            await memory.update_run(run_id, status=status, at=at)
        await memory.save_plan(run_id, _plan())


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["d", "c", "b", "a"]),
        ({"user_id": "u1"}, ["d", "c", "a"]),
        ({"status": RunStatus.FAILED}, ["c", "b"]),
        ({"user_id": "u1", "status": RunStatus.FAILED}, ["c"]),
        ({"user_id": "nobody"}, []),
        ({"limit": 2}, ["d", "c"]),
    ],
)
async def test_list_runs_filters_newest_first(memory, filters, expected):
    await _runs(memory)
    runs = await memory.list_runs(**filters)
    assert [r.run_id for r in runs] == expected


async def test_list_runs_gives_headers_only(memory):
    await _runs(memory)
    await memory.append_events([_event(1, run="a")])
    (run,) = await memory.list_runs(status=RunStatus.COMPLETED)
    assert (run.run_id, run.plan, run.steps, run.events) == ("a", None, (), ())
    assert run.created_at == _T0 + timedelta(minutes=1)


async def test_list_runs_refuses_a_limit_below_one(memory):
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await memory.list_runs(limit=0)


async def test_replayed_writes_are_no_ops(memory, clock):
    """A durable replay re-enters a run from its start: nothing it writes again is duplicated."""
    from bastion.messages import AgentResponse, EventKind, RunEvent, RunStatus

    request = AgentRequest(user_id="u1", session_id="s1", message="hi", run_id="run_replay")
    await memory.create_run(request, at=clock.now())
    await memory.create_run(request, at=clock.now())  # same request: no-op
    other = AgentRequest(user_id="u2", session_id="s1", message="hi", run_id="run_replay")
    with pytest.raises(ValueError, match="already exists"):
        await memory.create_run(other, at=clock.now())
    first = RunEvent(
        run_id="run_replay", seq=1, kind=EventKind.STATUS, at=clock.now(), data={"a": 1}
    )
    again = RunEvent(
        run_id="run_replay", seq=1, kind=EventKind.STATUS, at=clock.now(), data={"a": 2}
    )
    await memory.append_events([first])
    await memory.append_events([again])
    response = AgentResponse(run_id="run_replay", status=RunStatus.COMPLETED, message="hello")
    await memory.persist_turns(request, response)
    await memory.persist_turns(request, response)
    record = await memory.get_run("run_replay")
    assert record is not None
    assert [e.data for e in record.events] == [{"a": 1}]
    context = await memory.load_context(request, token_budget=1000)
    assert [t.content for t in context.turns] == ["hi", "hello"]
