"""`PolicyGate`: the default Permissions Gate.

It answers three questions, recording each answer to the first and the last in the audit log:

* who is asking (`authenticate`): with an API key on the request (``AgentRequest.api_key``), the
  key's principal, once the key is checked (`bastion.gate.keys`); the request's ``user_id`` must
  then name that same principal, since it scopes the session history the run may read. Without a
  key, the principal whose id is ``user_id``, vouched for by the app that owns the transport (the
  CLI's ``--user``, for local use), unless the gate requires a key (``require_api_key``, for any
  system reachable by others). Principals come from the app (code and principals file) and then
  from the database (`bastion.gate.directory`).
* may they see a tool at all (`may_use`): every scope the tool requires is granted, by name, by
  ``"*"``, or by a trailing wildcard (``"orders:*"`` grants ``"orders:read"``).
* may they make this call (`authorize`): scopes first, then the app's argument policies for that
  tool, in order; the first denial wins. A policy that raises denies (fail closed): a bug in a
  check must never let a call through. A policy may answer that the call needs a human approval
  (`Decision.approval_required`): the other policies still run (a hard denial wins), and the
  decision then needs an approval; the call goes ahead only with a `Grant` (a used approval,
  `bastion.gate.approvals`) whose tool and args hash match the call exactly.

Each decision is recorded with the call's args, secrets redacted (`bastion.gate.redact`). An audit
log that cannot record a decision makes the call fail: no decision goes unrecorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn

from bastion.clock import Clock
from bastion.errors import ConfigError, NotAuthenticated
from bastion.gate.approvals import args_hash
from bastion.gate.directory import PrincipalStore
from bastion.gate.interface import (
    ArgPolicy,
    AuditEntry,
    AuditLog,
    Decision,
    Grant,
    PermissionsGate,
    PolicyInput,
    Stage,
)
from bastion.gate.keys import KeyStore, key_id_of
from bastion.gate.redact import Redactor
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
    """Authenticates by API key or app-vouched user id; authorizes by scopes and arg policies.

    Args:
        principals: the app's principals, as a sequence or keyed by id (keys must equal ids).
        audit: where every decision is recorded.
        clock: stamps the audit entries and checks key expiry.
        policies: argument policies per tool name, run in order. Names of tools that are not
            registered (yet) are accepted: tools may be mounted later.
        keys: checks API keys; None refuses every request that carries one.
        store: principals kept in the database, consulted after `principals`.
        require_api_key: refuse requests without an API key (any system reachable by others).
        redactor: hides secrets in what is audited.

    Raises:
        ConfigError: two principals share an id, a mapping key differs from its principal's id,
            or a key is required but no key store is given.
    """

    def __init__(
        self,
        *,
        principals: Mapping[str, Principal] | Iterable[Principal],
        audit: AuditLog,
        clock: Clock,
        policies: Mapping[str, Sequence[ArgPolicy]] = _NO_POLICIES,
        keys: KeyStore | None = None,
        store: PrincipalStore | None = None,
        require_api_key: bool = False,
        redactor: Redactor | None = None,
    ) -> None:
        if require_api_key and keys is None:
            raise ConfigError("the gate requires API keys but was given no key store to check them")
        self._principals = _index(principals)
        self._audit = audit
        self._clock = clock
        self._policies = {name: tuple(checks) for name, checks in policies.items()}
        self._keys = keys
        self._store = store
        self._require_api_key = require_api_key
        self._redactor = redactor or Redactor()

    async def aclose(self) -> None:
        """Release what the audit log holds (its share of the database's writer)."""
        aclose = getattr(self._audit, "aclose", None)
        if aclose is not None:
            await aclose()

    # -- authentication ------------------------------------------------------------------------

    async def authenticate(self, request: AgentRequest) -> Principal:
        if request.api_key is not None:
            return await self._by_key(request, request.api_key)
        if self._require_api_key:
            await self._refuse(
                request,
                "an API key is required: pass one (bastion run --api-key, or BASTION_API_KEY); "
                "create one with: bastion keys create",
                details={"user_id": request.user_id, "method": "none"},
            )
        principal = await self._find(request.user_id)
        if principal is None:
            await self._refuse(
                request,
                f"unknown user {request.user_id!r}: no principal has this id",
                details={"user_id": request.user_id, "method": "user_id"},
            )
        await self._record(
            action="authenticate",
            allowed=True,
            principal_id=principal.id,
            reason="known principal (user id vouched for by the app)",
            run_id=request.run_id,
            details={"method": "user_id"},
        )
        return principal

    async def _by_key(self, request: AgentRequest, api_key: str) -> Principal:
        details: dict[str, Any] = {"method": "api_key", "key_id": key_id_of(api_key)}
        if self._keys is None:
            await self._refuse(request, "this system accepts no API keys", details=details)
        try:
            record = await self._keys.authenticate(api_key, now=self._clock.now())
        except NotAuthenticated as exc:
            await self._record(
                action="authenticate",
                allowed=False,
                principal_id=None,
                reason=str(exc),
                run_id=request.run_id,
                details={**details, "user_id": request.user_id},
            )
            raise
        principal = await self._find(record.principal_id)
        if principal is None:
            await self._refuse(
                request,
                f"API key {record.label} belongs to {record.principal_id!r}, which is no longer "
                "a principal of this system",
                details=details,
            )
        if request.user_id != principal.id:
            await self._refuse(
                request,
                f"API key {record.label} belongs to {principal.id!r}, but the request is made as "
                f"{request.user_id!r}: a key acts only as its own principal",
                details={**details, "user_id": request.user_id},
            )
        await self._record(
            action="authenticate",
            allowed=True,
            principal_id=principal.id,
            reason=f"valid API key {record.label}",
            run_id=request.run_id,
            details=details,
        )
        return principal

    async def _find(self, principal_id: str) -> Principal | None:
        principal = self._principals.get(principal_id)
        if principal is None and self._store is not None:
            principal = await self._store.get(principal_id)
        return principal

    async def _refuse(
        self, request: AgentRequest, reason: str, *, details: dict[str, Any]
    ) -> NoReturn:
        await self._record(
            action="authenticate",
            allowed=False,
            principal_id=None,
            reason=reason,
            run_id=request.run_id,
            details=details,
        )
        raise NotAuthenticated(reason)

    # -- authorization -------------------------------------------------------------------------

    def may_use(self, principal: Principal, tool: ToolSpec) -> bool:
        return not _missing_scopes(principal, tool)

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
        details: dict[str, Any] = {"args": self._redactor.json(args)}
        decision = await self._decide(principal, tool, args, stage, run_id, details)
        if decision.needs_approval:
            details["needs_approval"] = True
            if grant is not None:
                details["approval_id"] = grant.approval_id
                decision = _with_grant(decision, grant, tool, args)
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
        needs_approval: Decision | None = None
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
            if verdict is not None and verdict.needs_approval:
                # Remembered, not returned: a later policy may still deny the call outright.
                if needs_approval is None:
                    details["policy"] = name
                    needs_approval = verdict
                continue
            if verdict is not None and not verdict.allowed:
                details["policy"] = name
                return verdict
        return needs_approval or Decision.allow()

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


def _with_grant(decision: Decision, grant: Grant, tool: ToolSpec, args: JsonObject) -> Decision:
    """Allow an approval-needing call whose grant is for exactly this call; deny it otherwise."""
    if grant.tool_name != tool.name or grant.args_hash != args_hash(args):
        return Decision.deny(
            f"approval {grant.approval_id} was given for another call, not this {tool.name} "
            "call: refused"
        )
    return Decision.allow(
        f"approved by {grant.approved_by} (approval {grant.approval_id}): {decision.reason}"
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
