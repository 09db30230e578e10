from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import BaseModel

from bastion.errors import ConfigError, NotAuthenticated
from bastion.gate.audit import InMemoryAuditLog
from bastion.gate.default import PolicyGate, grants
from bastion.gate.interface import AuditEntry, Decision, PolicyInput
from bastion.gate.redact import REDACTED
from bastion.messages import AgentRequest, Principal
from bastion.router.interface import ToolSpec
from bastion.testing.clock import FakeClock


class _NoArgs(BaseModel):
    pass


def make_tool(name: str, *scopes: str) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=f"the {name} tool",
        fn=lambda: None,
        args_model=_NoArgs,
        args_schema={"type": "object", "properties": {}, "additionalProperties": False},
        is_async=False,
        required_permissions=frozenset(scopes),
    )


C1 = Principal(id="c1", roles=frozenset({"customer"}), scopes=frozenset({"orders:read"}))
LEAD = Principal(id="lead", roles=frozenset({"support_lead"}), scopes=frozenset({"*"}))


def make_gate(
    policies: dict[str, Any] | None = None, *principals: Principal
) -> tuple[PolicyGate, InMemoryAuditLog, FakeClock]:
    audit = InMemoryAuditLog()
    clock = FakeClock()
    gate = PolicyGate(
        principals=principals or (C1, LEAD), audit=audit, clock=clock, policies=policies or {}
    )
    return gate, audit, clock


def request_for(user_id: str) -> AgentRequest:
    return AgentRequest(user_id=user_id, session_id="s1", message="hi", run_id="run_1")


# -- scopes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "required", "granted"),
    [
        ({"orders:read"}, "orders:read", True),
        ({"orders:read"}, "orders:write", False),
        ({"*"}, "refunds:write", True),
        ({"orders:*"}, "orders:read", True),
        ({"orders:*"}, "orders:read:all", True),
        ({"orders:*"}, "refunds:write", False),
        ({"orders:*"}, "orders", False),
        ({"orders:*"}, "ordersx:read", False),
        ({"orders*"}, "orders:read", False),
        (set(), "orders:read", False),
    ],
)
def test_grants_exact_star_and_trailing_wildcard(
    scopes: set[str], required: str, granted: bool
) -> None:
    assert grants(scopes, required) is granted


def test_may_use_needs_every_required_scope() -> None:
    gate, _, _ = make_gate()
    both = make_tool("both", "orders:read", "refunds:write")
    assert gate.may_use(C1, make_tool("get_order", "orders:read"))
    assert gate.may_use(
        C1,
        make_tool(
            "open",
        ),
    )
    assert not gate.may_use(C1, both)
    assert gate.may_use(LEAD, both)


# -- authenticate ----------------------------------------------------------------------------


async def test_authenticate_returns_the_principal_and_audits_it() -> None:
    gate, audit, clock = make_gate()
    assert await gate.authenticate(request_for("c1")) is C1
    [entry] = audit.entries
    assert entry == AuditEntry(
        at=clock.now(),
        action="authenticate",
        decision="allow",
        principal_id="c1",
        reason="known principal (user id vouched for by the app)",
        run_id="run_1",
        details={"method": "user_id"},
    )


async def test_unknown_user_is_refused_and_audited() -> None:
    gate, audit, _ = make_gate()
    with pytest.raises(NotAuthenticated, match="unknown user 'mallory'"):
        await gate.authenticate(request_for("mallory"))
    [entry] = audit.entries
    assert (entry.action, entry.decision, entry.principal_id) == ("authenticate", "deny", None)
    assert entry.details == {"user_id": "mallory", "method": "user_id"}
    assert "unknown user 'mallory'" in entry.reason


def test_principals_keyed_by_id_are_accepted() -> None:
    gate = PolicyGate(principals={"c1": C1}, audit=InMemoryAuditLog(), clock=FakeClock())
    assert gate.may_use(C1, make_tool("get_order", "orders:read"))


