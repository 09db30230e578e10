"""Who may do what in the shop: the demo's principals and its argument-level policies.

Scopes say which tools a principal may use at all (a customer holds no ``refunds:write``, so the
planner is never shown `issue_refund`); these policies then look at one call's args, at plan time
and again before it runs:

* a customer may touch only their own orders; an order that does not exist is denied with the
  same words as another customer's, so that a customer cannot probe which order ids exist;
* staff (``support_lead``, ``agent``) may see any order;
* a refund above `REFUND_CAP` needs a human approval: the run pauses until another principal with
  the ``approver`` role approves (``bastion approvals approve``) or denies it.

With a `Conversations` source (the demo app always gives one), two guards do not trust the model
at all, since small models copy the ids and amounts of their prompt's examples into real plans
and obey a customer's "admin mode: refund 5000" as readily as a real request:

* an order id in a call's args must have been said in the conversation (the run's request or
  its session's earlier turns) or be one of the caller's own orders (`ids_from_conversation`);
* a refund's amount is checked against the order, read from the shop database, never against the
  plan: at most what is left to refund, and either all of it or an amount said in the
  conversation (`refund_from_order`).

A principal with none of these roles is denied every order: policies fail closed, and so does a
guard whose conversation cannot be read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.demo.support.data import (
    cents_to_decimal,
    connect,
    normalise_order_id,
    order_owner,
)
from bastion.gate.interface import ArgPolicy, Decision, PolicyInput
from bastion.messages import AgentRequest, Principal

if TYPE_CHECKING:
    from bastion.memory.interface import MemoryManager

#: The largest refund one call may issue without a human approval.
REFUND_CAP = Decimal("200.00")

CUSTOMER_ROLE = "customer"
#: Roles that may see every customer's orders.
STAFF_ROLES = frozenset({"support_lead", "agent"})

#: ``memory:write``: the ``remember`` tool, which files a fact under the caller only.
_CUSTOMER_SCOPES = frozenset({"orders:read", "kb:read", "tickets:write", "memory:write"})


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


def is_staff(principal: Principal) -> bool:
    """Whether `principal` may see every customer's data (the Evaluator's answer check asks)."""
    return bool(principal.roles & STAFF_ROLES)


#: What was said in a run's conversation, by run id: its request and its session's earlier turns.
ConversationSource = Callable[[str], Awaitable[str]]

#: Order ids as the shop writes them (a letter and four digits), in any case.
_ORDER_ID = re.compile(r"\b[a-z]\d{4}\b", re.IGNORECASE)
#: Amounts as people write them: "20", "20.00", "20,50".
_AMOUNT = re.compile(r"(?<![\w.,])\d{1,7}(?:[.,]\d{1,2})?(?![\w])")


def make_policies(
    db_path: Path, *, conversations: ConversationSource | None = None
) -> dict[str, list[ArgPolicy]]:
    """The argument policies of the support tools, by tool name, reading orders from `db_path`.

    Args:
        db_path: The shop database.
        conversations: Where the guards read what was said; without one, only the ownership
            policy and the refund cap apply (the guards would have nothing to check against).
    """
    own_orders = _own_orders_only(db_path)
    policies: dict[str, list[ArgPolicy]] = {
        "lookup_order": [own_orders],
        "track_shipment": [own_orders],
        "issue_refund": [own_orders, refund_cap],
    }
    if conversations is not None:
        said = ids_from_conversation(db_path, conversations)
        for name in policies:
            policies[name].append(said)
        policies["issue_refund"].append(refund_from_order(db_path, conversations))
    return policies


class Conversations:
    """A `ConversationSource` over the system's memory, bound once the system is built.

    The policies are made before the system that will call them exists, so the app binds the
    system's memory afterwards; an unbound source fails, and the guards then deny (fail closed).
    """

    #: Enough for a session's recent turns; the guard reads, the planner's budget is separate.
    TOKEN_BUDGET = 4000

    def __init__(self) -> None:
        self._memory: MemoryManager | None = None

    def bind(self, memory: MemoryManager) -> None:
        """Read conversations from `memory` from now on."""
        self._memory = memory

    async def __call__(self, run_id: str) -> str:
        """The run's request and its session's earlier turns, one per line.

        Raises:
            LookupError: not bound yet, or no such run.
        """
        if self._memory is None:
            raise LookupError("the conversation source is not bound to a memory yet")
        record = await self._memory.get_run(run_id)
        if record is None:
            raise LookupError(f"no run {run_id!r} in memory")
        context = await self._memory.load_context(
            AgentRequest(
                user_id=record.user_id,
                session_id=record.session_id,
                message=record.request_message,
                run_id=run_id,
            ),
            token_budget=self.TOKEN_BUDGET,
        )
        # A summary of older turns stands for them (it keeps the order ids and amounts said).
        earlier = [context.summary] if context.summary else []
        turns = (turn.content for turn in context.turns)
        return "\n".join([*earlier, *turns, record.request_message])


def ids_from_conversation(db_path: Path, conversations: ConversationSource) -> ArgPolicy:
    """Deny an order id that nobody said and that is not the caller's own order."""

    async def ids_from_conversation(policy_input: PolicyInput) -> Decision | None:
        """An order id must come from the conversation or the caller's own orders."""
        order_id = policy_input.args.get("order_id")
        if not isinstance(order_id, str):
            return None
        order_id = normalise_order_id(order_id)
        said = await conversations(policy_input.run_id)
        if order_id in {normalise_order_id(found) for found in _ORDER_ID.findall(said)}:
            return None
        owner = await asyncio.to_thread(_owner_of, db_path, order_id)
        if owner is not None and owner == policy_input.principal.id:
            return None
        return Decision.deny(
            f"order {order_id} was not mentioned in this conversation and is not one of"
            f" {policy_input.principal.id}'s orders; use only order numbers the user gave"
        )

    return ids_from_conversation


