"""Human approvals: a risky call waits for a person, bound to that exact call, single use.

A policy that answers `Decision.approval_required` pauses the run (`bastion.flow.approval`); the
run asks this store for an approval of the call, and a person decides it here. The rules, each
enforced in the database by a conditional update, so that two deciders, two workers, or a replay
racing each other can never both win (the same on SQLite and PostgreSQL):

* an approval is bound to one call: the tool's name and `args_hash` of its args (SHA-256 of the
  canonical JSON, as the audit log serialises: sorted keys, no spaces). Using it for any other
  call (args edited after the request, or a row tampered with) is refused (`ApprovalMismatch`);
* it is decided once: pending → approved or denied (`ApprovalAlreadyDecided` after that);
* it is used once: approved → used, by the run that asked (`consume`);
* it expires (``gate.approval_ttl_s``, by the injected clock): a pending approval past its time
  becomes expired, and so cannot be approved or used any more (`ApprovalExpired`);
* the approver is another principal than the one the run acts for (`SelfApproval`), holding the
  ``approver`` role (`NotAnApprover`).

Every request, decision, refusal, use and expiry is an audit entry (actions ``approval_request``,
``approval_grant``, ``approval_deny``, ``approval_use``, ``approval_expire``). The store never
trusts a message: a run woken by one re-reads its approval here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.errors import (
    ApprovalAlreadyDecided,
    ApprovalError,
    ApprovalExpired,
    ApprovalMismatch,
    NotAnApprover,
    SelfApproval,
    UnknownApproval,
)
from bastion.gate.interface import AuditEntry, AuditLog
from bastion.messages import JsonObject, Principal
from bastion.storage.engine import begin_write
from bastion.storage.tables import approvals as _t

#: The role a principal needs to decide approvals.
APPROVER_ROLE = "approver"


class ApprovalStatus(StrEnum):
    """Where an approval stands; only ``pending`` and ``approved`` can still change."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    USED = "used"


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """One approval, as stored."""

    approval_id: str
    run_id: str
    #: The paused step within its run (plan revision and step id).
    step_key: str
    tool_name: str
    args_hash: str
    reason: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    status: ApprovalStatus
    decided_by: str | None = None
    decided_at: datetime | None = None
    #: The approver's note, or why it was denied.
    decision_note: str | None = None
    used_at: datetime | None = None


#: Stores an `Approval` as JSON (a run's checkpoint of the approval it asked for).
APPROVAL: TypeAdapter[Approval] = TypeAdapter(Approval)


def canonical_json(value: Any) -> str:
    """`value` as canonical JSON: sorted keys at every depth, no spaces, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def args_hash(args: JsonObject) -> str:
    """SHA-256 (hex) of the canonical JSON of a call's args: what an approval is bound to."""
    return hashlib.sha256(canonical_json(args).encode()).hexdigest()


