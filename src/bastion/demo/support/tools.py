"""The support agent's tools: orders, parcels, help articles, refunds, escalation, pro-rata sums.

Each is a plain sync function over the shop database (Bastion runs sync tools in a worker thread),
turned into a `ToolSpec` by `make_tool`; its docstring is what the model reads, so the ``Args:``
lines say what a good value looks like. Order ids are matched case-insensitively and shown
upper-case. A tool signals a bad request by raising (`LookupError` for an unknown order,
`ValueError` for an amount it refuses) with a message written for the planner.

The two tools with side effects record the step's idempotency key with what they write, in the
same transaction as their checks: a step run again (a retry, a resumed run) gets back the refund or
ticket it made the first time instead of paying or opening a ticket twice.

`prorata_refund` works out a refund over some of an order's items: their share of what the
customer paid. The arithmetic is a fixed program (`PRORATA_PROGRAM`) run with ``run_python`` on the
``os`` tier (`bastion.tools.PythonRunner`): exact ``Decimal`` arithmetic in a sandbox with no
network and no host files, fed with the order as the shop database has it. The model only picks
the tool and names the items; small models do that reliably and write arithmetic code poorly. The
tool needs the ``os`` tier; on a machine without it (``bastion doctor`` says why) the demo leaves
it out, with a warning, rather than failing to start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from bastion.clock import Clock, SystemClock
from bastion.demo.support import kb
from bastion.demo.support.data import (
    REFUNDABLE_STATUSES,
    cents_to_decimal,
    connect,
    decimal_to_cents,
    normalise_order_id,
    write_transaction,
)
from bastion.demo.support.results import (
    KbHit,
    OrderDetails,
    OrderItem,
    RefundQuote,
    RefundReceipt,
    ShipmentStatus,
    TicketReceipt,
)
from bastion.errors import ConfigError
from bastion.router.interface import ToolContext, ToolSpec
from bastion.router.registry import make_tool
from bastion.tools import PythonRunFailed, PythonRunner

logger = logging.getLogger(__name__)

#: Every tool is a few indexed queries on a local file; anything slower is stuck.
TOOL_TIMEOUT_S = 10.0

#: Where refunded money goes, as the refund-timelines help article says.
REFUND_ARRIVES = "back on the original payment method within 5 to 10 working days"

#: When the support team answers a ticket, by priority.
RESPONSE_TIMES: dict[str, str] = {
    "high": "within 2 working hours",
    "normal": "within 1 working day",
    "low": "within 3 working days",
}

_SNIPPET_CHARS = 160

Priority = Literal["low", "normal", "high"]
Contact = Literal["email", "phone"]
# Bounds keep a confused model from sending an essay where an id belongs (and bound decoding).
OrderId = Annotated[str, Field(min_length=1, max_length=20)]
Query = Annotated[str, Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]
Summary = Annotated[str, Field(min_length=1, max_length=1000)]
ItemName = Annotated[str, Field(min_length=1, max_length=100)]
ReturnedItems = Annotated[list[ItemName], Field(min_length=1, max_length=20)]

#: The pro-rata arithmetic, run with ``run_python`` in the os sandbox. It reads ``order.json``
#: (the order's lines, what was paid, which lines came back) from its workspace.
PRORATA_PROGRAM = """\
import json
from decimal import ROUND_HALF_UP, Decimal

with open("order.json") as handle:
    order = json.load(handle)
