"""`ServerStore.list_runs` on SQLite and PostgreSQL: cursor pages never skip nor repeat a run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.clock import SystemClock
from bastion.gate.wiring import gate_from_settings
from bastion.messages import RunStatus
from bastion.server.store import BadCursor, ServerStore
from bastion.settings import load_settings
from bastion.storage.engine import begin_write
from bastion.storage.migrations import migrate
from bastion.storage.tables import runs

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def test_cursor_pages_cover_every_run_once_even_with_equal_times(db_engine, tmp_path: Path):
    await migrate(db_engine)
    rows = []
    for i in range(7):
        at = T0 + timedelta(seconds=i // 3)  # three runs share each second
        rows.append(
            {
                "run_id": f"run_{i:02d}",
                "user_id": "alice" if i != 3 else "bob",
                "session_id": "s",
                "request_message": f"m{i}",
                "status": (RunStatus.COMPLETED if i % 2 else RunStatus.FAILED).value,
                "created_at": at,
                "updated_at": at,
                "total_cost_usd": Decimal(0),
            }
        )
    async with begin_write(db_engine) as connection:
        await connection.execute(sa.insert(runs), rows)
    settings = load_settings(data_dir=tmp_path)
    wiring = gate_from_settings(settings, engine=db_engine, clock=SystemClock())
    store = ServerStore(engine=db_engine, wiring=wiring, memory=None)  # type: ignore[arg-type]
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_runs(user_id="alice", limit=2, cursor=cursor)
        seen += [r.run_id for r in page.runs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["run_06", "run_05", "run_04", "run_02", "run_01", "run_00"]
    failed = await store.list_runs(user_id=None, status=RunStatus.FAILED, limit=10)
    assert [r.run_id for r in failed.runs] == ["run_06", "run_04", "run_02", "run_00"]
    assert failed.next_cursor is None
    with pytest.raises(BadCursor):
        await store.list_runs(user_id=None, cursor="garbage!")
