"""A run left unfinished by another workflow version is visible as stranded, and resumable."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from bastion.durable import WORKFLOW_VERSION, DurableAdmin
from bastion.durable.codec import JsonSerializer, encode_run_input
from bastion.durable.engine import APP_NAME, RUN_QUEUE, sqlite_engine, system_database_url
from bastion.durable.workflow import WORKFLOW_NAME
from bastion.messages import AgentRequest
from bastion.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_stranded_run_is_listed_then_resumed(workers, capsys, monkeypatch):
    from dbos import DBOSClient

    settings = Settings(
        data_dir=workers.data_dir,
        memory={"database_url": workers.backend} if workers.backend else {},
        durable={"polling_interval_s": 0.05},
    )
    workers("w1")  # creates the system database; runs only its own version's work
    url = system_database_url(settings)
    engine = sqlite_engine(url, "NORMAL") if url.startswith("sqlite") else None
    client = DBOSClient(
        system_database_url=None if engine else url,
        system_database_engine=engine,
        serializer=JsonSerializer(),
        application_name=APP_NAME,
    )
    request = AgentRequest(user_id="u", session_id="s", message="refund please")
    try:
        client.enqueue(
            {
                "queue_name": RUN_QUEUE,
                "workflow_name": WORKFLOW_NAME,
                "workflow_id": request.run_id,
                "app_version": "bastion-run-0",  # an older build's version
                "queue_partition_key": "u",
            },
            encode_run_input(request, datetime.now(UTC) + timedelta(minutes=5)),
        )
    finally:
        client.destroy()
        if engine is not None:
            engine.dispose()
    admin = DurableAdmin(settings=settings)
    await asyncio.sleep(1.0)  # the worker polls every 0.05 s: it must leave the run alone
    stranded = await admin.stranded()
    assert [w.run_id for w in stranded] == [request.run_id]
    assert stranded[0].app_version == "bastion-run-0" != WORKFLOW_VERSION

    from bastion.cli.main import main

    monkeypatch.syspath_prepend(str(workers.data_dir.parent))
    monkeypatch.setenv("BASTION_DATA_DIR", str(workers.data_dir))
    if workers.backend:
        monkeypatch.setenv("BASTION_MEMORY__DATABASE_URL", workers.backend)
    assert await asyncio.to_thread(main, ["runs", "list", "--stranded", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [r["run_id"] for r in listed] == [request.run_id]

    await admin.resume(request.run_id)
    give_up = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < give_up:
        runs = {w.run_id: w.status for w in await admin.runs()}
        if runs.get(request.run_id) == "SUCCESS":
            break
        await asyncio.sleep(0.1)
    assert runs.get(request.run_id) == "SUCCESS"
    assert await admin.stranded() == []
