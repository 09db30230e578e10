"""An app whose tools fail in every way, for end-to-end CLI tests (loaded with --app)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bastion import AgentSystem, Principal, tool
from bastion.gate.interface import Decision, PolicyInput
from bastion.settings import Settings


@tool(permissions=("basic",))
def explode() -> str:
    """Always raises."""
    raise RuntimeError("kaboom")


@tool(permissions=("basic",), timeout_s=0.05)
async def stall() -> str:
    """Never answers."""
    await asyncio.Event().wait()
    return "never"


@tool(permissions=("basic",))
def lookup(order_id: str) -> dict[str, str]:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "status": "shipped"}


@tool(permissions=("admin",), side_effects=True, idempotent=True)
def wipe(order_id: str) -> str:
    """Admin only."""
    return "wiped"


async def own_orders(call: PolicyInput) -> Decision | None:
    if call.args.get("order_id") != "A1":
        return Decision.deny(f"{call.principal.id} may not access order {call.args['order_id']}")
    return None


def build(settings: Settings) -> AgentSystem:
    fast = settings.model_copy(
        update={
            "recovery": settings.recovery.model_copy(
                update={"base_delay_s": 0.001, "max_delay_s": 0.002}
            ),
            # Small breaker windows, so that a tool failing every call opens its breaker in one
            # run (the defaults need ten calls); a smaller window from the environment wins.
            "breaker": settings.breaker.model_copy(
                update={
                    "window_size": min(settings.breaker.window_size, 5),
                    "minimum_calls": min(settings.breaker.minimum_calls, 5),
                }
            ),
        }
    )
    return AgentSystem.from_settings(
        fast,
        tools=[explode, stall, lookup, wipe],
        principals=[Principal(id="u1", scopes=frozenset({"basic"}))],
        policies={"lookup": [own_orders]},
        default_model="scripted:none",
    )


__all__ = ["Decimal", "build"]
