"""``/v1/usage`` (spend per user and model) and ``/v1/audit`` (query and verify; admins only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from bastion.cost.usage import GroupBy
from bastion.gate.audit import AuditFilter, StoredEntry
from bastion.server.errors import ErrorBody
from bastion.server.schemas import (
    AuditEntryView,
    AuditList,
    AuditVerification,
    Usage,
    UsageRow,
    usd,
)
from bastion.server.state import AdminCaller, CurrentCaller, State

router = APIRouter(prefix="/v1", tags=["admin"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No, or no valid, API key."},
    403: {"model": ErrorBody, "description": "Admins only."},
    422: {"model": ErrorBody, "description": "Invalid request."},
}

_Id = Annotated[str | None, Query(min_length=1, max_length=255)]


@router.get("/usage", response_model=Usage, responses=_ERRORS)
async def usage(
    caller: CurrentCaller,
    state: State,
    by: GroupBy = "model",
    user_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    since: Annotated[datetime | None, Query(description="Calls made at or after.")] = None,
) -> Usage:
    """Calls, tokens and spend from the cost ledger: your own, or (admins) everyone's."""
    if not caller.is_admin:
        user_id = caller.principal.id
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    lines = await state.store.usage(user_id=user_id, since=since, by=by)
    return Usage(
        by=by,
        rows=[
            UsageRow(
                key=line.key,
                calls=line.calls,
                denials=line.denials,
                input_tokens=line.input_tokens,
                output_tokens=line.output_tokens,
                cost_usd=usd(line.cost_usd),
            )
            for line in lines
        ],
        total_cost_usd=usd(sum((line.cost_usd for line in lines), Decimal(0))),
    )


def _entry(row: StoredEntry) -> AuditEntryView:
    try:
        body: dict[str, Any] = json.loads(row.body)
    except ValueError:
        body = {}
    details = body.get("details")
    return AuditEntryView(
        seq=row.seq,
        at=row.at,
        action=row.action,
        decision=row.decision,
        principal_id=row.principal_id,
        run_id=row.run_id,
        tool_name=row.tool_name,
        reason=str(body.get("reason", "")),
        details=details if isinstance(details, dict) else {},
    )


@router.get("/audit", response_model=AuditList, responses=_ERRORS)
async def audit(
    caller: AdminCaller,
    state: State,
    run_id: _Id = None,
    principal_id: _Id = None,
    tool_name: _Id = None,
    decision: Literal["allow", "deny"] | None = None,
    action: _Id = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> AuditList:
    """The newest audit entries matching the filters, oldest first."""
    where = AuditFilter(
        run_id=run_id,
        principal_id=principal_id,
        tool_name=tool_name,
        decision=decision,
        action=action,
    )
    rows = await state.store.audit(where, limit=limit)
    return AuditList(data=[_entry(r) for r in rows])


@router.post("/audit/verify", response_model=AuditVerification, responses=_ERRORS)
async def verify_audit(caller: AdminCaller, state: State) -> AuditVerification:
    """Check the whole audit chain (positions, links, MACs, columns) and its checkpoints."""
    report, checkpoints = await state.store.verify_audit()
    problems = [] if checkpoints is None else list(checkpoints.problems)
    return AuditVerification(
        ok=report.ok and not problems,
        entries=report.entries,
        first_bad=report.first_bad,
        problem=report.problem,
        checkpoints=0 if checkpoints is None else len(checkpoints.checkpoints),
        checkpoints_matched=report.checkpoints_matched,
        checkpoint_problems=problems,
    )
