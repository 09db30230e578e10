"""The ``remember`` tool: files facts under the caller, once per step, redacted when wrapped."""

from __future__ import annotations

import pytest

from bastion.gate.redact import Redactor
from bastion.gate.redacting import RedactingMemory
from bastion.memory import MemoryTools, SqlMemory
from bastion.memory.tools import MEMORY_WRITE_SCOPE
from bastion.messages import Principal
from bastion.router.interface import ToolContext


def _ctx(user: str = "u1", key: str = "run_1:0") -> ToolContext:
    return ToolContext(
        run_id="run_1", step_id=0, attempt=1, principal=Principal(id=user), idempotency_key=key
    )


async def test_remember_files_the_fact_under_the_caller_once_per_step(
    sqlite_memory: SqlMemory,
):
    tools = MemoryTools()
    tools.bind(sqlite_memory)
    [spec] = tools.tools()
    assert spec.name == "remember"
    assert spec.required_permissions == frozenset({MEMORY_WRITE_SCOPE})
    assert spec.side_effects
    assert spec.idempotent
    assert "ctx" not in spec.args_schema["properties"]  # the model cannot name a user
    first = await tools.remember("Prefers email", _ctx())
    again = await tools.remember("Prefers email", _ctx())
    assert again == first
    assert [f.content for f in await sqlite_memory.recall("u1", "email")] == ["Prefers email"]
    assert await sqlite_memory.recall("u2", "email") == []


async def test_an_unbound_tool_fails_as_a_tool_error():
    with pytest.raises(RuntimeError, match="not bound"):
        await MemoryTools().remember("Prefers email", _ctx())


async def test_a_secret_in_a_fact_is_redacted_before_it_is_stored(sqlite_memory: SqlMemory):
    memory = RedactingMemory(sqlite_memory, redactor=Redactor())
    tools = MemoryTools()
    tools.bind(memory)
    stored = await tools.remember("My password=hunter22 and I like email", _ctx())
    assert "hunter22" not in stored.fact
    [fact] = await memory.recall("u1", "email")
    assert "hunter22" not in fact.content
