"""Who may do what in the shop: the demo's principals and its argument-level policies.

Scopes say which tools a principal may use at all (a customer holds no ``refunds:write``, so the
planner is never shown `issue_refund`); these policies then look at one call's args, at plan time
and again before it runs:

* a customer may touch only their own orders; an order that does not exist is denied with the
  same words as another customer's, so that a customer cannot probe which order ids exist;
* staff (``support_lead``, ``agent``) may see any order;
* no single refund may exceed `REFUND_CAP` (a larger one will need a human approval, which a later
  issue adds; until then it is denied, the cap named in the reason).

A principal with none of these roles is denied every order: policies fail closed.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from pathlib import Path

from bastion.demo.support.data import connect, normalise_order_id, order_owner
from bastion.gate.interface import ArgPolicy, Decision, PolicyInput
from bastion.messages import Principal

#: The largest refund one call may issue.
REFUND_CAP = Decimal("200.00")

CUSTOMER_ROLE = "customer"
#: Roles that may see every customer's orders.
STAFF_ROLES = frozenset({"support_lead", "agent"})

_CUSTOMER_SCOPES = frozenset({"orders:read", "kb:read", "tickets:write"})


def _customer(customer_id: str, name: str) -> Principal:
    return Principal(
        id=customer_id,
        roles=frozenset({CUSTOMER_ROLE}),
        scopes=_CUSTOMER_SCOPES,
        display_name=name,
    )


#: The demo's callers: the four seeded customers and one support lead.
PRINCIPALS: tuple[Principal, ...] = (
    _customer("c1", "Alice Martin"),
    _customer("c2", "Bruno Keller"),
    _customer("c3", "Chiara Rossi"),
    _customer("c4", "Daniel Okafor"),
    Principal(
        id="lead",
        roles=frozenset({"support_lead"}),
        scopes=_CUSTOMER_SCOPES | {"refunds:write"},
        display_name="Support lead",
    ),
)


def make_policies(db_path: Path) -> dict[str, list[ArgPolicy]]:
    """The argument policies of the support tools, by tool name, reading orders from `db_path`."""
    own_orders = _own_orders_only(db_path)
    return {
        "lookup_order": [own_orders],
        "track_shipment": [own_orders],
        "issue_refund": [own_orders, refund_cap],
    }


def _own_orders_only(db_path: Path) -> ArgPolicy:
    async def own_orders_only(policy_input: PolicyInput) -> Decision | None:
        """Customers reach only their own orders; staff reach all; anyone else none."""
        principal = policy_input.principal
        order_id = policy_input.args.get("order_id")
        if not isinstance(order_id, str):
            # Missing or mistyped: the args schema rejects it with a better message.
            return None
        order_id = normalise_order_id(order_id)
        if principal.roles & STAFF_ROLES:
            return None
        if CUSTOMER_ROLE not in principal.roles:
            return Decision.deny(f"{principal.id} has no role that may access orders")
        owner = await asyncio.to_thread(_owner_of, db_path, order_id)
        if owner != principal.id:
            return Decision.deny(f"customer {principal.id} may not access order {order_id}")
        return None

    return own_orders_only


def _owner_of(db_path: Path, order_id: str) -> str | None:
    with connect(db_path) as conn:
        return order_owner(conn, order_id)


async def refund_cap(policy_input: PolicyInput) -> Decision | None:
    """Deny a refund above `REFUND_CAP`, or one whose amount is not a number."""
    raw = policy_input.args.get("amount")
    if raw is None:
        return None
    try:
        # str() first: a JSON float such as 20.1 must count as 20.1, not its binary neighbour.
        amount = Decimal(str(raw))
    except InvalidOperation:
        return Decision.deny(f"refund amount {raw!r} is not a number")
    if not amount.is_finite():
        return Decision.deny(f"refund amount {raw!r} is not a number")
    if amount > REFUND_CAP:
        return Decision.deny(
            f"refunds above {REFUND_CAP} need a human approval; {policy_input.principal.id} "
            f"asked for {amount}"
        )
    return None