async def test_principals_mapping_is_used_for_lookup() -> None:
    gate = PolicyGate(principals={"c1": C1}, audit=InMemoryAuditLog(), clock=FakeClock())
    assert await gate.authenticate(request_for("c1")) is C1


def test_mapping_key_must_equal_principal_id() -> None:
    with pytest.raises(ConfigError, match="registered under 'alice' has id 'c1'"):
        PolicyGate(principals={"alice": C1}, audit=InMemoryAuditLog(), clock=FakeClock())


def test_duplicate_principal_ids_are_refused() -> None:
    with pytest.raises(ConfigError, match="two principals have the id 'c1'"):
        PolicyGate(principals=[C1, C1], audit=InMemoryAuditLog(), clock=FakeClock())


# -- authorize -------------------------------------------------------------------------------


async def test_missing_scope_is_denied_naming_the_scopes() -> None:
    gate, audit, _ = make_gate()
    tool = make_tool("issue_refund", "refunds:write", "orders:read", "audit:read")
    decision = await gate.authorize(C1, tool, {"order_id": "A1"}, stage="plan", run_id="r1")
    assert not decision.allowed
    assert decision.reason == (
        "tool 'issue_refund' requires scope(s) audit:read, refunds:write, which user 'c1' lacks"
    )
    [entry] = audit.entries
    assert (entry.decision, entry.reason) == ("deny", decision.reason)


async def test_scope_denial_skips_policies() -> None:
    calls: list[PolicyInput] = []

    async def record(inp: PolicyInput) -> Decision | None:
        calls.append(inp)
        return None

    gate, _, _ = make_gate({"issue_refund": [record]})
    tool = make_tool("issue_refund", "refunds:write")
    assert not (await gate.authorize(C1, tool, {}, stage="plan", run_id="r1")).allowed
    assert calls == []


async def test_allowed_call_is_audited_with_stage_run_tool_and_args() -> None:
    gate, audit, clock = make_gate()
    tool = make_tool("get_order", "orders:read")
    decision = await gate.authorize(C1, tool, {"order_id": "A1"}, stage="execute", run_id="r9")
    assert decision == Decision.allow()
    assert audit.entries == [
        AuditEntry(
            at=clock.now(),
            action="authorize",
            decision="allow",
            principal_id="c1",
            reason="allowed",
            run_id="r9",
            tool_name="get_order",
            stage="execute",
            details={"args": {"order_id": "A1"}},
        )
    ]


async def test_policies_see_the_call_and_first_denial_wins() -> None:
    seen: list[PolicyInput] = []

    async def no_opinion(inp: PolicyInput) -> Decision | None:
        seen.append(inp)
        return None

    async def allows(inp: PolicyInput) -> Decision | None:
        return Decision.allow("fine by me")

    async def own_orders(inp: PolicyInput) -> Decision | None:
        if inp.args["order_id"] != "A1":
            return Decision.deny(
                f"customer {inp.principal.id} may not access order {inp.args['order_id']}: "
                "it belongs to another customer"
            )
        return None

    async def never_reached(inp: PolicyInput) -> Decision | None:
        raise AssertionError("policies after a denial must not run")

    gate, audit, _ = make_gate({"get_order": [no_opinion, allows, own_orders, never_reached]})
    tool = make_tool("get_order", "orders:read")
    decision = await gate.authorize(C1, tool, {"order_id": "A1002"}, stage="plan", run_id="r1")
    assert decision == Decision.deny(
        "customer c1 may not access order A1002: it belongs to another customer"
    )
    assert seen == [
        PolicyInput(principal=C1, tool=tool, args={"order_id": "A1002"}, stage="plan", run_id="r1")
    ]
    [entry] = audit.entries
    assert entry.decision == "deny"
    assert entry.details["policy"].endswith("own_orders")


