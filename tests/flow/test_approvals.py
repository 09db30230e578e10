"""Human approval through `AgentSystem`: a held call pauses its run until another principal decides.

Every test runs in process and on DBOS (SQLite), with a scripted model and the fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from tests.flow.conftest import Harness, plan

from bastion.errors import (
    ApprovalAlreadyDecided,
    ApprovalExpired,
    NotAnApprover,
    SelfApproval,
    TransientToolError,
)
from bastion.gate.approvals import APPROVER_ROLE, Approval, ApprovalStatus, args_hash
from bastion.gate.audit import AuditFilter
from bastion.gate.interface import Decision, PolicyInput
from bastion.gate.wiring import gate_from_settings
from bastion.messages import AgentRequest, AgentResponse, EventKind, Principal, RunEvent, RunStatus
from bastion.router.registry import tool
from bastion.storage.engine import create_engine
from bastion.storage.tables import approvals as approvals_table

#: Every refund the tool really made, in order (the tool runs inline, in this process).
MADE: list[tuple[str, str]] = []

LEAD = Principal(
    id="lead",
    # The lead may approve others' calls, never their own.
    roles=frozenset({"support_lead", APPROVER_ROLE}),
    scopes=frozenset({"basic", "refunds:write"}),
)
MANAGER = Principal(id="manager", roles=frozenset({APPROVER_ROLE}))
CLERK = Principal(id="clerk", roles=frozenset({"agent"}), scopes=frozenset({"*"}))

BIG = {"order_id": "A7", "amount": "250.00"}
SMALL = {"order_id": "A7", "amount": "20.00"}
TTL_S = 3600.0


@tool(permissions=("refunds:write",), side_effects=True, idempotent=True)
def refund(order_id: str, amount: str) -> str:
    """Refund an order.

    Args:
        order_id: The order.
        amount: How much.
    """
    MADE.append((order_id, amount))
    return f"refunded {amount} on {order_id}"


@tool(permissions=("basic",))
def escalate(summary: str) -> str:
    """Hand the case to a person.

    Args:
        summary: What to look at.
    """
    return "escalated"


async def above_cap(call: PolicyInput) -> Decision | None:
    if Decimal(str(call.args.get("amount", "0"))) > Decimal("200.00"):
        return Decision.approval_required("refunds above 200.00 need a human approval")
    return None


REPLAN = plan(("escalate", {"summary": "refund not approved"}))


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    MADE.clear()


class Paused:
    """A run started in the background, and what it announced."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.events: list[RunEvent] = []
        self.requested = asyncio.Event()
        self.task: asyncio.Task[AgentResponse] | None = None

    def sink(self, event: RunEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.APPROVAL and event.data.get("state") == "requested":
            self.requested.set()

    async def start(self, message: str = "refund A7 please", **fields: Any) -> Approval:
        request = AgentRequest(user_id="lead", session_id="s1", message=message, **fields)
        self.task = asyncio.create_task(self.h.system.run(request, on_event=self.sink))
        async with asyncio.timeout(30):
            await self.requested.wait()
        (approval,) = await self.h.system.approvals_pending(request.run_id)
        return approval

    async def end(self) -> AgentResponse:
        assert self.task is not None
        async with asyncio.timeout(30):
            return await self.task

    def approval_states(self) -> list[str]:
        return [str(e.data["state"]) for e in self.events if e.kind is EventKind.APPROVAL]


@asynccontextmanager
async def harness(make_harness: Callable[..., Any], responses: list[str]) -> AsyncIterator[Harness]:
    async with make_harness(
        responses,
        [refund, escalate],
        principals=(LEAD, CLERK),
        policies={"refund": [above_cap]},
        settings={"gate": {"approval_ttl_s": TTL_S}},
    ) as h:
        yield h


async def audit_actions(h: Harness, run_id: str) -> list[tuple[str, str]]:
    settings = h.system.components.settings
    engine = create_engine(settings.database_url)
    try:
        wiring = gate_from_settings(settings, engine=engine, clock=h.clock)
        rows = await wiring.audit.query(AuditFilter(run_id=run_id), limit=1000)
    finally:
        await engine.dispose()
    return [(r.entry().action, r.entry().decision) for r in rows]


async def test_a_held_call_pauses_and_runs_once_after_another_principal_approves(make_harness):
    async with harness(make_harness, [plan(("refund", BIG))]) as h:
        paused = Paused(h)
        approval = await paused.start()
        assert approval.tool_name == "refund"
        assert approval.args_hash == args_hash(BIG)
        assert approval.requested_by == "lead"
        record = await h.system.components.memory.get_run(approval.run_id)
        assert record is not None
        assert record.status is RunStatus.AWAITING_APPROVAL
        assert MADE == []  # nothing ran before the approval
        await h.system.approve(approval.approval_id, MANAGER, "checked the photos")
        response = await paused.end()
        assert response.status is RunStatus.COMPLETED
        assert MADE == [("A7", "250.00")]  # exactly once
        assert paused.approval_states() == ["requested", "granted"]
        assert (await h.system.components.approvals.get(approval.approval_id)).status is (  # type: ignore[union-attr]
            ApprovalStatus.USED
        )
        actions = await audit_actions(h, approval.run_id)
        for expected in [
            ("approval_request", "allow"),
            ("approval_grant", "allow"),
            ("approval_use", "allow"),
        ]:
            assert expected in actions
        # Plan time marked the call; execution time held it, then allowed it with the approval.
        assert actions.count(("authorize", "deny")) == 2
        assert actions.count(("authorize", "allow")) == 1
        # A used approval cannot be decided or used again.
        with pytest.raises(ApprovalAlreadyDecided):
            await h.system.approve(approval.approval_id, MANAGER)


async def test_a_call_within_the_limit_needs_no_approval(make_harness):
    async with harness(make_harness, [plan(("refund", SMALL))]) as h:
        response = await h.ask("refund 20", user="lead")
        assert response.status is RunStatus.COMPLETED
        assert MADE == [("A7", "20.00")]
        assert await h.system.approvals_pending() == []


async def test_self_approval_and_non_approvers_are_refused_and_the_run_keeps_waiting(make_harness):
    async with harness(make_harness, [plan(("refund", BIG)), REPLAN]) as h:
        paused = Paused(h)
        approval = await paused.start()
        with pytest.raises(SelfApproval):
            await h.system.approve(approval.approval_id, LEAD)
        with pytest.raises(NotAnApprover):
            await h.system.approve(approval.approval_id, CLERK)
        assert [a.approval_id for a in await h.system.approvals_pending()] == [approval.approval_id]
        assert MADE == []
        await h.system.deny(approval.approval_id, MANAGER, "refund the courier instead")
        response = await paused.end()
        assert MADE == []
        assert response.status is RunStatus.COMPLETED  # replanned: escalated instead
        assert paused.approval_states() == ["requested", "denied"]
        # The planner was told why, in its replan prompt.
        replan_prompt = "\n".join(m.content for m in h.model.calls[-1].messages)
        assert "denied this call" in replan_prompt
        assert "refund the courier instead" in replan_prompt
        actions = await audit_actions(h, approval.run_id)
        assert ("approval_deny", "deny") in actions


async def test_deny_without_a_way_forward_ends_the_run_with_a_clear_message(make_harness):
    async with harness(make_harness, [plan(("refund", BIG))] * 3) as h:
        paused = Paused(h)
        first = await paused.start()
        await h.system.deny(first.approval_id, MANAGER, "no")
        # The planner insists: each new attempt asks again, and is denied again.
        for _ in range(2):
            paused.requested.clear()
            async with asyncio.timeout(30):
                await paused.requested.wait()
            (again,) = await h.system.approvals_pending()
            assert again.approval_id != first.approval_id  # never the same approval twice
            await h.system.deny(again.approval_id, MANAGER, "still no")
        response = await paused.end()
        assert response.status is RunStatus.ABORTED
        assert response.message == "You are not allowed to call refund."
        assert "denied this call: still no" in (response.error or "")
        assert MADE == []


async def test_an_expired_approval_is_a_denial_the_planner_sees(make_harness):
    async with harness(make_harness, [plan(("refund", BIG)), REPLAN]) as h:
        paused = Paused(h)
        approval = await paused.start()
        h.clock.advance(TTL_S + 1)
        with pytest.raises(ApprovalExpired):
            await h.system.approve(approval.approval_id, MANAGER)
        response = await paused.end()
        assert MADE == []
        assert response.status is RunStatus.COMPLETED  # escalated instead
        assert paused.approval_states() == ["requested", "expired"]
        replan_prompt = "\n".join(m.content for m in h.model.calls[-1].messages)
        assert "expired" in replan_prompt
        assert ("approval_expire", "deny") in await audit_actions(h, approval.run_id)


async def test_expire_approvals_wakes_the_waiting_run(make_harness):
    async with harness(make_harness, [plan(("refund", BIG)), REPLAN]) as h:
        paused = Paused(h)
        approval = await paused.start()
        assert await h.system.expire_approvals() == []  # not yet
        h.clock.advance(TTL_S + 1)
        assert [a.approval_id for a in await h.system.expire_approvals()] == [approval.approval_id]
        await paused.end()
        assert paused.approval_states() == ["requested", "expired"]
        assert MADE == []


async def test_a_tampered_approval_is_refused_and_the_call_never_runs(make_harness):
    async with harness(make_harness, [plan(("refund", BIG)), REPLAN]) as h:
        paused = Paused(h)
        approval = await paused.start()
        # Someone with database access rebinds the approval to a bigger refund, then approves.
        engine = create_engine(h.system.components.settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.update(approvals_table)
                    .where(approvals_table.c.approval_id == approval.approval_id)
                    .values(args_hash=args_hash({**BIG, "amount": "2500.00"}))
                )
        finally:
            await engine.dispose()
        await h.system.approve(approval.approval_id, MANAGER)
        await paused.end()
        assert MADE == []
        assert paused.approval_states() == ["requested", "refused"]
        assert ("approval_use", "deny") in await audit_actions(h, approval.run_id)


async def test_a_second_run_needs_its_own_approval(make_harness):
    async with harness(make_harness, [plan(("refund", BIG))] * 2) as h:
        first = Paused(h)
        approval = await first.start()
        await h.system.approve(approval.approval_id, MANAGER)
        await first.end()
        second = Paused(h)
        again = await second.start("refund A7 again")
        assert again.approval_id != approval.approval_id
        assert MADE == [("A7", "250.00")]
        await h.system.approve(again.approval_id, MANAGER)
        await second.end()
        assert MADE == [("A7", "250.00")] * 2


FLAKY_CALLS: list[str] = []


@tool(permissions=("refunds:write",), side_effects=True, idempotent=True)
def flaky_refund(order_id: str, amount: str) -> str:
    """Refund an order; the payment provider fails the first time.

    Args:
        order_id: The order.
        amount: How much.
    """
    FLAKY_CALLS.append(order_id)
    if len(FLAKY_CALLS) == 1:
        raise TransientToolError("payment provider 503")
    return f"refunded {amount} on {order_id}"


async def test_a_retry_of_an_approved_call_needs_a_fresh_approval(make_harness):
    FLAKY_CALLS.clear()
    async with make_harness(
        [plan(("flaky_refund", BIG))],
        [flaky_refund],
        principals=(LEAD,),
        policies={"flaky_refund": [above_cap]},
        settings={"gate": {"approval_ttl_s": TTL_S}},
    ) as h:
        paused = Paused(h)
        first = await paused.start()
        paused.requested.clear()
        await h.system.approve(first.approval_id, MANAGER)
        async with asyncio.timeout(30):
            await paused.requested.wait()  # the retry is held again
        (second,) = await h.system.approvals_pending()
        assert second.approval_id != first.approval_id
        assert len(FLAKY_CALLS) == 1
        await h.system.approve(second.approval_id, MANAGER)
        response = await paused.end()
        assert response.status is RunStatus.COMPLETED
        assert len(FLAKY_CALLS) == 2
        assert paused.approval_states() == ["requested", "granted", "requested", "granted"]
