"""Lets the ledger tests and their subprocess worker import `tests.cost.ledger_support`.

With ``--import-mode=importlib`` pytest puts no directory of the tests on ``sys.path``: the
repository's root is added here (and by the worker script), so ``tests`` imports as a namespace
package, under the same name mypy gives it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.storage import create_engine

sys.path.insert(0, str(Path(__file__).parents[2]))


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty SQLite file, for ledger rules that do not differ by backend."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
async def _close_controllers() -> AsyncIterator[None]:
    from tests.cost.ledger_support import CREATED

    yield
    while CREATED:
        await CREATED.pop().aclose()