lines = {line["name"]: Decimal(line["amount"]) for line in order["lines"]}
paid = Decimal(order["paid"])
share = sum(lines[name] for name in order["returned"]) / sum(lines.values())
refund = (paid * share).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
result = {"refund": str(refund), "share_percent": str((share * 100).quantize(Decimal("0.01")))}
"""


def make_tools(db_path: Path, *, clock: Clock | None = None) -> list[ToolSpec]:
    """The support tools, working on the shop database at `db_path`, and ``run_python``.

    Args:
        db_path: A database made by `ensure_database`.
        clock: Stamps refunds and tickets (the system clock if None).
    """
    tools = _SupportTools(db_path, clock or SystemClock())
    read = ("orders:read",)
    return [*_shop_tools(tools, read), *make_prorata_tools(db_path)]


def make_prorata_tools(db_path: Path) -> list[ToolSpec]:
    """`prorata_refund` for whoever may issue refunds; none when this machine lacks the os tier."""
    try:
        runner = PythonRunner()
    except ConfigError as exc:
        logger.warning("the support demo runs without prorata_refund: %s", exc)
        return []
    quotes = _ProrataRefunds(db_path, runner)
    return [
        make_tool(quotes.prorata_refund, permissions=("refunds:write",), timeout_s=TOOL_TIMEOUT_S)
    ]


def _shop_tools(tools: _SupportTools, read: tuple[str, ...]) -> list[ToolSpec]:
    return [
        make_tool(tools.lookup_order, permissions=read, timeout_s=TOOL_TIMEOUT_S),
        make_tool(tools.track_shipment, permissions=read, timeout_s=TOOL_TIMEOUT_S),
        make_tool(tools.search_kb, permissions=("kb:read",), timeout_s=TOOL_TIMEOUT_S),
        make_tool(
            tools.issue_refund,
            permissions=("refunds:write",),
            timeout_s=TOOL_TIMEOUT_S,
            side_effects=True,
            idempotent=True,
        ),
        make_tool(
            tools.escalate_to_human,
            permissions=("tickets:write",),
            timeout_s=TOOL_TIMEOUT_S,
            side_effects=True,
            idempotent=True,
        ),
    ]


class _SupportTools:
    """The tools as bound methods, sharing the database path and the clock."""

    def __init__(self, db_path: Path, clock: Clock) -> None:
        self._db = db_path
        self._clock = clock

    def lookup_order(self, order_id: OrderId) -> OrderDetails:
        """Look up an order: its status, items, total, the date it was placed and its customer.

        Args:
            order_id: The order number, e.g. "A1001".
        """
        with connect(self._db) as conn:
            order = _order_row(conn, order_id)
            items = conn.execute(
                "SELECT sku, name, quantity, unit_price_cents FROM order_items"
                " WHERE order_id = ? ORDER BY line_no",
                (order["id"],),
            ).fetchall()
            refunded = _refunded_cents(conn, order["id"])
        return OrderDetails(
            order_id=order["id"],
            customer_id=order["customer_id"],
            status=order["status"],
            items=[
                OrderItem(
                    sku=item["sku"],
                    name=item["name"],
                    quantity=item["quantity"],
                    unit_price=str(cents_to_decimal(item["unit_price_cents"])),
                )
                for item in items
            ],
            total=str(cents_to_decimal(order["total_cents"])),
            currency=order["currency"],
            placed_on=order["placed_at"][:10],
            refunded=str(cents_to_decimal(refunded)),
        )

    def track_shipment(self, order_id: OrderId) -> ShipmentStatus:
        """Track an order's parcel: carrier, tracking number, last location, expected delivery.

        An order that has not shipped yet is not an error: the result says so (``shipped`` false).

        Args:
            order_id: The order number, e.g. "A1001".
        """
        with connect(self._db) as conn:
            order = _order_row(conn, order_id)
            shipment = conn.execute(
                "SELECT carrier, tracking_number, status, last_location, eta FROM shipments"
                " WHERE order_id = ?",
                (order["id"],),
            ).fetchone()
        if shipment is None:
            return ShipmentStatus(order_id=order["id"], shipped=False, order_status=order["status"])
        return ShipmentStatus(
            order_id=order["id"],
            shipped=True,
            order_status=order["status"],
            carrier=shipment["carrier"],
            tracking_number=shipment["tracking_number"],
            status=shipment["status"],
            last_location=shipment["last_location"],
            eta=shipment["eta"],
        )

    def search_kb(self, query: Query) -> list[KbHit]:
        """Search the help centre's articles for how-to and policy answers; best matches first.

        The articles cover passwords, shipping, returns, refunds, damaged items, addresses,
        cancelling, payment, international shipping, warranty, gift cards and contacting support.

        Args:
            query: A few keywords about the customer's question, e.g. "reset password".
        """
        return [
            KbHit(article_id=article.id, title=article.title, snippet=_snippet(article.body))
            for article in kb.search(query, limit=3)
        ]

    def issue_refund(
        self, order_id: OrderId, amount: Decimal, reason: Reason, ctx: ToolContext
    ) -> RefundReceipt:
        """Refund part or all of a paid, shipped or delivered order to its original payment method.

        Args:
            order_id: The order number, e.g. "A1001".
            amount: How much to give back, in the order's currency, as a decimal string such as
                "20.00"; at most the order's total minus earlier refunds.
            reason: Why the money is given back, in one short sentence.
            ctx: Supplied by the runtime: who is acting, and the step's idempotency key.
        """
        order_id = normalise_order_id(order_id)
        cents = _refund_cents(amount)
        if not reason.strip():
            raise ValueError("A refund needs a reason; say in one sentence why it is given.")
        with connect(self._db) as conn, write_transaction(conn):
            earlier = _refund_for_key(conn, ctx.idempotency_key)
            if earlier is not None:
                return _replayed_refund(earlier, order_id, cents)
            order = _order_row(conn, order_id)
            _check_refundable(conn, order, cents)
            cursor = conn.execute(
                "INSERT INTO refunds (order_id, amount_cents, reason, created_by, created_at,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    order_id,
                    cents,
                    reason.strip(),
                    ctx.principal.id,
                    self._clock.now().isoformat(),
                    ctx.idempotency_key,
                ),
            )
            refund_id = cursor.lastrowid
        assert refund_id is not None  # an INSERT into a rowid table always sets it
        return _receipt(refund_id, order_id, cents, order["currency"])

    def escalate_to_human(
        self,
        summary: Summary,
        ctx: ToolContext,
        priority: Priority = "normal",
        contact: Contact | None = None,
    ) -> TicketReceipt:
        """Hand the conversation to a person on the support team by opening a ticket.

        Args:
            summary: What the customer needs, in one or two sentences a colleague can act on.
            priority: "high" for damaged goods, money taken wrongly or anything urgent; "low" for
                general questions; otherwise "normal".
            contact: How the customer wants to be reached, only if we know it (from what we
                know about them): "email" or "phone".
            ctx: Supplied by the runtime: who is acting, and the step's idempotency key.
        """
        if not summary.strip():
            raise ValueError("An escalation needs a summary of what the customer needs.")
        with connect(self._db) as conn, write_transaction(conn):
            earlier = conn.execute(
                "SELECT id, priority FROM tickets WHERE idempotency_key = ?",
                (ctx.idempotency_key,),
            ).fetchone()
            if earlier is not None:
                return _ticket(earlier["id"], earlier["priority"], contact)
            # Staff escalate on nobody's behalf; a customer's ticket is filed under them.
            customer = conn.execute(
                "SELECT id FROM customers WHERE id = ?", (ctx.principal.id,)
            ).fetchone()
            cursor = conn.execute(
                "INSERT INTO tickets (customer_id, summary, priority, created_by, created_at,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    None if customer is None else customer["id"],
                    summary.strip() + (f" [contact by {contact}]" if contact else ""),
                    priority,
                    ctx.principal.id,
                    self._clock.now().isoformat(),
                    ctx.idempotency_key,
                ),
            )
            ticket_id = cursor.lastrowid
        assert ticket_id is not None  # an INSERT into a rowid table always sets it
        return _ticket(ticket_id, priority, contact)


def _order_row(conn: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    order_id = normalise_order_id(order_id)
    row: sqlite3.Row | None = conn.execute(
        "SELECT id, customer_id, status, currency, total_cents, placed_at FROM orders WHERE id = ?",
        (order_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"No order {order_id} was found.")
    return row


def _refunded_cents(conn: sqlite3.Connection, order_id: str) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(amount_cents), 0) FROM refunds WHERE order_id = ?", (order_id,)
    ).fetchone()
    return int(row[0])


def _refund_cents(amount: Decimal) -> int:
    cents = decimal_to_cents(amount)
    if cents <= 0:
        raise ValueError(f"A refund must be more than 0.00; {amount} was asked for.")
    return cents


def _refund_for_key(conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT r.id, r.order_id, r.amount_cents, o.currency FROM refunds r"
        " JOIN orders o ON o.id = r.order_id WHERE r.idempotency_key = ?",
        (key,),
    ).fetchone()
    return row


def _replayed_refund(earlier: sqlite3.Row, order_id: str, cents: int) -> RefundReceipt:
    if earlier["order_id"] != order_id or earlier["amount_cents"] != cents:
        # Same step, different args: a bug upstream. Paying again would be the worse mistake.
        raise ValueError(
            f"This step already refunded {cents_to_decimal(earlier['amount_cents'])} on order "
            f"{earlier['order_id']} (refund {_refund_id(earlier['id'])}); a different refund "
            "must be a new step."
        )
    return _receipt(
        earlier["id"], earlier["order_id"], earlier["amount_cents"], earlier["currency"]
    )


def _check_refundable(conn: sqlite3.Connection, order: sqlite3.Row, cents: int) -> None:
    if order["status"] not in REFUNDABLE_STATUSES:
        raise ValueError(
            f"Order {order['id']} is {order['status']}: only paid, shipped or delivered orders "
            "can be refunded."
        )
    left = order["total_cents"] - _refunded_cents(conn, order["id"])
    if cents > left:
        raise ValueError(
            f"Cannot refund {cents_to_decimal(cents)} {order['currency']} on order {order['id']}: "
            f"only {cents_to_decimal(left)} of its {cents_to_decimal(order['total_cents'])} "
            "total is left to refund."
        )


def _refund_id(rowid: int) -> str:
    return f"R-{rowid:05d}"


def _receipt(rowid: int, order_id: str, cents: int, currency: str) -> RefundReceipt:
    return RefundReceipt(
        refund_id=_refund_id(rowid),
        order_id=order_id,
        amount=str(cents_to_decimal(cents)),
        currency=currency,
        status="issued",
        arrives=REFUND_ARRIVES,
    )


def _ticket(rowid: int, priority: Priority, contact: Contact | None = None) -> TicketReceipt:
    return TicketReceipt(
        ticket_id=f"T-{rowid:05d}",
        priority=priority,
        expected_response=RESPONSE_TIMES[priority],
        contact=contact,
    )


def _snippet(body: str) -> str:
    """The body's first sentence, cut at a word boundary if it is long."""
    sentence = body.split(". ", 1)[0].rstrip(".") + "."
    if len(sentence) <= _SNIPPET_CHARS:
        return sentence
    return sentence[:_SNIPPET_CHARS].rsplit(" ", 1)[0] + "…"