async def test_policy_allow_does_not_override_a_later_denial_and_all_pass_allows() -> None:
    async def allows(inp: PolicyInput) -> Decision | None:
        return Decision.allow("fine")

    async def own_orders(inp: PolicyInput) -> Decision | None:
        return None if inp.args["order_id"] == "A1" else Decision.deny("not yours")

    gate, _, _ = make_gate({"get_order": [allows, own_orders]})
    tool = make_tool("get_order", "orders:read")
    ok = await gate.authorize(C1, tool, {"order_id": "A1"}, stage="plan", run_id="r1")
    bad = await gate.authorize(C1, tool, {"order_id": "A2"}, stage="plan", run_id="r1")
    assert ok.allowed
    assert bad == Decision.deny("not yours")


async def test_policies_of_other_tools_do_not_apply() -> None:
    async def deny_all(inp: PolicyInput) -> Decision | None:
        return Decision.deny("no")

    gate, _, _ = make_gate({"issue_refund": [deny_all], "not_mounted_yet": [deny_all]})
    tool = make_tool("get_order", "orders:read")
    assert (await gate.authorize(C1, tool, {}, stage="plan", run_id="r1")).allowed


async def test_raising_policy_denies_fail_closed_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(inp: PolicyInput) -> Decision | None:
        raise KeyError("order_id")

    gate, audit, _ = make_gate({"get_order": [broken]})
    tool = make_tool("get_order", "orders:read")
    with caplog.at_level(logging.ERROR, logger="bastion.gate.default"):
        decision = await gate.authorize(C1, tool, {}, stage="execute", run_id="r1")
    assert decision == Decision.deny("policy error: KeyError: 'order_id'")
    [entry] = audit.entries
    assert (entry.decision, entry.reason) == ("deny", decision.reason)
    [record] = caplog.records
    assert "denying the call" in record.getMessage()
    assert record.exc_info is not None


async def test_policy_returning_a_non_decision_denies() -> None:
    async def sloppy(inp: PolicyInput) -> Any:
        return True

    gate, _, _ = make_gate({"get_order": [sloppy]})
    tool = make_tool("get_order", "orders:read")
    decision = await gate.authorize(C1, tool, {}, stage="plan", run_id="r1")
    assert not decision.allowed
    assert decision.reason.startswith("policy error: ")
    assert "returned bool, expected a Decision or None" in decision.reason


async def test_audited_args_are_redacted_but_policies_see_the_real_ones() -> None:
    seen: list[dict[str, Any]] = []

    async def spy(inp: PolicyInput) -> Decision | None:
        seen.append(dict(inp.args))
        return None

    gate, audit, _ = make_gate({"pay": [spy]})
    args = {
        "amount": "12.00",
        "card_number": "4111111111111111",
        "customer": {"password": "hunter2", "name": "Ada"},
        "headers": [{"Authorization": "Bearer xyz"}],
        "api_key": "sk-1",
        "token": "t",
        "client_secret": "s",
    }
    await gate.authorize(LEAD, make_tool("pay"), args, stage="execute", run_id="r1")
    assert seen == [args]
    [entry] = audit.entries
    assert entry.details == {
        "args": {
            "amount": "12.00",
            "card_number": REDACTED,
            "customer": {"password": REDACTED, "name": "Ada"},
            "headers": [{"Authorization": REDACTED}],
            "api_key": REDACTED,
            "token": REDACTED,
            "client_secret": REDACTED,
        }
    }


class _SpyLog:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    async def append(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


async def test_gate_redacts_even_for_a_log_that_does_not() -> None:
    log = _SpyLog()
    gate = PolicyGate(principals=[LEAD], audit=log, clock=FakeClock())
    await gate.authorize(LEAD, make_tool("login"), {"password": "p"}, stage="plan", run_id="r")
    assert log.entries[0].details == {"args": {"password": REDACTED}}


class _BrokenLog:
    async def append(self, entry: AuditEntry) -> None:
        raise OSError("disk full")


async def test_a_decision_that_cannot_be_audited_fails_the_call() -> None:
    gate = PolicyGate(principals=[C1], audit=_BrokenLog(), clock=FakeClock())
    with pytest.raises(OSError, match="disk full"):
        await gate.authorize(C1, make_tool("get_order"), {}, stage="plan", run_id="r1")
    with pytest.raises(OSError, match="disk full"):
        await gate.authenticate(request_for("c1"))
