"""A run whose first write fails is never reported as finished: durably, its workflow fails."""

from __future__ import annotations

from typing import Any

import pytest
from dbos import DBOS

from bastion.memory.default import SqlMemory
from bastion.messages import RunStatus
from bastion.router.registry import tool

from .conftest import plan


@tool(permissions={"basic"})
async def ping() -> str:
    """Answer pong."""
    return "pong"


async def test_a_run_that_cannot_be_recorded_fails_and_its_workflow_with_it(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(self: SqlMemory, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(SqlMemory, "create_run", refuse)
    async with make_harness([plan(("ping", {}))], [ping]) as h:
        response = await h.ask()
        assert response.status is RunStatus.FAILED
        assert "disk I/O error" in (response.error or "")
        assert h.model.calls == []  # nothing ran for a run nobody could record
        if h.system.durable is not None:
            status = await DBOS.get_workflow_status_async(response.run_id)
            assert status is not None
            assert status.status == "ERROR"
            again = await h.system.durable.wait(response.run_id)
            assert again.status is RunStatus.FAILED
            assert "could not be recorded" in (again.error or "")
