"""Fixtures for the Memory Manager's tests: a started `SqlMemory` on each backend, a fake clock."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.memory import SqlMemory
from bastion.messages import AgentRequest, AgentResponse, RunStatus
from bastion.storage import create_engine
from bastion.testing.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def memory(db_engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[SqlMemory]:
    memory = SqlMemory(engine=db_engine, clock=clock)
    await memory.start()
    try:
        yield memory
    finally:
        await memory.close()


Chat = Callable[..., Awaitable[None]]


@pytest.fixture
def chat() -> Chat:
    """Appends turns to a session: each question and ``"answer to <question>"``, a minute apart."""

    async def chat(
        memory: SqlMemory, clock: FakeClock, session: str, questions: list[str], *, user: str = "u1"
    ) -> None:
        for question in questions:
            request = AgentRequest(user_id=user, session_id=session, message=question)
            response = AgentResponse(
                run_id=request.run_id,
                status=RunStatus.COMPLETED,
                message=f"answer to {question}",
            )
            await memory.persist_turns(request, response)
            clock.advance(60)

    return chat


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty SQLite file, for tests whose SQL is the same on both backends."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_memory(sqlite_engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[SqlMemory]:
    memory = SqlMemory(engine=sqlite_engine, clock=clock)
    await memory.start()
    try:
        yield memory
    finally:
        await memory.close()
