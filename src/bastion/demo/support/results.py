"""What the support tools return: one pydantic model per result.

They stand apart from the tools because two sides read them: the runtime checks each tool's result
against its model (the tools' return annotations), and `answers` parses step results back into them
to word the reply. Amounts are strings with two decimals ("59.90"), as JSON carries them without
losing a cent; dates are ISO strings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderItem(_Result):
    """One line of an order."""

    sku: str
    name: str
    quantity: int
    unit_price: str


class OrderDetails(_Result):
    """An order as `lookup_order` shows it."""

    order_id: str
    customer_id: str
    status: Literal["pending", "paid", "shipped", "delivered", "cancelled"]
    items: list[OrderItem]
    total: str
    currency: str
    placed_on: str
    #: What was refunded on this order so far ("0.00" if nothing).
    refunded: str


class ShipmentStatus(_Result):
    """Where an order's parcel is; ``shipped`` is False (and the rest None) before it leaves."""

    order_id: str
    shipped: bool
    order_status: str
    carrier: str | None = None
    tracking_number: str | None = None
    status: Literal["in_transit", "out_for_delivery", "delivered"] | None = None
    last_location: str | None = None
    eta: str | None = None


class KbHit(_Result):
    """One help-centre article found by `search_kb`."""

    article_id: str
    title: str
    snippet: str


class RefundReceipt(_Result):
    """A refund that `issue_refund` recorded (or had recorded before, for the same step)."""

    refund_id: str
    order_id: str
    amount: str
    currency: str
    status: Literal["issued"]
    #: Where the money goes and how long it takes, from the refund-timelines article.
    arrives: str


class RefundQuote(_Result):
    """A pro-rata refund that `prorata_refund` worked out (in the os sandbox); nothing is paid."""

    order_id: str
    #: The returned items, by name.
    returned: list[str]
    #: What the customer paid for the whole order, and the returned items' share of it.
    paid: str
    share_percent: str
    refund: str
    currency: str


class TicketReceipt(_Result):
    """An escalation ticket that `escalate_to_human` opened (or had opened, for the same step)."""

    ticket_id: str
    priority: Literal["low", "normal", "high"]
    expected_response: str
    #: How the team will reach the customer, when the plan said (from what we remember of them).
    contact: Literal["email", "phone"] | None = None
