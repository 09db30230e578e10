"""Fixtures for the Memory Manager's tests: a started `SqlMemory` on each backend, a fake clock."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.memory import SqlMemory
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
