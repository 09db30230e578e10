"""`forget_user`: nothing of the user is left in any table, on both backends; others keep theirs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.memory import SqlMemory
from bastion.memory.retention import RETAINED_TABLES
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    AgentResponse,
    EventKind,
    PlanStep,
    RunEvent,
    RunStatus,
    StepRecord,
    StepStatus,
    ToolOutcome,
    Verdict,
)
from bastion.models.scripted import ScriptedModel
from bastion.storage.tables import api_keys, audit_entries, principals

GONE = "forget-me-7f3a"
KEPT = "keep-me-2b9c"
#: A word only the forgotten user's fact holds: it must not linger in the full-text index either.
SECRET_WORD = "zanzibarquux"
_AT = datetime(2026, 3, 1, tzinfo=UTC)


async def _fill(memory: SqlMemory, user: str, engine: AsyncEngine) -> None:
    """A run with plan, step and events, a long session (summarised), facts, a key, a principal."""
    request = AgentRequest(user_id=user, session_id=f"{user}-s", message=f"hi from {user}")
    await memory.create_run(request, at=_AT)
    step = PlanStep(step_id=0, description="look", tool_name="lookup", tool_args={"who": user})
    await memory.save_plan(request.run_id, AgentPlan(steps=(step,), reasoning=user))
    await memory.save_step(
        request.run_id,
        0,
        StepRecord(
            step=step,
            status=StepStatus.SUCCESS,
            outcome=ToolOutcome.success({"customer_id": user}),
            verdict=Verdict.ok(),
        ),
    )
    await memory.append_events(
        [RunEvent(run_id=request.run_id, seq=1, kind=EventKind.STATUS, at=_AT, data={"u": user})]
    )
    await memory.update_run(request.run_id, status=RunStatus.COMPLETED, at=_AT, answer=user)
    for n in range(10):
        turn = AgentRequest(user_id=user, session_id=f"{user}-s", message=f"{user} question {n}")
        answer = AgentResponse(run_id=turn.run_id, status=RunStatus.COMPLETED, message="ok")
        await memory.persist_turns(turn, answer)
    await memory.load_context(
        AgentRequest(user_id=user, session_id=f"{user}-s", message="next"),
        token_budget=120,
        model=ScriptedModel([f"{user} asked ten questions"]),
    )
    word = SECRET_WORD if user == GONE else "ordinary"
    await memory.remember(user, f"{user} prefers email about {word}", source="tool")
    await memory.remember(user, "Speaks Italian")
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(api_keys).values(
                key_id=f"k-{user}"[:32],
                principal_id=user,
                name="k",
                digest="d" * 64,
                created_at=_AT,
            )
        )
        await connection.execute(
            sa.insert(principals).values(
                principal_id=user,
                kind="service",
                roles=[],
                scopes=[],
                created_at=_AT,
                updated_at=_AT,
            )
        )


async def _rows_mentioning(engine: AsyncEngine, needle: str) -> dict[str, int]:
    """Every table (SQLite's FTS shadow tables too) whose rows mention `needle`, and how often."""

    def tables(sync: sa.Connection) -> list[str]:
        return list(sa.inspect(sync).get_table_names())

    found: dict[str, int] = {}
    async with engine.connect() as connection:
        for name in await connection.run_sync(tables):
            rows = (await connection.execute(sa.text(f'SELECT * FROM "{name}"'))).all()
            hits = sum(1 for row in rows if _mentions(row, needle))
            if hits:
                found[name] = hits
    return found


def _mentions(row: Any, needle: str) -> bool:
    for value in row:
        if isinstance(value, bytes | bytearray | memoryview):
            if needle.encode() in bytes(value):
                return True
        elif value is not None and needle in str(value):
            return True
    return False


async def test_forget_user_leaves_nothing_of_theirs_in_any_table(memory, db_engine):
    await _fill(memory, GONE, db_engine)
    await _fill(memory, KEPT, db_engine)
    before = await _rows_mentioning(db_engine, GONE)
    # The fill reached every kind of table the user has rows in.
    expected = {"runs", "run_plans", "run_steps", "run_events", "session_turns", "memory_facts"}
    expected |= {"memory_summaries", "api_keys", "principals"}
    assert expected <= set(before)

    report = await memory.forget_user(GONE)

    assert await _rows_mentioning(db_engine, GONE) == {}
    assert await _rows_mentioning(db_engine, SECRET_WORD) == {}
    # (SQLite's FTS table reads its rows from memory_facts: they are not rows of their own.)
    own = {name: n for name, n in before.items() if not name.startswith("memory_facts_fts")}
    assert report.total >= sum(own.values())
    assert {"runs", "session_turns", "memory_facts", "memory_summaries"} <= set(report.deleted)
    # The other user keeps everything, and their facts are still found by search.
    kept = await _rows_mentioning(db_engine, KEPT)
    assert expected <= set(kept)
    assert [f.content for f in await memory.recall(KEPT, "email")] == [
        f"{KEPT} prefers email about ordinary"
    ]
    assert await memory.recall(GONE, "email") == []
    assert await memory.list_runs(user_id=GONE) == []


async def test_forgetting_twice_or_an_unknown_user_deletes_nothing(sqlite_memory):
    assert (await sqlite_memory.forget_user("nobody")).total == 0
    with pytest.raises(ValueError, match="user id"):
        await sqlite_memory.forget_user("  ")


async def test_the_audit_log_is_the_only_table_kept_and_it_stays_verifiable(
    sqlite_memory, sqlite_engine
):
    # Retained on purpose: the audit chain would no longer verify with an entry cut out.
    assert frozenset({"audit_log", "audit_entries"}) == RETAINED_TABLES
    async with sqlite_engine.begin() as connection:
        await connection.execute(
            sa.insert(audit_entries).values(
                seq=0,
                at=_AT,
                action="authorize",
                decision="allow",
                principal_id=GONE,
                body="{}",
                prev_mac="0" * 64,
                mac="1" * 64,
            )
        )
    await sqlite_memory.forget_user(GONE)
    assert await _rows_mentioning(sqlite_engine, GONE) == {"audit_entries": 1}
