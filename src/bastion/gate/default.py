"""`PolicyGate`: the default Permissions Gate, from a fixed table of principals.

It answers three questions, recording each answer to the first and the last in the audit log:

* who is asking (`authenticate`): the principal whose id is the request's ``user_id``. API keys
  stored as keyed hashes and OIDC come in later issues; until then the app, which owns the
  transport, vouches for ``user_id``.
* may they see a tool at all (`may_use`): every scope the tool requires is granted, by name, by
  ``"*"``, or by a trailing wildcard (``"orders:*"`` grants ``"orders:read"``).
* may they make this call (`authorize`): scopes first, then the app's argument policies for that
  tool, in order; the first denial wins. A policy that raises denies (fail closed): a bug in a
  check must never let a call through.

Each authorization is recorded with the call's args, secret-looking values redacted
(`bastion.gate.audit.redact`). An audit log that cannot record a decision makes the call fail: no
decision goes unrecorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from bastion.clock import Clock
from bastion.errors import ConfigError, NotAuthenticated
from bastion.gate.audit import redact
from bastion.gate.interface import (
    ArgPolicy,
    AuditEntry,
    AuditLog,
    Decision,
    PermissionsGate,
    PolicyInput,
    Stage,
)
from bastion.messages import AgentRequest, JsonObject, Principal
from bastion.router.interface import ToolSpec

logger = logging.getLogger(__name__)

_NO_POLICIES: Mapping[str, Sequence[ArgPolicy]] = MappingProxyType({})


def grants(scopes: Iterable[str], required: str) -> bool:
    """Whether any of `scopes` grants the `required` scope (exactly, ``"*"``, or ``"x:*"``)."""
    for scope in scopes:
        if scope in ("*", required):
            return True
        if scope.endswith(":*") and required.startswith(scope[:-1]):
            return True
    return False


class PolicyGate(PermissionsGate):
    """Authenticates against a fixed set of principals; authorizes by scopes and arg policies.

    Args:
        principals: the known principals, as a sequence or keyed by id (keys must equal ids).
        audit: where every decision is recorded.
        clock: stamps the audit entries.
        policies: argument policies per tool name, run in order. Names of tools that are not
            registered (yet) are accepted: tools may be mounted later.

    Raises:
        ConfigError: two principals share an id, or a mapping key differs from its principal's id.
    """

    def __init__(
        self,
        *,
        principals: Mapping[str, Principal] | Iterable[Principal],
        audit: AuditLog,
        clock: Clock,
        policies: Mapping[str, Sequence[ArgPolicy]] = _NO_POLICIES,
    ) -> None:
        self._principals = _index(principals)
        self._audit = audit
        self._clock = clock
        self._policies = {name: tuple(checks) for name, checks in policies.items()}

    async def authenticate(self, request: AgentRequest) -> Principal:
        principal = self._principals.get(request.user_id)
        if principal is None:
            reason = f"unknown user {request.user_id!r}: no principal has this id"
            await self._record(
                action="authenticate",
                allowed=False,
                principal_id=None,
                reason=reason,
                run_id=request.run_id,
                details={"user_id": request.user_id},
            )
            raise NotAuthenticated(reason)
        await self._record(
            action="authenticate",
            allowed=True,
            principal_id=principal.id,
            reason="known principal",
            run_id=request.run_id,
        )
        return principal

    def may_use(self, principal: Principal, tool: ToolSpec) -> bool:
        return not _missing_scopes(principal, tool)

    async def authorize(
        self, principal: Principal, tool: ToolSpec, args: JsonObject, *, stage: Stage, run_id: str
    ) -> Decision:
        # Redacted here as well as by our logs when they seal: a replacement log may not.
        details: dict[str, Any] = {"args": redact(args)}
        decision = await self._decide(principal, tool, args, stage, run_id, details)
        await self._record(
            action="authorize",
            allowed=decision.allowed,
            principal_id=principal.id,
            reason=decision.reason,
            run_id=run_id,
            tool_name=tool.name,
            stage=stage,
            details=details,
        )
        return decision

    async def _decide(
        self,
        principal: Principal,
        tool: ToolSpec,
        args: JsonObject,
        stage: Stage,
        run_id: str,
        details: dict[str, Any],
    ) -> Decision:
        missing = _missing_scopes(principal, tool)
        if missing:
            return Decision.deny(
                f"tool {tool.name!r} requires scope(s) {', '.join(missing)}, "
                f"which user {principal.id!r} lacks"
            )
        policy_input = PolicyInput(
            principal=principal, tool=tool, args=args, stage=stage, run_id=run_id
        )
        for policy in self._policies.get(tool.name, ()):
            name = getattr(policy, "__qualname__", repr(policy))
            try:
                verdict = await policy(policy_input)
            except Exception as exc:  # fail closed: a broken check denies
                logger.exception(
                    "argument policy %s raised for tool %r (run %s); denying the call",
                    name,
                    tool.name,
                    run_id,
                )
                details["policy"] = name
                return Decision.deny(f"policy error: {type(exc).__name__}: {exc}")
            if verdict is not None and not isinstance(verdict, Decision):
                logger.error("argument policy %s returned %r, not a Decision", name, verdict)
                details["policy"] = name
                return Decision.deny(
                    f"policy error: {name} returned {type(verdict).__name__}, "
                    "expected a Decision or None"
                )
            if verdict is not None and not verdict.allowed:
                details["policy"] = name
                return verdict
        return Decision.allow()

    async def _record(
        self,
        *,
        action: str,
        allowed: bool,
        principal_id: str | None,
        reason: str,
        run_id: str,
        tool_name: str | None = None,
        stage: Stage | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        await self._audit.append(
            AuditEntry(
                at=self._clock.now(),
                action=action,
                decision="allow" if allowed else "deny",
                principal_id=principal_id,
                reason=reason,
                run_id=run_id,
                tool_name=tool_name,
                stage=stage,
                details=details or {},
            )
        )


def _missing_scopes(principal: Principal, tool: ToolSpec) -> list[str]:
    return sorted(s for s in tool.required_permissions if not grants(principal.scopes, s))


def _index(principals: Mapping[str, Principal] | Iterable[Principal]) -> dict[str, Principal]:
    if isinstance(principals, Mapping):
        for key, principal in principals.items():
            if key != principal.id:
                raise ConfigError(
                    f"principal registered under {key!r} has id {principal.id!r}; "
                    "the key must be the principal's id"
                )
        return dict(principals)
    index: dict[str, Principal] = {}
    for principal in principals:
        if principal.id in index:
            raise ConfigError(f"two principals have the id {principal.id!r}; ids must be unique")
        index[principal.id] = principal
    return index