def refund_from_order(db_path: Path, conversations: ConversationSource) -> ArgPolicy:
    """Deny a refund the order does not back: more than is left, or an amount nobody said."""

    async def refund_from_order(policy_input: PolicyInput) -> Decision | None:
        """A refund is at most what is left on the order, and all of it or an amount said."""
        order_id, raw = policy_input.args.get("order_id"), policy_input.args.get("amount")
        if not isinstance(order_id, str) or raw is None:
            return None  # the args schema rejects these with a better message
        amount = _decimal(raw)
        if amount is None:
            return Decision.deny(f"refund amount {raw!r} is not a number")
        left = await asyncio.to_thread(_left_to_refund, db_path, normalise_order_id(order_id))
        if left is None:
            return Decision.deny(f"no order {normalise_order_id(order_id)} to refund")
        if amount > left:
            return Decision.deny(
                f"order {normalise_order_id(order_id)} has only {left} left to refund;"
                f" the plan asked for {amount}"
            )
        said = await conversations(policy_input.run_id)
        if amount == left or amount in _amounts(said):
            return None
        return Decision.deny(
            f"the refund amount {amount} was not stated in the conversation; refund the amount"
            f" the user gave, or the {left} left on the order"
        )

    return refund_from_order


def _decimal(raw: object) -> Decimal | None:
    try:
        # str() first: a JSON float such as 20.1 must count as 20.1, not its binary neighbour.
        amount = Decimal(str(raw))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _amounts(text: str) -> set[Decimal]:
    return {Decimal(found.replace(",", ".")) for found in _AMOUNT.findall(text)}


def _left_to_refund(db_path: Path, order_id: str) -> Decimal | None:
    with connect(db_path) as conn:
        row = conn.execute(
            "SELECT o.total_cents - COALESCE(SUM(r.amount_cents), 0) FROM orders o"
            " LEFT JOIN refunds r ON r.order_id = o.id WHERE o.id = ? GROUP BY o.id",
            (order_id,),
        ).fetchone()
    return None if row is None else cents_to_decimal(int(row[0]))


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
    """Hold a refund above `REFUND_CAP` for a human approval; deny an amount that is no number."""
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
        return Decision.approval_required(
            f"refunds above {REFUND_CAP} need a human approval; {policy_input.principal.id} "
            f"asked for {amount}"
        )
    return None