class ApprovalStore:
    """Approvals in the ``approvals`` table (migration v5), every change audited.

    Args:
        engine: Bastion's database (migrated: the memory store's ``start()`` or `migrate`).
        clock: stamps requests and decisions, and decides expiry.
        audit: where every request, decision, refusal, use and expiry is recorded.
        ttl_s: how long an approval stays valid after it is requested.
    """

    def __init__(self, *, engine: AsyncEngine, clock: Clock, audit: AuditLog, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._engine = engine
        self._clock = clock
        self._audit = audit
        self._ttl_s = ttl_s

    # -- asking --------------------------------------------------------------------------------

    async def request(
        self,
        *,
        run_id: str,
        step_key: str,
        tool_name: str,
        args: JsonObject,
        reason: str,
        requested_by: str,
    ) -> Approval:
        """Ask for an approval of one call; asking again for the same run step returns the first.

        (A run replayed after a crash between the request and its checkpoint asks again.)
        """
        now = self._clock.now()
        approval = Approval(
            approval_id=f"ap_{uuid.uuid4().hex[:16]}",
            run_id=run_id,
            step_key=step_key,
            tool_name=tool_name,
            args_hash=args_hash(args),
            reason=reason,
            requested_by=requested_by,
            requested_at=now,
            expires_at=now + timedelta(seconds=self._ttl_s),
            status=ApprovalStatus.PENDING,
        )
        try:
            async with begin_write(self._engine) as conn:
                await conn.execute(sa.insert(_t).values(**_row(approval)))
        except IntegrityError:
            async with self._engine.connect() as conn:
                found = (
                    (
                        await conn.execute(
                            sa.select(_t).where(_t.c.run_id == run_id, _t.c.step_key == step_key)
                        )
                    )
                    .mappings()
                    .first()
                )
            if found is None:  # pragma: no cover - an integrity error on another constraint
                raise
            return _from_row(found)
        await self._record(
            "approval_request", approval, allowed=True, principal_id=requested_by, reason=reason
        )
        return approval

    # -- reading -------------------------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval:
        """The approval with this id.

        Raises:
            UnknownApproval: no approval has this id.
        """
        async with self._engine.connect() as conn:
            found = (
                (await conn.execute(sa.select(_t).where(_t.c.approval_id == approval_id)))
                .mappings()
                .first()
            )
        if found is None:
            raise UnknownApproval(f"no approval {approval_id!r}", approval_id=approval_id)
        return _from_row(found)

    async def pending(self, run_id: str | None = None) -> list[Approval]:
        """Approvals still waiting for a decision (and not past their time), oldest first."""
        query = (
            sa.select(_t)
            .where(_t.c.status == ApprovalStatus.PENDING.value)
            .where(_t.c.expires_at > self._clock.now())
            .order_by(_t.c.requested_at, _t.c.approval_id)
        )
        if run_id is not None:
            query = query.where(_t.c.run_id == run_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_from_row(r) for r in rows]

    # -- deciding ------------------------------------------------------------------------------

    async def approve(self, approval_id: str, approver: Principal, note: str = "") -> Approval:
        """Approve a pending approval.

        Raises:
            UnknownApproval, SelfApproval, NotAnApprover, ApprovalExpired,
            ApprovalAlreadyDecided: as their names say (each refusal is audited).
        """
        return await self._decide(approval_id, approver, ApprovalStatus.APPROVED, note)

    async def deny(self, approval_id: str, approver: Principal, reason: str) -> Approval:
        """Deny a pending approval; `reason` is shown to the run's planner and recorded.

        Raises:
            UnknownApproval, SelfApproval, NotAnApprover, ApprovalExpired,
            ApprovalAlreadyDecided: as their names say (each refusal is audited).
        """
        return await self._decide(approval_id, approver, ApprovalStatus.DENIED, reason)

    async def _decide(
        self, approval_id: str, approver: Principal, status: ApprovalStatus, note: str
    ) -> Approval:
        action = "approval_grant" if status is ApprovalStatus.APPROVED else "approval_deny"
        run_id = None
        try:
            approval = await self.get(approval_id)
            run_id = approval.run_id
            if approver.id == approval.requested_by:
                raise SelfApproval(
                    f"{approver.id} asked for this call and may not approve or deny it: another "
                    f"principal with the {APPROVER_ROLE!r} role must decide",
                    approval_id=approval_id,
                )
            if APPROVER_ROLE not in approver.roles:
                raise NotAnApprover(
                    f"{approver.id} may not decide approvals: it lacks the {APPROVER_ROLE!r} role",
                    approval_id=approval_id,
                )
            now = self._clock.now()
            changed = await self._move(
                approval_id,
                ApprovalStatus.PENDING,
                [_t.c.expires_at > now],
                status=status.value,
                decided_by=approver.id,
                decided_at=now,
                decision_note=note,
            )
            if not changed:
                raise await self._why_not(approval_id, ApprovalStatus.PENDING)
        except ApprovalError as exc:
            await self._refused(action, approval_id, approver.id, exc, run_id=run_id)
            raise
        decided = await self.get(approval_id)
        await self._record(
            action,
            decided,
            allowed=status is ApprovalStatus.APPROVED,
            principal_id=approver.id,
            reason=f"{status.value} by {approver.id}" + (f": {note}" if note else ""),
        )
        return decided

    async def _move(
        self,
        approval_id: str,
        from_status: ApprovalStatus,
        conditions: list[sa.ColumnElement[bool]],
        **values: object,
    ) -> bool:
        """Change the approval's row if it is in `from_status` and meets `conditions`.

        One conditional update: of several processes moving the same approval at once, exactly
        one succeeds (True); the others find the row changed (False).
        """
        async with begin_write(self._engine) as conn:
            result = await conn.execute(
                sa.update(_t)
                .where(_t.c.approval_id == approval_id)
                .where(_t.c.status == from_status.value)
                .where(*conditions)
                .values(**values)
            )
        return bool(result.rowcount)

    # -- using ---------------------------------------------------------------------------------

    async def consume(self, approval_id: str, tool_name: str, args: JsonObject) -> Approval:
        """Use an approved approval for the call it was given for: once, and only for that call.

        Raises:
            UnknownApproval, ApprovalMismatch (another tool or other args: tampered),
            ApprovalExpired, ApprovalAlreadyDecided (denied, or already used): each audited.
        """
        digest = args_hash(args)
        run_id = None
        try:
            approval = await self.get(approval_id)
            run_id = approval.run_id
            if approval.tool_name != tool_name or approval.args_hash != digest:
                raise ApprovalMismatch(
                    f"approval {approval_id} was given for another call (tool "
                    f"{approval.tool_name}, args {approval.args_hash[:12]}), not for {tool_name} "
                    f"with args {digest[:12]}: refused",
                    approval_id=approval_id,
                )
            now = self._clock.now()
            changed = await self._move(
                approval_id,
                ApprovalStatus.APPROVED,
                [_t.c.tool_name == tool_name, _t.c.args_hash == digest, _t.c.expires_at > now],
                status=ApprovalStatus.USED.value,
                used_at=now,
            )
            if not changed:
                raise await self._why_not(approval_id, ApprovalStatus.APPROVED, digest=digest)
        except ApprovalError as exc:
            await self._refused(
                "approval_use", approval_id, None, exc, tool_name=tool_name, run_id=run_id
            )
            raise
        used = await self.get(approval_id)
        await self._record(
            "approval_use",
            used,
            allowed=True,
            principal_id=used.requested_by,
            reason=f"approved by {used.decided_by}, used once for this call",
        )
        return used

    # -- expiring ------------------------------------------------------------------------------

    async def expire_due(self, run_id: str | None = None) -> list[Approval]:
        """Mark every pending approval past its time as expired; returns those just expired."""
        now = self._clock.now()
        query = sa.select(_t.c.approval_id).where(
            _t.c.status == ApprovalStatus.PENDING.value, _t.c.expires_at <= now
        )
        if run_id is not None:
            query = query.where(_t.c.run_id == run_id)
        async with self._engine.connect() as conn:
            due = list((await conn.execute(query)).scalars())
        expired = []
        for approval_id in due:
            approval = await self._expire(approval_id, now)
            if approval is not None:
                expired.append(approval)
        return expired

    async def _expire(self, approval_id: str, now: datetime) -> Approval | None:
        """Expire one pending approval past its time; None if it was not (or another did it)."""
        changed = await self._move(
            approval_id,
            ApprovalStatus.PENDING,
            [_t.c.expires_at <= now],
            status=ApprovalStatus.EXPIRED.value,
            decided_at=now,
        )
        if not changed:
            return None
        expired = await self.get(approval_id)
        await self._record(
            "approval_expire",
            expired,
            allowed=False,
            principal_id=None,
            reason=f"no decision before {expired.expires_at.isoformat()}",
        )
        return expired

    async def _why_not(
        self, approval_id: str, wanted: ApprovalStatus, *, digest: str | None = None
    ) -> ApprovalError:
        """Why a conditional update changed nothing, read back after it."""
        approval = await self.get(approval_id)
        if digest is not None and approval.args_hash != digest:
            return ApprovalMismatch(
                f"approval {approval_id} is bound to other args: refused", approval_id=approval_id
            )
        if approval.status is wanted:  # still in the wanted state: it is past its time
            if wanted is ApprovalStatus.PENDING:
                await self._expire(approval_id, self._clock.now())
            return ApprovalExpired(
                f"approval {approval_id} expired at {approval.expires_at.isoformat()}",
                approval_id=approval_id,
            )
        if approval.status is ApprovalStatus.EXPIRED:
            return ApprovalExpired(
                f"approval {approval_id} expired at {approval.expires_at.isoformat()}",
                approval_id=approval_id,
            )
        if approval.status is ApprovalStatus.USED:
            return ApprovalAlreadyDecided(
                f"approval {approval_id} was already used (at {approval.used_at}); an approval "
                "allows one call only",
                approval_id=approval_id,
            )
        return ApprovalAlreadyDecided(
            f"approval {approval_id} was already {approval.status.value}"
            + (f" by {approval.decided_by}" if approval.decided_by else ""),
            approval_id=approval_id,
        )

    # -- audit ---------------------------------------------------------------------------------

    async def _record(
        self,
        action: str,
        approval: Approval,
        *,
        allowed: bool,
        principal_id: str | None,
        reason: str,
    ) -> None:
        await self._audit.append(
            AuditEntry(
                at=self._clock.now(),
                action=action,
                decision="allow" if allowed else "deny",
                principal_id=principal_id,
                reason=reason,
                run_id=approval.run_id,
                tool_name=approval.tool_name,
                details={
                    "approval_id": approval.approval_id,
                    "status": approval.status.value,
                    "args_hash": approval.args_hash,
                    "requested_by": approval.requested_by,
                    "decided_by": approval.decided_by,
                },
            )
        )

    async def _refused(
        self,
        action: str,
        approval_id: str,
        principal_id: str | None,
        exc: ApprovalError,
        *,
        tool_name: str | None = None,
        run_id: str | None = None,
    ) -> None:
        await self._audit.append(
            AuditEntry(
                at=self._clock.now(),
                action=action,
                decision="deny",
                principal_id=principal_id,
                reason=str(exc),
                run_id=run_id,
                tool_name=tool_name,
                details={"approval_id": approval_id, "refused": type(exc).__name__},
            )
        )


def _row(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": approval.approval_id,
        "run_id": approval.run_id,
        "step_key": approval.step_key,
        "tool_name": approval.tool_name,
        "args_hash": approval.args_hash,
        "reason": approval.reason,
        "requested_by": approval.requested_by,
        "requested_at": approval.requested_at,
        "expires_at": approval.expires_at,
        "status": approval.status.value,
    }


def _from_row(row: sa.RowMapping) -> Approval:
    return Approval(
        approval_id=row["approval_id"],
        run_id=row["run_id"],
        step_key=row["step_key"],
        tool_name=row["tool_name"],
        args_hash=row["args_hash"],
        reason=row["reason"],
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        expires_at=row["expires_at"],
        status=ApprovalStatus(row["status"]),
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision_note=row["decision_note"],
        used_at=row["used_at"],
    )
