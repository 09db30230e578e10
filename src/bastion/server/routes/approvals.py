"""``/v1/approvals``: list pending approvals, approve or deny one (which wakes its run).

The rules are the approval store's (`bastion.gate.approvals`): the approver holds the
``approver`` role and is not the run's principal; a decision is final; each is audited. Here they
become statuses: an unknown approval is a 404, a refused approver a 403, a decided or expired
approval a 409. Approvers and admins see every pending approval; others see those of their runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from bastion.errors import (
    ApprovalError,
    ConfigError,
    NotAnApprover,
    SelfApproval,
    UnknownApproval,
)
from bastion.gate.approvals import APPROVER_ROLE, Approval
from bastion.server.auth import Caller
from bastion.server.errors import ApiError, Conflict, ErrorBody, Forbidden, NotFound
from bastion.server.state import CurrentCaller, ServerState, State

router = APIRouter(prefix="/v1", tags=["approvals"])

ApprovalId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_\-:.]+$")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No, or no valid, API key."},
    403: {"model": ErrorBody, "description": "Not an approver, or approving your own run."},
    404: {"model": ErrorBody, "description": "No such approval."},
    409: {"model": ErrorBody, "description": "Already decided, or expired."},
    422: {"model": ErrorBody, "description": "Invalid request."},
}


class ApprovalView(BaseModel):
    """One approval."""

    approval_id: str
    run_id: str
    tool_name: str
    reason: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None

    @classmethod
    def of(cls, a: Approval) -> ApprovalView:
        """The view of `a`."""
        return cls(
            approval_id=a.approval_id,
            run_id=a.run_id,
            tool_name=a.tool_name,
            reason=a.reason,
            requested_by=a.requested_by,
            requested_at=a.requested_at,
            expires_at=a.expires_at,
            status=a.status.value,
            decided_by=a.decided_by,
            decided_at=a.decided_at,
            decision_note=a.decision_note,
        )


class ApprovalList(BaseModel):
    """Pending approvals, oldest first."""

    data: list[ApprovalView]


class Approve(BaseModel):
    """An approval's note (optional)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


class Deny(BaseModel):
    """Why the call is denied (shown to the run's planner, and recorded)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


def _may_decide(caller: Caller) -> bool:
    return caller.is_admin or APPROVER_ROLE in caller.principal.roles


def _mapped(exc: ApprovalError | ConfigError, approval_id: str) -> ApiError:
    if isinstance(exc, ConfigError):
        return NotFound(f"this app takes no human approvals: {exc}")
    if isinstance(exc, UnknownApproval):
        return NotFound(f"no approval {approval_id!r}")
    if isinstance(exc, SelfApproval | NotAnApprover):
        return Forbidden(str(exc))
    return Conflict(str(exc))


async def pending_for(state: ServerState, caller: Caller, run_id: str | None) -> list[Approval]:
    """The pending approvals `caller` may see (of one run, if given)."""
    try:
        pending = await state.system.approvals_pending(run_id)
    except ConfigError:
        return []
    if _may_decide(caller):
        return pending
    mine = []
    for approval in pending:
        header = await state.store.run_header(approval.run_id)
        if header is not None and header.user_id == caller.principal.id:
            mine.append(approval)
    return mine


@router.get("/approvals", response_model=ApprovalList, responses=_ERRORS)
async def list_approvals(
    caller: CurrentCaller,
    state: State,
    run_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> ApprovalList:
    """Approvals waiting for a decision (approvers see all; others those of their runs)."""
    return ApprovalList(data=[ApprovalView.of(a) for a in await pending_for(state, caller, run_id)])


@router.post("/approvals/{approval_id}/approve", response_model=ApprovalView, responses=_ERRORS)
async def approve(
    approval_id: ApprovalId, caller: CurrentCaller, state: State, body: Approve | None = None
) -> ApprovalView:
    """Approve the call; its run goes on and uses the approval once."""
    try:
        approval = await state.system.approve(
            approval_id, caller.principal, (body or Approve()).note
        )
    except (ApprovalError, ConfigError) as exc:
        raise _mapped(exc, approval_id) from None
    return ApprovalView.of(approval)


@router.post("/approvals/{approval_id}/deny", response_model=ApprovalView, responses=_ERRORS)
async def deny(
    approval_id: ApprovalId, body: Deny, caller: CurrentCaller, state: State
) -> ApprovalView:
    """Deny the call; its run replans without it, or ends."""
    try:
        approval = await state.system.deny(approval_id, caller.principal, body.reason)
    except (ApprovalError, ConfigError) as exc:
        raise _mapped(exc, approval_id) from None
    return ApprovalView.of(approval)
