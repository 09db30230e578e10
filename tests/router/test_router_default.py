from __future__ import annotations

import pytest

from bastion.errors import ConfigError, UnknownTool
from bastion.router import RegistryRouter, ToolRouter, make_tool, tool


@tool
def get_order(order_id: int) -> dict[str, int]:
    """Fetch one order."""
    return {"order_id": order_id}


@tool(fallback="get_order")
def get_order_fast(order_id: int) -> dict[str, int]:
    """Fetch one order from the cache."""
    return {"order_id": order_id}


def list_orders(customer_id: int) -> list[int]:
    """List a customer's orders."""
    return []


def test_router_implements_the_protocol() -> None:
    router: ToolRouter = RegistryRouter()

    assert router.describe_all() == ()


def test_specs_and_plain_callables_in_registration_order() -> None:
    router = RegistryRouter([get_order_fast, list_orders, get_order])

    assert [s.name for s in router.describe_all()] == ["get_order_fast", "list_orders", "get_order"]
    assert router.get("get_order") is get_order
    assert router.get("list_orders").fn is list_orders
    assert "list_orders" in router
    assert "nope" not in router
    assert len(router) == 3


def test_register_a_callable_with_options() -> None:
    router = RegistryRouter()

    spec = router.register(list_orders, name="orders.list", permissions=("orders:read",))

    assert router.get("orders.list") is spec
    assert spec.required_permissions == frozenset({"orders:read"})


def test_register_a_spec_with_options_is_refused() -> None:
    router = RegistryRouter()

    with pytest.raises(
        ConfigError, match=r"'get_order' is already a ToolSpec; give options \['name'\]"
    ):
        router.register(get_order, name="other")


def test_duplicate_name_is_a_config_error() -> None:
    router = RegistryRouter([get_order])

    with pytest.raises(ConfigError, match="a tool named 'get_order' is already registered"):
        router.register(make_tool(list_orders, name="get_order"))
    assert router.get("get_order") is get_order


def test_unknown_tool_lists_known_tools_and_suggests() -> None:
    router = RegistryRouter([get_order, list_orders])

    with pytest.raises(UnknownTool) as info:
        router.get("get_ordr")

    assert str(info.value) == (
        "unknown tool 'get_ordr'; known tools: get_order, list_orders; did you mean 'get_order'?"
    )
    assert info.value.tool_name == "get_ordr"


def test_unknown_tool_without_a_close_match_or_any_tool() -> None:
    with pytest.raises(UnknownTool, match=r"^unknown tool 'x': no tools are registered$"):
        RegistryRouter().get("x")
    with pytest.raises(UnknownTool, match=r"known tools: get_order$"):
        RegistryRouter([get_order]).get("zzz")


def test_unknown_tool_message_truncates_many_names() -> None:
    router = RegistryRouter()
    for i in range(25):
        router.register(list_orders, name=f"tool_{i:02d}")

    with pytest.raises(UnknownTool) as info:
        router.get("missing")

    message = str(info.value)
    assert "tool_19" in message
    assert "tool_20" not in message
    assert "(and 5 more)" in message


def test_validate_refuses_a_dangling_fallback() -> None:
    router = RegistryRouter([get_order_fast])

    with pytest.raises(
        ConfigError,
        match=r"fallback names an unregistered tool: 'get_order_fast' -> 'get_order'; register",
    ):
        router.validate()


def test_fallback_registered_later_is_fine() -> None:
    router = RegistryRouter([get_order_fast])
    router.register(get_order)

    router.validate()

    assert router.get("get_order_fast").fallback == "get_order"


def test_lookups_validate_lazily() -> None:
    router = RegistryRouter([get_order_fast])

    with pytest.raises(ConfigError, match="fallback names an unregistered tool"):
        router.get("get_order_fast")
    with pytest.raises(ConfigError, match="fallback names an unregistered tool"):
        router.describe_all()


def test_registering_again_revalidates() -> None:
    router = RegistryRouter([get_order])
    router.validate()
    router.register(get_order_fast.fn, name="cached", fallback="missing")

    with pytest.raises(ConfigError, match="'cached' -> 'missing'"):
        router.describe_all()
