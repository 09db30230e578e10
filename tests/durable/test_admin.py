"""The durable admin works on a database no worker has touched yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.durable import DurableAdmin
from bastion.messages import AgentRequest
from bastion.settings import Settings


async def test_a_run_can_be_queued_before_any_worker_ever_started(tmp_path):
    admin = DurableAdmin(settings=Settings(data_dir=tmp_path))
    request = AgentRequest(user_id="u", session_id="s", message="hello")
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    assert await admin.enqueue(request, deadline_at=deadline) == request.run_id
    assert await admin.enqueue(request, deadline_at=deadline) == request.run_id  # a no-op
    [queued] = await admin.runs()
    assert (queued.run_id, queued.status) == (request.run_id, "ENQUEUED")
