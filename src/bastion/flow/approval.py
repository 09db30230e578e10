"""The pause for a human approval: ask, wait durably, settle, then let the call go ahead or not.

When the gate says a call needs an approval right before it runs, `await_approval` asks the
approvals store for one (a checkpointed unit: asked once, even across restarts), moves the run to
``awaiting_approval``, and waits on the inbox topic ``approval:<id>`` at most until the approval
expires (durably, a DBOS ``recv``: the run survives restarts while it waits, holding no thread).
A message only wakes it: the run never trusts what the message says, it re-reads the approval in
the database and *settles* it (another checkpointed unit): an approved approval is consumed
there, atomically and bound to the call's tool and args hash, and becomes the `Grant` the gate
needs to let the call go; a denied, expired or refused one becomes a denial the planner sees as
feedback (it may replan). Each outcome is audited by the store and emitted as a run event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import TypeAdapter

from bastion.errors import ApprovalError
from bastion.flow.components import Components
from bastion.flow.state import RunState
from bastion.gate.approvals import APPROVAL, Approval, ApprovalStatus, args_hash
from bastion.gate.interface import Grant
from bastion.messages import (
    EventKind,
    JsonObject,
    PlanStep,
    RunStatus,
    ToolErrorKind,
    ToolOutcome,
)
from bastion.router.interface import ToolSpec

#: Marks a tool outcome that stands for "this call needs an approval" (the gate's reason in it).
NEEDS_APPROVAL = "needs_approval"


def topic_of(approval_id: str) -> str:
    """The inbox topic on which a decision about approval `approval_id` wakes its run."""
    return f"approval:{approval_id}"


def needs_approval(reason: str) -> ToolOutcome:
    """The outcome of a call the gate held for an approval (checkpointed like any outcome)."""
    return ToolOutcome(
        ok=False, value={NEEDS_APPROVAL: True}, error_kind=ToolErrorKind.DENIED, error=reason
    )


def is_held_for_approval(outcome: ToolOutcome) -> bool:
    """Whether `outcome` is `needs_approval`'s (not a plain denial)."""
    return isinstance(outcome.value, dict) and outcome.value.get(NEEDS_APPROVAL) is True


@dataclass(frozen=True, slots=True, kw_only=True)
class Settled:
    """How an approval ended, as the run saw it (checkpointed)."""

    outcome: Literal["granted", "denied", "expired", "refused", "pending"]
    detail: str
    approved_by: str | None = None


_SETTLED: TypeAdapter[Settled] = TypeAdapter(Settled)


async def await_approval(
    run: RunState,
    c: Components,
    *,
    step: PlanStep,
    spec: ToolSpec,
    args: JsonObject,
    reason: str,
    attempt: int = 1,
) -> Grant | ToolOutcome:
    """Ask for an approval of this call and wait for it; the `Grant`, or a denial outcome.

    Each attempt of a step (a retry, a fallback tool) asks afresh: an approval is used once.
    """
    assert run.principal is not None, "admit() sets the principal before execute()"
    if c.approvals is None or c.inbox is None:
        return ToolOutcome.failure(
            ToolErrorKind.DENIED,
            f"this call needs a human approval, which this system cannot take: {reason}",
        )
    store, inbox, principal = c.approvals, c.inbox, run.principal
    step_key = f"{run.replans}:{step.step_id}:{spec.name}:{attempt}"

    async def ask() -> Approval:
        return await store.request(
            run_id=run.run_id,
            step_key=step_key,
            tool_name=spec.name,
            args=args,
            reason=reason,
            requested_by=principal.id,
        )

    approval = await c.checkpoints.step(f"approval:request:{step_key}", ask, APPROVAL)
    await run.transition(RunStatus.AWAITING_APPROVAL)
    run.emit(
        EventKind.APPROVAL,
        step_id=step.step_id,
        tool_name=spec.name,
        approval_id=approval.approval_id,
        state="requested",
        reason=reason,
        expires_at=approval.expires_at.isoformat(),
    )
    await run.flush()
    run.pause_deadline()

    async def settle() -> Settled:
        return await _settle(c, approval.approval_id, spec.name, args)

    while True:
        left_s = (approval.expires_at - c.clock.now()).total_seconds()
        await inbox.receive(topic_of(approval.approval_id), timeout_s=max(0.0, left_s))
        settled = await c.checkpoints.step(f"approval:settle:{step_key}", settle, _SETTLED)
        if settled.outcome != "pending":
            break
        # Woken early (a stray message, or a wait cut short): keep waiting until it expires.
    run.emit(
        EventKind.APPROVAL,
        step_id=step.step_id,
        tool_name=spec.name,
        approval_id=approval.approval_id,
        state=settled.outcome,
        by=settled.approved_by,
        reason=settled.detail,
    )
    if settled.outcome == "granted":
        run.restart_deadline(run.request.timeout_s or c.settings.run.timeout_s)
        await run.transition(RunStatus.RUNNING)
        assert settled.approved_by is not None
        return Grant(
            approval_id=approval.approval_id,
            tool_name=spec.name,
            args_hash=args_hash(args),
            approved_by=settled.approved_by,
        )
    # The run goes on without the call: recovery sees a denial and replans (or ends the run).
    run.restart_deadline(run.request.timeout_s or c.settings.run.timeout_s)
    await run.transition(RunStatus.RUNNING)
    return ToolOutcome.failure(ToolErrorKind.DENIED, f"{settled.detail} ({reason})")


async def _settle(c: Components, approval_id: str, tool_name: str, args: JsonObject) -> Settled:
    """Re-read the approval; consume it if approved; say how it ended (never trusts a message)."""
    assert c.approvals is not None
    store = c.approvals
    approval = await store.get(approval_id)
    if approval.status is ApprovalStatus.PENDING and approval.expires_at <= c.clock.now():
        await store.expire_due(run_id=approval.run_id)
        approval = await store.get(approval_id)
    match approval.status:
        case ApprovalStatus.APPROVED:
            try:
                used = await store.consume(approval_id, tool_name, args)
            except ApprovalError as exc:
                return Settled(outcome="refused", detail=f"the approval was refused: {exc}")
            return Settled(
                outcome="granted",
                detail=f"approved by {used.decided_by}",
                approved_by=used.decided_by,
            )
        case ApprovalStatus.DENIED:
            note = f": {approval.decision_note}" if approval.decision_note else ""
            return Settled(
                outcome="denied",
                detail=f"a human approver ({approval.decided_by}) denied this call{note}",
            )
        case ApprovalStatus.EXPIRED:
            return Settled(
                outcome="expired",
                detail="nobody approved this call before its approval expired; it was not made",
            )
        case ApprovalStatus.USED:
            return Settled(
                outcome="refused",
                detail=f"approval {approval_id} was already used; an approval allows one call",
            )
        case ApprovalStatus.PENDING:
            return Settled(outcome="pending", detail="still waiting for a decision")
