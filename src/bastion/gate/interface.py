"""The Permissions Gate's contract: who is asking, and may they make this call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from bastion.messages import AgentRequest, JsonObject, Principal
from bastion.router.interface import ToolSpec

#: When a call is checked: once when the plan is validated, again right before it runs.
Stage = Literal["plan", "execute"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The gate's answer for one call."""

    allowed: bool
    reason: str = ""
    #: The call may go ahead only with a human approval (never together with ``allowed``).
    needs_approval: bool = False

    def __post_init__(self) -> None:
        if self.allowed and self.needs_approval:
            raise ValueError("a decision that needs an approval does not allow the call yet")

    @classmethod
    def allow(cls, reason: str = "allowed") -> Decision:
        """An allowing decision."""
        return cls(allowed=True, reason=reason)

    @classmethod
    def deny(cls, reason: str) -> Decision:
        """A denying decision; `reason` is shown to the planner and the audit log."""
        return cls(allowed=False, reason=reason)

    @classmethod
    def approval_required(cls, reason: str) -> Decision:
        """The call needs a human approval; `reason` says why (e.g. "refund above 200.00").

        The run pauses until a person decides (`bastion.gate.approvals`); a hard denial by any
        other check of the same call still wins over it.
        """
        return cls(allowed=False, reason=reason, needs_approval=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """A human approval, already used (consumed) by the run, for the one call it was given for.

    The gate lets an approval-needing call go ahead with it only if tool and args hash match.
    """

    approval_id: str
    tool_name: str
    args_hash: str
    approved_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyInput:
    """What an argument-level policy sees."""

    principal: Principal
    tool: ToolSpec
    args: JsonObject
    stage: Stage
    run_id: str


#: An app-declared check of one call's args, e.g. "a customer may only read their own orders".
#: Returns a denial to stop the call, or None to have no opinion.
ArgPolicy = Callable[[PolicyInput], Awaitable[Decision | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One decision, as recorded in the audit log."""

    at: datetime
    action: str  # "authenticate" | "authorize" | ...
    decision: Literal["allow", "deny"]
    principal_id: str | None
    reason: str = ""
    run_id: str | None = None
    tool_name: str | None = None
    stage: Stage | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AuditLog(Protocol):
    """Append-only record of every gate decision. `append` never loses an entry silently.

    `append` raises when the entry cannot be stored: the caller must then not act on the decision.
    """

    async def append(self, entry: AuditEntry) -> None: ...


class PermissionsGate(Protocol):
    """Authenticates callers and authorizes every tool call, recording each decision."""

    async def authenticate(self, request: AgentRequest) -> Principal:
        """The principal behind `request`.

        Raises:
            NotAuthenticated: the caller is unknown (recorded in the audit log).
        """
        ...

    def may_use(self, principal: Principal, tool: ToolSpec) -> bool:
        """Whether `principal` holds every scope `tool` requires (the planner sees only these)."""
        ...

    async def authorize(
        self,
        principal: Principal,
        tool: ToolSpec,
        args: JsonObject,
        *,
        stage: Stage,
        run_id: str,
        grant: Grant | None = None,
    ) -> Decision:
        """Scopes, then the tool's argument policies; the decision is audited.

        A call that needs an approval is allowed only with a `grant` for exactly this call.
        """
        ...