class _ProrataRefunds:
    """`prorata_refund`, reading orders from the database and computing in the os sandbox."""

    def __init__(self, db_path: Path, runner: PythonRunner) -> None:
        self._db = db_path
        self._runner = runner

    async def prorata_refund(
        self, order_id: OrderId, returned: ReturnedItems, paid: Decimal
    ) -> RefundQuote:
        """Work out a refund pro rata: the returned items' share of what was paid for the order.

        For items sent back from an order paid with a voucher or a discount. It only computes:
        issue_refund pays.

        Args:
            order_id: The order number, e.g. "A1003".
            returned: The names (or SKUs) of the items sent back, e.g. ["Coffee scale"].
            paid: What the customer paid for the whole order, after vouchers, e.g. "112.05".
        """
        order, lines = await asyncio.to_thread(self._order_lines, order_id)
        names = [_match_item(lines, wanted) for wanted in returned]
        cents = decimal_to_cents(paid)
        if not 0 < cents <= order["total_cents"]:
            raise ValueError(
                f"Order {order['id']} totals {cents_to_decimal(order['total_cents'])}; what was "
                f"paid must be more than 0.00 and at most that, not {paid}."
            )
        data = {
            "lines": [{"name": row["name"], "amount": str(_line_amount(row))} for row in lines],
            "paid": str(cents_to_decimal(cents)),
            "returned": sorted(set(names)),
        }
        try:
            ran = await self._runner.run(PRORATA_PROGRAM, files={"order.json": json.dumps(data)})
        except PythonRunFailed as exc:
            raise RuntimeError(f"The refund could not be worked out: {exc}") from exc
        result = ran["result"]
        return RefundQuote(
            order_id=order["id"],
            returned=data["returned"],
            paid=data["paid"],
            share_percent=result["share_percent"],
            refund=result["refund"],
            currency=order["currency"],
        )

    def _order_lines(self, order_id: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
        with connect(self._db) as conn:
            order = _order_row(conn, order_id)
            lines = conn.execute(
                "SELECT sku, name, quantity, unit_price_cents FROM order_items"
                " WHERE order_id = ? ORDER BY line_no",
                (order["id"],),
            ).fetchall()
        return order, lines


def _line_amount(row: sqlite3.Row) -> Decimal:
    return cents_to_decimal(row["quantity"] * row["unit_price_cents"])


def _match_item(lines: list[sqlite3.Row], wanted: str) -> str:
    """The name of the order line called `wanted` (by name or SKU, any case)."""
    key = wanted.strip().casefold()
    for row in lines:
        if key in (row["name"].casefold(), row["sku"].casefold()):
            return str(row["name"])
    names = ", ".join(row["name"] for row in lines)
    raise LookupError(f"The order has no item {wanted!r}; its items are: {names}.")
