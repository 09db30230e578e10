"""The run queue's limits hold: runs of one user never overlap past the per-user limit, and a
worker never runs more than its own limit at once, while other users' runs go on."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from bastion.durable import DurableAdmin
from bastion.messages import AgentRequest
from bastion.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _spans(log) -> dict[str, tuple[int, int]]:
    """Each workflow's span in the harness log: its first start and its last end (ms)."""
    if not log.exists():
        return {}
    conn = sqlite3.connect(log)
    try:
        if not conn.execute("select 1 from sqlite_master where name = 'executions'").fetchone():
            return {}
        rows = conn.execute(
            "select workflow_id, min(started_ms), max(ended_ms) from executions group by 1"
        ).fetchall()
    finally:
        conn.close()
    return {wf: (start, end) for wf, start, end in rows}


def _most_at_once(spans: list[tuple[int, int]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


async def test_per_user_and_per_worker_limits_hold(workers):
    settings = Settings(
        data_dir=workers.data_dir,
        memory={"database_url": workers.backend} if workers.backend else {},
    )
    workers(
        "w1",
        BASTION_DURABLE__PER_USER_CONCURRENCY="1",
        BASTION_DURABLE__WORKER_CONCURRENCY="2",
    )
    admin = DurableAdmin(settings=settings)
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    users: dict[str, str] = {}
    for i in range(6):
        request = AgentRequest(user_id=f"u{i % 3}", session_id=f"s{i}", message="refund please")
        users[await admin.enqueue(request, deadline_at=deadline)] = request.user_id
    give_up = time.monotonic() + 240
    while time.monotonic() < give_up:
        spans = await asyncio.to_thread(_spans, workers.log)
        if len(spans) == len(users) and all(end is not None for _, end in spans.values()):
            done = [w for w in await admin.runs(limit=20) if w.status == "SUCCESS"]
            if len(done) == len(users):
                break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"runs did not finish: {spans}")
    by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for wf, span in spans.items():
        by_user[users[wf]].append(span)
    for user, mine in by_user.items():
        assert _most_at_once(mine) == 1, f"runs of {user} overlapped: {sorted(mine)}"
    assert _most_at_once(list(spans.values())) == 2  # the worker's limit, and it was used
