from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bastion.errors import ConfigError
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool, tool
from bastion.sandbox import capabilities


def lookup_order(order_id: int) -> dict[str, int]:
    """Look up an order."""
    return {"order_id": order_id}


def test_bare_decorator_returns_a_spec_with_defaults() -> None:
    @tool
    async def get_order(order_id: int) -> dict[str, int]:
        """Fetch one order."""
        return {"order_id": order_id}

    assert isinstance(get_order, ToolSpec)
    assert get_order.name == "get_order"
    assert get_order.description == "Fetch one order."
    assert get_order.is_async is True
    assert get_order.required_permissions == frozenset()
    assert get_order.timeout_s is None
    assert get_order.side_effects is False
    assert get_order.idempotent is False
    assert get_order.fallback is None
    assert get_order.cost_usd == Decimal(0)
    assert get_order.sandbox == "inline"
    assert get_order.tags == frozenset()


async def test_spec_fn_stays_the_original_callable() -> None:
    async def get_order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    spec = tool(get_order)

    assert spec.fn is get_order
    assert await spec.fn(order_id=2) == {"order_id": 2}


def test_decorator_with_every_option() -> None:
    @tool(
        name="refunds.issue",
        permissions=("refunds:write", "orders:read"),
        timeout_s=5,
        side_effects=True,
        idempotent=True,
        fallback="refunds.queue",
        cost_usd=Decimal("0.01"),
        sandbox="inline",
        tags=("money",),
    )
    def issue_refund(order_id: int) -> None:
        """Refund an order."""

    assert issue_refund.name == "refunds.issue"
    assert issue_refund.required_permissions == frozenset({"refunds:write", "orders:read"})
    assert issue_refund.timeout_s == 5.0
    assert isinstance(issue_refund.timeout_s, float)
    assert issue_refund.side_effects is True
    assert issue_refund.idempotent is True
    assert issue_refund.fallback == "refunds.queue"
    assert issue_refund.cost_usd == Decimal("0.01")
    assert issue_refund.tags == frozenset({"money"})
    assert issue_refund.is_async is False


def test_make_tool_takes_the_same_options() -> None:
    spec = make_tool(lookup_order, name="orders", cost_usd=2, permissions=["orders:read"])

    assert spec.name == "orders"
    assert spec.fn is lookup_order
    assert spec.cost_usd == Decimal(2)
    assert spec.required_permissions == frozenset({"orders:read"})
    assert make_tool(lookup_order, cost_usd="0.25").cost_usd == Decimal("0.25")


def test_idempotent_without_side_effects_is_allowed() -> None:
    assert make_tool(lookup_order, idempotent=True).idempotent is True


@pytest.mark.parametrize("name", ["a", "_x", "orders.get", "mcp.shop-get_1", "A" * 64])
def test_valid_names(name: str) -> None:
    assert make_tool(lookup_order, name=name).name == name


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a" * 65, "emoji✓", "-lead", ".lead"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid tool name .*use 1 to 64 letters"):
        make_tool(lookup_order, name=name)


def test_lambda_without_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot infer a tool name .*pass name="):
        make_tool(lambda: None)


def test_not_callable_or_already_a_tool() -> None:
    spec = make_tool(lookup_order)
    with pytest.raises(ConfigError, match="'lookup_order' is already a tool"):
        make_tool(spec)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a tool must be a callable, not int"):
        make_tool(3)  # type: ignore[arg-type]


def test_bare_tool_with_function_and_options_is_refused() -> None:
    loose: Any = tool
    with pytest.raises(ConfigError, match=r"pass options as @tool\(...\) keywords"):
        loose(lookup_order, name="x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_s": -1}, r"timeout_s must be positive and finite, got -1"),
        ({"timeout_s": 0}, r"timeout_s must be positive and finite"),
        ({"timeout_s": float("inf")}, r"timeout_s must be positive and finite"),
        ({"timeout_s": float("nan")}, r"timeout_s must be positive and finite"),
        ({"timeout_s": "5"}, r"timeout_s must be a number of seconds or None"),
        ({"timeout_s": True}, r"timeout_s must be a number of seconds or None"),
        ({"cost_usd": Decimal("-0.01")}, r"cost_usd must be zero or more, got -0.01"),
        ({"cost_usd": Decimal("NaN")}, r"cost_usd must be zero or more"),
        ({"cost_usd": 0.1}, r"cost_usd must be a Decimal, int or str, not 0.1 .*Decimal\('0.1'\)"),
        ({"cost_usd": "cheap"}, r"cost_usd 'cheap' is not a number"),
        ({"fallback": "lookup_order"}, r"names itself as its fallback"),
        ({"fallback": "bad name"}, r"invalid fallback of tool 'lookup_order'"),
        ({"permissions": "refunds:write"}, r"permissions must be a tuple of strings"),
        ({"permissions": ("ok", "")}, r"permissions must be non-empty strings, got \[''\]"),
        ({"tags": (1,)}, r"tags must be non-empty strings, got \[1\]"),
        ({"side_effects": "yes"}, r"side_effects must be True or False, got 'yes'"),
        ({"idempotent": 1}, r"idempotent must be True or False"),
        ({"sandbox": "docker"}, r"unknown sandbox tier 'docker'"),
    ],
)
def test_bad_options_name_the_tool(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make_tool(lookup_order, **options)
    assert "tool 'lookup_order'" in str(info.value)


@pytest.mark.parametrize("tier", ["process", "os"])
def test_a_tier_the_machine_lacks_is_refused_with_the_reasons(
    tier: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capabilities, "machine_capabilities", lambda: _NO_ISOLATION)
    with pytest.raises(
        ConfigError,
        match=rf"^tool 'lookup_order' asks for sandbox tier '{tier}', which this machine cannot "
        r"provide: no (pids cgroup|bubblewrap)\. Run 'bastion doctor'",
    ):
        tool(sandbox=tier)(lookup_order)


@pytest.mark.parametrize("tier", ["process", "os"])
def test_an_available_tier_is_declared(tier: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "machine_capabilities", lambda: _ALL_TIERS)

    assert make_tool(lookup_order, sandbox=tier).sandbox == tier


def test_an_isolated_tool_must_be_importable_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "machine_capabilities", lambda: _ALL_TIERS)

    def nested(order_id: str) -> str:
        return order_id

    with pytest.raises(ConfigError, match=r"cannot run in a child process: it is a lambda, a nes"):
        make_tool(nested, sandbox="process")


_NO_ISOLATION = capabilities.Capabilities(
    inline=capabilities.TierSupport(tier="inline", available=True),
    process=capabilities.TierSupport(tier="process", available=False, reasons=("no pids cgroup",)),
    os=capabilities.TierSupport(tier="os", available=False, reasons=("no bubblewrap",)),
)
_ALL_TIERS = capabilities.Capabilities(
    inline=capabilities.TierSupport(tier="inline", available=True),
    process=capabilities.TierSupport(tier="process", available=True),
    os=capabilities.TierSupport(tier="os", available=True),
)


def test_signature_errors_come_through_the_decorator() -> None:
    with pytest.raises(ConfigError, match=r"tool 'renamed', parameter 'a' has no type annotation"):

        @tool(name="renamed")
        def f(a) -> None:  # type: ignore[no-untyped-def]
            pass
