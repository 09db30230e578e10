"""Attacks on the gate itself, through `AgentSystem`: credentials, and a check-then-use race."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from typing import Any

import pytest

from bastion.gate.audit import verify
from bastion.gate.wiring import gate_from_settings
from bastion.messages import EventKind, RunEvent, RunStatus
from bastion.models.scripted import ScriptedModel
from bastion.testing.clock import FakeClock


def plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            "reasoning": "r",
            "steps": [
                {"description": f"call {n}", "tool_name": n, "tool_args": a} for n, a in steps
            ],
        }
    )


async def audit_of(shop: Any) -> tuple[list[Any], bool]:
    c = shop.system.components
    wiring = gate_from_settings(c.settings, engine=c.memory.engine, clock=FakeClock())
    rows = await wiring.audit.read_chain()
    return [r.entry() for r in rows], verify(rows, key=wiring.audit_key).ok


async def test_an_order_that_changes_hands_after_planning_is_denied_at_execution(make_shop):
    # c1 owns A1002 when the plan is vetted; before the step runs, the order is moved to c2
    # (a merge of accounts, a race with another request). The second check must catch it.
    model = ScriptedModel([plan(("lookup_order", {"order_id": "A1002"}))] * 3)
    async with make_shop(model, injection="") as shop:

        def move_order(event: RunEvent) -> None:
            if event.kind is EventKind.STEP_STARTED:
                with sqlite3.connect(shop.db) as db:
                    db.execute("UPDATE orders SET customer_id = 'c2' WHERE id = 'A1002'")

        shop.on_event = move_order
        response = await shop.ask("c1", "Where is my order A1002?")
        entries, intact = await audit_of(shop)
    assert shop.calls == []
    assert response.status is not RunStatus.COMPLETED
    stages = [(e.stage, e.decision) for e in entries if e.action == "authorize"]
    assert stages[:2] == [("plan", "allow"), ("execute", "deny")]
    assert intact


@pytest.mark.parametrize(
    ("case", "user", "expected"),
    [
        ("no-key", "c1", "an API key is required"),
        ("forged-key", "c1", "not recognised"),
        ("malformed-key", "c1", "malformed"),
        ("revoked-key", "lead", "was revoked"),
        ("expired-key", "lead", "expired at"),
        ("own-key-as-lead", "lead", "belongs to 'c1', but the request is made as 'lead'"),
        ("own-key-as-unknown", "root", "belongs to 'c1', but the request is made as 'root'"),
    ],
)
async def test_bad_credentials_never_reach_the_model_nor_a_tool(make_shop, case, user, expected):
    model = ScriptedModel(
        [plan(("issue_refund", {"order_id": "A1007", "amount": "10", "reason": "x"}))]
    )
    async with make_shop(model, injection="", gate={"require_api_key": True}) as shop:
        c = shop.system.components
        wiring = gate_from_settings(c.settings, engine=c.memory.engine, clock=FakeClock())
        now = c.clock.now()
        c1_key = (await wiring.keys.create("c1", name="c1", now=now, expires_at=None)).key
        lead = await wiring.keys.create(
            "lead", name="lead", now=now, expires_at=now + timedelta(hours=1)
        )
        keys = {
            "no-key": None,
            "forged-key": "bst_" + lead.record.key_id + "_" + "x" * 43,
            "malformed-key": "Bearer admin",
            "revoked-key": lead.key,
            "expired-key": lead.key,
            "own-key-as-lead": c1_key,
            "own-key-as-unknown": c1_key,
        }
        if case == "revoked-key":
            await wiring.keys.revoke(lead.record.key_id, now=now)
        if case == "expired-key":
            c.clock.advance(3601)  # type: ignore[attr-defined]
        response = await shop.ask(user, "Refund A1007", api_key=keys[case])
        entries, intact = await audit_of(shop)
    assert model.calls == []
    assert shop.calls == []
    assert response.status is RunStatus.ABORTED
    assert expected in (response.error or "")
    [authn] = [e for e in entries if e.action == "authenticate"]
    assert (authn.decision, authn.principal_id) == ("deny", None)
    assert expected in authn.reason
    assert intact
    key = keys[case]
    if key is not None:
        assert key not in repr(entries)


async def test_a_valid_key_runs_as_its_principal(make_shop):
    model = ScriptedModel([plan(("lookup_order", {"order_id": "A1001"}))])
    async with make_shop(model, injection="", gate={"require_api_key": True}) as shop:
        c = shop.system.components
        wiring = gate_from_settings(c.settings, engine=c.memory.engine, clock=FakeClock())
        key = (await wiring.keys.create("c1", name="", now=c.clock.now(), expires_at=None)).key
        response = await shop.ask("c1", "Where is my order A1001?", api_key=key)
    assert response.status is RunStatus.COMPLETED
    assert [call.tool for call in shop.calls] == ["lookup_order"]
