"""A small app on a scripted model for the HTTP tests (``--app scripted_app:build``).

"lookup A1" plans one lookup; "hold" plans a tool that waits until cancelled; anything else plans
nothing and is answered at once.
"""

from __future__ import annotations

import asyncio
import json
import random

from bastion import AgentSystem, Principal, tool
from bastion.gate.interface import Decision, PolicyInput
from bastion.models.scripted import ScriptedModel
from bastion.settings import Settings

ALICE = Principal(id="alice", roles=frozenset({"customer"}), scopes=frozenset({"basic"}))
BOB = Principal(id="bob", roles=frozenset({"customer"}), scopes=frozenset({"basic"}))
ADMIN = Principal(id="admin", roles=frozenset({"admin", "approver"}), scopes=frozenset({"*"}))


@tool(permissions=("basic",))
def lookup(order_id: str) -> dict[str, str]:
    """Look up an order.

    Args:
        order_id: The order id.
    """
    return {"order_id": order_id, "status": "shipped"}


@tool(permissions=("basic",), timeout_s=60)
async def hold(label: str) -> str:
    """Wait until cancelled.

    Args:
        label: Any text.
    """
    await asyncio.Event().wait()
    return label


@tool(permissions=("basic",), side_effects=True, idempotent=True)
def refund(amount: int) -> dict[str, int]:
    """Refund an amount.

    Args:
        amount: In whole units.
    """
    return {"refunded": amount}


async def big_refunds_need_approval(policy: PolicyInput) -> Decision | None:
    amount = policy.args.get("amount")
    if isinstance(amount, int) and amount > 100:
        return Decision.approval_required(f"refund of {amount} is above 100")
    return None


def _plan(*steps: tuple[str, dict[str, object]]) -> str:
    return json.dumps(
        {
            "reasoning": "scripted",
            "steps": [
                {"description": f"call {name}", "tool_name": name, "tool_args": args}
                for name, args in steps
            ],
        }
    )


def model() -> ScriptedModel:
    return ScriptedModel.matching(
        [
            (r"lookup A1", _plan(("lookup", {"order_id": "A1"}))),
            (r"hold", _plan(("hold", {"label": "x"}))),
            (r"refund big", _plan(("refund", {"amount": 500}))),
            (r".", _plan()),
        ],
        name="scripted:http",
    )


def build(settings: Settings) -> AgentSystem:
    return AgentSystem.from_settings(
        settings,
        tools=[lookup, hold, refund],
        policies={"refund": [big_refunds_need_approval]},
        principals=[ALICE, BOB, ADMIN],
        model=model(),
        rng=random.Random(7),
    )


def build_quiet(settings: Settings) -> AgentSystem:
    """The same app on a model that plans nothing: every run ends at once (fuzzing)."""
    return AgentSystem.from_settings(
        settings,
        tools=[lookup, hold, refund],
        principals=[ALICE, BOB, ADMIN],
        model=ScriptedModel.matching([(r"(?s).*", _plan())], name="scripted:quiet"),
        rng=random.Random(7),
    )
