"""The approvals store: bound to one call, decided once, used once, expiring; every change audited.

Each test runs on SQLite and on a fresh PostgreSQL database (`database_url`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from bastion.errors import (
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalMismatch,
    NotAnApprover,
    SelfApproval,
    UnknownApproval,
)
from bastion.gate.approvals import (
    APPROVER_ROLE,
    ApprovalStatus,
    ApprovalStore,
    args_hash,
    canonical_json,
)
from bastion.gate.audit import InMemoryAuditLog
from bastion.messages import Principal
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.storage.tables import approvals
from bastion.testing.clock import FakeClock

LEAD = Principal(id="lead", roles=frozenset({"support_lead"}), scopes=frozenset({"*"}))
MANAGER = Principal(id="manager", roles=frozenset({APPROVER_ROLE}))
OTHER_MANAGER = Principal(id="manager2", roles=frozenset({APPROVER_ROLE}))
AGENT = Principal(id="agent", roles=frozenset({"agent"}), scopes=frozenset({"*"}))
ARGS = {"order_id": "A1007", "amount": "250.00", "reason": "broken"}
TTL_S = 3600.0


class World:
    def __init__(self, store: ApprovalStore, audit: InMemoryAuditLog, clock: FakeClock) -> None:
        self.store, self.audit, self.clock = store, audit, clock

    async def ask(self, step_key: str = "0:1", *, by: str = "lead", run_id: str = "r1") -> str:
        approval = await self.store.request(
            run_id=run_id,
            step_key=step_key,
            tool_name="issue_refund",
            args=ARGS,
            reason="refunds above 200.00 need a human approval",
            requested_by=by,
        )
        return approval.approval_id

    def actions(self) -> list[tuple[str, str]]:
        return [(e.action, e.decision) for e in self.audit.entries]


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    engine = create_engine(database_url)
    await migrate(engine)
    clock, audit = FakeClock(), InMemoryAuditLog()
    try:
        yield World(
            ApprovalStore(engine=engine, clock=clock, audit=audit, ttl_s=TTL_S), audit, clock
        )
    finally:
        await engine.dispose()


def test_args_hash_is_the_sha256_of_canonical_json_whatever_the_key_order():
    assert (
        canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'
    )
    assert args_hash({"a": 1, "b": 2}) == args_hash({"b": 2, "a": 1})
    assert args_hash({"a": 1}) != args_hash({"a": 2})
    assert len(args_hash({})) == 64


def test_a_ttl_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        ApprovalStore(engine=None, clock=FakeClock(), audit=InMemoryAuditLog(), ttl_s=0)  # type: ignore[arg-type]


async def test_a_request_is_pending_bound_to_the_call_and_audited(world: World):
    approval_id = await world.ask()
    approval = await world.store.get(approval_id)
    assert approval.status is ApprovalStatus.PENDING
    assert approval.args_hash == args_hash(ARGS)
    assert approval.expires_at - approval.requested_at == timedelta(seconds=TTL_S)
    assert [a.approval_id for a in await world.store.pending()] == [approval_id]
    assert [a.approval_id for a in await world.store.pending("r1")] == [approval_id]
    assert await world.store.pending("other") == []
    assert world.actions() == [("approval_request", "allow")]


async def test_asking_again_for_the_same_step_returns_the_first_request(world: World):
    first = await world.ask()
    assert await world.ask() == first
    assert world.actions() == [("approval_request", "allow")]


async def test_approve_then_consume_once(world: World):
    approval_id = await world.ask()
    approved = await world.store.approve(approval_id, MANAGER, "ok")
    assert approved.status is ApprovalStatus.APPROVED
    assert approved.decided_by == "manager"
    assert await world.store.pending() == []
    used = await world.store.consume(approval_id, "issue_refund", dict(reversed(ARGS.items())))
    assert used.status is ApprovalStatus.USED
    assert used.used_at == world.clock.now()
    with pytest.raises(ApprovalAlreadyDecided, match="already used"):
        await world.store.consume(approval_id, "issue_refund", ARGS)
    assert world.actions() == [
        ("approval_request", "allow"),
        ("approval_grant", "allow"),
        ("approval_use", "allow"),
        ("approval_use", "deny"),
    ]


async def test_the_requester_may_not_approve_their_own_call(world: World):
    approval_id = await world.ask(by="manager")
    with pytest.raises(SelfApproval, match="may not approve"):
        await world.store.approve(approval_id, MANAGER)
    with pytest.raises(SelfApproval):
        await world.store.deny(approval_id, MANAGER, "no")
    assert (await world.store.get(approval_id)).status is ApprovalStatus.PENDING
    assert world.actions()[-2:] == [("approval_grant", "deny"), ("approval_deny", "deny")]


async def test_an_approver_needs_the_approver_role(world: World):
    approval_id = await world.ask()
    with pytest.raises(NotAnApprover, match="approver"):
        await world.store.approve(approval_id, AGENT)
    assert (await world.store.get(approval_id)).status is ApprovalStatus.PENDING


async def test_an_unknown_id_is_refused_clearly(world: World):
    with pytest.raises(UnknownApproval, match="no approval 'ap_nope'"):
        await world.store.approve("ap_nope", MANAGER)
    with pytest.raises(UnknownApproval):
        await world.store.consume("ap_nope", "issue_refund", ARGS)
    assert world.actions() == [("approval_grant", "deny"), ("approval_use", "deny")]


async def test_a_decision_is_final(world: World):
    approval_id = await world.ask()
    await world.store.deny(approval_id, MANAGER, "too much")
    with pytest.raises(ApprovalAlreadyDecided, match="already denied by manager"):
        await world.store.approve(approval_id, OTHER_MANAGER)
    with pytest.raises(ApprovalAlreadyDecided):
        await world.store.consume(approval_id, "issue_refund", ARGS)
    denied = await world.store.get(approval_id)
    assert denied.status is ApprovalStatus.DENIED
    assert denied.decision_note == "too much"


async def test_other_args_or_another_tool_are_a_mismatch(world: World):
    approval_id = await world.ask()
    await world.store.approve(approval_id, MANAGER)
    with pytest.raises(ApprovalMismatch, match="another call"):
        await world.store.consume(approval_id, "issue_refund", {**ARGS, "amount": "2500.00"})
    with pytest.raises(ApprovalMismatch):
        await world.store.consume(approval_id, "other_tool", ARGS)
    # Still approved and usable for the call it was given for.
    assert (
        await world.store.consume(approval_id, "issue_refund", ARGS)
    ).status is ApprovalStatus.USED


async def test_a_row_tampered_in_the_database_is_refused(world: World, database_url: str):
    approval_id = await world.ask()
    await world.store.approve(approval_id, MANAGER)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(approvals)
                .where(approvals.c.approval_id == approval_id)
                .values(args_hash=args_hash({**ARGS, "amount": "9999.00"}))
            )
    finally:
        await engine.dispose()
    with pytest.raises(ApprovalMismatch):
        await world.store.consume(approval_id, "issue_refund", ARGS)


async def test_expiry_by_the_clock(world: World):
    approval_id = await world.ask()
    world.clock.advance(TTL_S + 1)
    assert await world.store.pending() == []
    with pytest.raises(ApprovalExpired, match="expired"):
        await world.store.approve(approval_id, MANAGER)
    assert (await world.store.get(approval_id)).status is ApprovalStatus.EXPIRED
    assert world.actions()[-2:] == [("approval_expire", "deny"), ("approval_grant", "deny")]
    assert await world.store.expire_due() == []  # already expired: not again


async def test_expire_due_expires_only_what_is_past_its_time(world: World):
    old = await world.ask("0:1")
    world.clock.advance(TTL_S / 2)
    young = await world.ask("0:2")
    world.clock.advance(TTL_S / 2 + 1)
    assert [a.approval_id for a in await world.store.expire_due()] == [old]
    assert (await world.store.get(young)).status is ApprovalStatus.PENDING


async def test_an_approval_not_used_before_it_expires_cannot_be_used(world: World):
    approval_id = await world.ask()
    await world.store.approve(approval_id, MANAGER)
    world.clock.advance(TTL_S + 1)
    with pytest.raises(ApprovalExpired):
        await world.store.consume(approval_id, "issue_refund", ARGS)


async def test_two_racing_approvers_and_two_racing_uses_have_one_winner(world: World):
    approval_id = await world.ask()
    results = await asyncio.gather(
        world.store.approve(approval_id, MANAGER),
        world.store.deny(approval_id, OTHER_MANAGER, "no"),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert sum(isinstance(r, ApprovalAlreadyDecided) for r in results) == 1
    second = await world.ask("0:2")
    await world.store.approve(second, MANAGER)
    uses = await asyncio.gather(
        *(world.store.consume(second, "issue_refund", ARGS) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in uses) == 1
    assert all(isinstance(r, ApprovalAlreadyDecided) for r in uses if isinstance(r, Exception))
