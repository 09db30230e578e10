"""PolicyGate with API keys, database principals, required keys and approval-needing policies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bastion.errors import ConfigError, NotAuthenticated
from bastion.gate.approvals import args_hash
from bastion.gate.audit import InMemoryAuditLog, verify
from bastion.gate.default import PolicyGate
from bastion.gate.directory import SqlPrincipalStore
from bastion.gate.interface import Decision, Grant, PolicyInput
from bastion.gate.keys import SqlKeyStore
from bastion.gate.redact import REDACTED, Redactor
from bastion.messages import AgentRequest, Principal
from bastion.router.interface import ToolSpec
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate
from bastion.testing.clock import FakeClock

C1 = Principal(id="c1", roles=frozenset({"customer"}), scopes=frozenset({"orders:read"}))


class _Args(BaseModel):
    order_id: str = ""


TOOL = ToolSpec(
    name="refund",
    description="refund",
    fn=lambda order_id="": None,
    args_model=_Args,
    args_schema={"type": "object"},
    is_async=False,
    required_permissions=frozenset({"refunds:write"}),
)


class World:
    def __init__(self, engine: Any) -> None:
        self.clock = FakeClock()
        self.audit = InMemoryAuditLog()
        self.keys = SqlKeyStore(engine=engine, key=b"k" * 32)
        self.store = SqlPrincipalStore(engine=engine)

    def gate(self, **kwargs: Any) -> PolicyGate:
        kwargs.setdefault("principals", [C1])
        return PolicyGate(
            audit=self.audit, clock=self.clock, keys=self.keys, store=self.store, **kwargs
        )

    async def key(self, principal: str = "c1", **kwargs: Any) -> str:
        kwargs.setdefault("expires_at", None)
        issued = await self.keys.create(principal, name="t", now=self.clock.now(), **kwargs)
        return issued.key


@pytest.fixture
async def world(tmp_path) -> AsyncIterator[World]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    try:
        await migrate(engine)
        yield World(engine)
    finally:
        await engine.dispose()


def request(user: str = "c1", key: str | None = None) -> AgentRequest:
    return AgentRequest(user_id=user, session_id="s", message="hi", run_id="run_k", api_key=key)


async def test_a_valid_key_authenticates_and_is_audited_without_the_key(world):
    key = await world.key()
    assert await world.gate().authenticate(request(key=key)) is C1
    [entry] = world.audit.entries
    assert (entry.action, entry.decision, entry.principal_id) == ("authenticate", "allow", "c1")
    assert entry.details == {"method": "api_key", "key_id": key.split("_")[1]}
    assert key not in str(world.audit.rows)


async def test_an_api_key_never_appears_in_the_requests_repr(world):
    key = await world.key()
    assert key not in repr(request(key=key))


@pytest.mark.parametrize(
    ("setup", "message", "user_message"),
    [
        ("revoked", "was revoked at", "has been revoked"),
        ("expired", "expired at", "has expired"),
        ("unknown", "not recognised", "could not be identified"),
        ("malformed", "malformed", "could not be identified"),
    ],
)
async def test_bad_keys_fail_clearly_and_are_audited(world, setup, message, user_message):
    key = await world.key(expires_at=world.clock.now() + timedelta(hours=1))
    if setup == "revoked":
        await world.keys.revoke(key.split("_")[1], now=world.clock.now())
    elif setup == "expired":
        world.clock.advance(3601)
    elif setup == "unknown":
        key = "bst_" + "a" * 12 + "_" + "b" * 43
    else:
        key = "let-me-in"
    with pytest.raises(NotAuthenticated, match=message) as caught:
        await world.gate().authenticate(request(key=key))
    assert user_message in caught.value.user_message
    [entry] = world.audit.entries
    assert (entry.action, entry.decision, entry.principal_id) == ("authenticate", "deny", None)
    assert message in entry.reason
    assert entry.details["user_id"] == "c1"
    assert "let-me-in" not in str(world.audit.rows)


async def test_a_key_acts_only_as_its_own_principal(world):
    key = await world.key("c1")
    with pytest.raises(NotAuthenticated, match="belongs to 'c1', but the request is made as 'c2'"):
        await world.gate(principals=[C1, Principal(id="c2")]).authenticate(request("c2", key))
    assert world.audit.entries[-1].decision == "deny"


async def test_a_key_whose_principal_is_gone_is_refused(world):
    key = await world.key("ghost")
    with pytest.raises(NotAuthenticated, match="'ghost', which is no longer a principal"):
        await world.gate().authenticate(request("ghost", key))


async def test_a_database_principal_is_found_by_key_and_by_id(world):
    svc = Principal(id="svc", scopes=frozenset({"refunds:write"}))
    await world.store.put(svc, now=world.clock.now())
    key = await world.key("svc")
    gate = world.gate()
    assert await gate.authenticate(request("svc", key)) == svc
    assert await gate.authenticate(request("svc")) == svc


async def test_an_app_principal_wins_over_a_database_row_of_the_same_id(world):
    await world.store.put(Principal(id="c1", scopes=frozenset({"*"})), now=world.clock.now())
    principal = await world.gate().authenticate(request("c1"))
    assert principal is C1
    assert not world.gate().may_use(principal, TOOL)


async def test_put_updates_a_stored_principal(world):
    await world.store.put(Principal(id="svc", scopes=frozenset({"a"})), now=world.clock.now())
    await world.store.put(Principal(id="svc", scopes=frozenset({"b"})), now=world.clock.now())
    assert (await world.store.get("svc")).scopes == {"b"}
    [(principal, kind)] = await world.store.list()
    assert (principal.id, kind) == ("svc", "service")


async def test_a_required_key_refuses_a_bare_user_id(world):
    gate = world.gate(require_api_key=True)
    with pytest.raises(NotAuthenticated, match="an API key is required"):
        await gate.authenticate(request("c1"))
    assert world.audit.entries[-1].details == {"user_id": "c1", "method": "none"}
    assert await gate.authenticate(request("c1", await world.key())) is C1


def test_requiring_keys_without_a_key_store_is_a_config_error():
    with pytest.raises(ConfigError, match="no key store"):
        PolicyGate(principals=[], audit=InMemoryAuditLog(), clock=FakeClock(), require_api_key=True)


async def test_a_gate_without_a_key_store_refuses_keyed_requests():
    audit = InMemoryAuditLog()
    gate = PolicyGate(principals=[C1], audit=audit, clock=FakeClock())
    with pytest.raises(NotAuthenticated, match="accepts no API keys"):
        await gate.authenticate(request(key="bst_" + "a" * 12 + "_" + "b" * 43))
    assert audit.entries[-1].decision == "deny"


async def test_a_policy_asking_for_approval_holds_the_call_and_says_why(world):
    async def above_cap(call: PolicyInput) -> Decision | None:
        return Decision.approval_required("refunds above 200.00 need a human approval")

    lead = Principal(id="lead", scopes=frozenset({"*"}))
    gate = world.gate(principals=[lead], policies={"refund": [above_cap]})
    decision = await gate.authorize(lead, TOOL, {"order_id": "A1"}, stage="plan", run_id="r")
    assert not decision.allowed
    assert decision.needs_approval
    assert "refunds above 200.00" in decision.reason
    [entry] = world.audit.entries
    assert entry.decision == "deny"
    assert entry.details["needs_approval"] is True


async def test_a_later_hard_denial_wins_over_an_approval(world):
    async def above_cap(call: PolicyInput) -> Decision | None:
        return Decision.approval_required("needs approval")

    async def never(call: PolicyInput) -> Decision | None:
        return Decision.deny("not this order")

    lead = Principal(id="lead", scopes=frozenset({"*"}))
    gate = world.gate(principals=[lead], policies={"refund": [above_cap, never]})
    decision = await gate.authorize(lead, TOOL, {"order_id": "A1"}, stage="execute", run_id="r")
    assert not decision.allowed
    assert not decision.needs_approval
    assert decision.reason == "not this order"


async def test_a_grant_allows_only_the_exact_call_it_was_given_for(world):
    async def above_cap(call: PolicyInput) -> Decision | None:
        return Decision.approval_required("needs approval")

    lead = Principal(id="lead", scopes=frozenset({"*"}))
    gate = world.gate(principals=[lead], policies={"refund": [above_cap]})
    args = {"order_id": "A1"}
    grant = Grant(
        approval_id="ap_1", tool_name=TOOL.name, args_hash=args_hash(args), approved_by="m"
    )
    allowed = await gate.authorize(lead, TOOL, args, stage="execute", run_id="r", grant=grant)
    assert allowed.allowed
    assert "approved by m" in allowed.reason
    assert world.audit.entries[-1].details["approval_id"] == "ap_1"
    other = await gate.authorize(
        lead, TOOL, {"order_id": "A2"}, stage="execute", run_id="r", grant=grant
    )
    assert not other.allowed
    assert not other.needs_approval
    assert "another call" in other.reason
    wrong_tool = Grant(
        approval_id="ap_1", tool_name="x", args_hash=args_hash(args), approved_by="m"
    )
    assert not (
        await gate.authorize(lead, TOOL, args, stage="execute", run_id="r", grant=wrong_tool)
    ).allowed


def test_a_decision_cannot_both_allow_and_need_approval():
    with pytest.raises(ValueError, match="does not allow"):
        Decision(allowed=True, needs_approval=True)


async def test_authorize_audits_args_through_the_gates_redactor(world):
    lead = Principal(id="lead", scopes=frozenset({"*"}))
    gate = world.gate(principals=[lead], redactor=Redactor(secret_fields=["order_id"]))
    await gate.authorize(lead, TOOL, {"order_id": "A1"}, stage="execute", run_id="r")
    assert world.audit.entries[0].details["args"] == {"order_id": REDACTED}
    assert verify(world.audit.rows, key=world.audit.key).ok
