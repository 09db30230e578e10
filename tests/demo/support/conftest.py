from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.demo.support.data import ensure_database
from bastion.demo.support.tools import make_tools
from bastion.messages import Principal
from bastion.router.interface import ToolContext, ToolSpec
from bastion.testing.clock import FakeClock


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return ensure_database(tmp_path / "shop" / "support.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tools(db: Path, clock: FakeClock) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in make_tools(db, clock=clock)}


@pytest.fixture
def make_ctx() -> Callable[..., ToolContext]:
    def make(
        principal_id: str = "lead",
        *,
        run_id: str = "run_test",
        step_id: int = 1,
        roles: frozenset[str] = frozenset({"support_lead"}),
    ) -> ToolContext:
        return ToolContext(
            run_id=run_id,
            step_id=step_id,
            attempt=1,
            principal=Principal(id=principal_id, roles=roles),
            idempotency_key=f"{run_id}:{step_id}",
        )

    return make
