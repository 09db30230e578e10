"""``POST /v1/audit/verify`` catches a tampered entry and checks the checkpoint file."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from bastion.clock import SystemClock
from bastion.gate.wiring import gate_from_settings
from bastion.storage.engine import begin_write, create_engine
from bastion.storage.tables import audit_entries


async def checkpoint_then_tamper(settings, *, tamper: bool) -> None:
    engine = create_engine(settings.database_url)
    try:
        wiring = gate_from_settings(settings, engine=engine, clock=SystemClock())
        await wiring.audit.checkpoint(wiring.checkpoint_file, at=SystemClock().now())
        if tamper:
            async with begin_write(engine) as connection:
                await connection.execute(
                    sa.update(audit_entries)
                    .where(audit_entries.c.seq == 1)
                    .values(body=sa.func.replace(audit_entries.c.body, "allow", "deny"))
                )
    finally:
        await engine.dispose()


def test_verify_passes_with_its_checkpoints_then_names_the_tampered_entry(fresh):
    headers = {"Authorization": f"Bearer {fresh.keys['admin']}"}
    with fresh.serve() as url, httpx.Client(base_url=url, headers=headers) as admin:
        admin.post("/v1/runs", json={"message": "lookup A1", "wait": True})
        fresh.run(checkpoint_then_tamper(fresh.settings, tamper=False))
        intact = admin.post("/v1/audit/verify").json()
        fresh.run(checkpoint_then_tamper(fresh.settings, tamper=True))
        tampered = admin.post("/v1/audit/verify").json()
    assert intact["ok"] is True
    assert intact["checkpoints"] == 1
    assert intact["checkpoints_matched"] == 1
    assert tampered["ok"] is False
    assert tampered["first_bad"] == 1
    assert tampered["problem"]
