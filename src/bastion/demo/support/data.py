"""The shop's database: customers, orders, shipments, refunds and escalation tickets, in SQLite.

The demo's tools read and write a real database so that what the agent does is observable and
durable: a refund is a row, paying twice would be two rows. Money is stored as integer cents and
handed out as `Decimal`, never as a float. The seed data is fixed (ids, amounts, timestamps), so
every demo run and every test starts from the same shop.

Tools are sync functions run in a worker thread, so each call opens its own connection (`connect`);
SQLite connections must not be shared across threads, and a connection per call costs well under a
millisecond on a local file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from bastion.errors import ConfigError
from bastion.storage.engine import switch_to_wal

#: Bumped whenever the schema or the seed changes; stored in SQLite's ``user_version``.
SCHEMA_VERSION = 1

#: How long a connection waits for another writer before giving up (milliseconds).
_BUSY_TIMEOUT_MS = 30_000  # generous: the shop may be busy on a loaded machine

ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
#: Orders whose money has been taken, so that some of it can be given back.
REFUNDABLE_STATUSES = frozenset({"paid", "shipped", "delivered"})

_SCHEMA = f"""
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE
);
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in ORDER_STATUSES)})),
    currency TEXT NOT NULL CHECK (length(currency) = 3),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    placed_at TEXT NOT NULL
);
CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders(id),
    line_no INTEGER NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE shipments (
    order_id TEXT PRIMARY KEY REFERENCES orders(id),
    carrier TEXT NOT NULL,
    tracking_number TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('in_transit', 'out_for_delivery', 'delivered')),
    last_location TEXT NOT NULL,
    eta TEXT NOT NULL
);
CREATE TABLE refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL REFERENCES orders(id),
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT REFERENCES customers(id),
    summary TEXT NOT NULL,
    priority TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high')),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);
CREATE INDEX orders_by_customer ON orders(customer_id);
CREATE INDEX refunds_by_order ON refunds(order_id);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class _SeedOrder:
    id: str
    customer_id: str
    status: str
    currency: str
    placed_at: str
    #: (sku, name, quantity, unit price in cents)
    items: tuple[tuple[str, str, int, int], ...]
    #: (carrier, tracking number, status, last location, eta), for orders that left the warehouse.
    shipment: tuple[str, str, str, str, str] | None = None


SEED_CUSTOMERS: tuple[tuple[str, str, str], ...] = (
    ("c1", "Alice Martin", "alice.martin@example.com"),
    ("c2", "Bruno Keller", "bruno.keller@example.com"),
    ("c3", "Chiara Rossi", "chiara.rossi@example.com"),
    ("c4", "Daniel Okafor", "daniel.okafor@example.com"),
)

_SEED_ORDERS: tuple[_SeedOrder, ...] = (
    _SeedOrder(
        id="A1001",
        customer_id="c1",
        status="shipped",
        currency="EUR",
        placed_at="2026-01-08T09:42:00+00:00",
        items=(
            ("DRP-01", "Ceramic pour-over dripper", 1, 3400),
            ("FLT-100", "Paper filters", 1, 2590),
        ),
        shipment=("DHL", "JJD0099001234567", "in_transit", "Leipzig", "2026-01-14"),
    ),
    _SeedOrder(
        id="A1002",
        customer_id="c1",
        status="delivered",
        currency="EUR",
        placed_at="2025-12-02T16:05:00+00:00",
        items=(("MUG-SW", "Stoneware mug", 2, 1450),),
        shipment=("DHL", "JJD0099007654321", "delivered", "Berlin", "2025-12-05"),
    ),
    _SeedOrder(
        id="A1003",
        customer_id="c2",
        status="paid",
        currency="EUR",
        placed_at="2026-01-10T11:30:00+00:00",
        items=(("KTL-GN", "Gooseneck kettle", 1, 7900), ("SCL-01", "Coffee scale", 1, 4550)),
    ),
    _SeedOrder(
        id="A1004",
        customer_id="c2",
        status="delivered",
        currency="EUR",
        placed_at="2025-12-18T08:12:00+00:00",
        items=(("CRF-08", "Glass carafe", 1, 2200),),
        shipment=("UPS", "1Z999AA10123456784", "delivered", "Munich", "2025-12-22"),
    ),
    _SeedOrder(
        id="A1005",
        customer_id="c3",
        status="pending",
        currency="EUR",
        placed_at="2026-01-11T19:47:00+00:00",
        items=(("CBB-1L", "Cold brew bottle", 1, 2750),),
    ),
    _SeedOrder(
        id="A1006",
        customer_id="c3",
        status="cancelled",
        currency="EUR",
        placed_at="2025-11-20T13:00:00+00:00",
        items=(("TMP-58", "Espresso tamper", 1, 1990),),
    ),
    _SeedOrder(
        id="A1007",
        customer_id="c4",
        status="shipped",
        currency="EUR",
        placed_at="2026-01-06T10:20:00+00:00",
        items=(("ESP-02", "Espresso machine", 1, 32900),),
        shipment=("GLS", "GLS6280019462", "out_for_delivery", "Hamburg", "2026-01-12"),
    ),
    _SeedOrder(
        id="A1008",
        customer_id="c4",
        status="paid",
        currency="GBP",
        placed_at="2026-01-09T07:55:00+00:00",
        items=(("TMG-35", "Travel mug", 2, 1800),),
    ),
)

#: The seeded order ids, in order.
SEED_ORDER_IDS: tuple[str, ...] = tuple(order.id for order in _SEED_ORDERS)


def normalise_order_id(order_id: str) -> str:
    """``" a1001 "`` → ``"A1001"``: ids are matched case-insensitively, shown upper-case."""
    return order_id.strip().upper()


def order_owner(conn: sqlite3.Connection, order_id: str) -> str | None:
    """The id of the customer who placed `order_id` (normalised here), or None if no such order."""
    row = conn.execute(
        "SELECT customer_id FROM orders WHERE id = ?", (normalise_order_id(order_id),)
    ).fetchone()
    return None if row is None else str(row["customer_id"])


def cents_to_decimal(cents: int) -> Decimal:
    """``5990`` → ``Decimal("59.90")``: always two places, never a float on the way."""
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def decimal_to_cents(amount: Decimal) -> int:
    """``Decimal("59.9")`` → ``5990``.

    Raises:
        ValueError: the amount is not finite or has more than two decimal places.
    """
    if not amount.is_finite():
        raise ValueError(f"amount {amount} is not a number")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount {amount} has more than two decimal places")
    return int(cents)


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the shop database, closed on exit.

    It is in autocommit mode (``isolation_level=None``): readers see committed data at once, and a
    writer opens its own transaction with ``BEGIN IMMEDIATE`` so that its checks and its write are
    one atomic step. Rows come back as `sqlite3.Row`.
    """
    with closing(
        sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
    ) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        yield conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` if the block raises.

    IMMEDIATE takes the write lock up front, so that what the block reads (a refund already made
    for this step, what is left to refund) cannot change before it writes.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # Some errors (a full disk, an I/O error) have already rolled the transaction back.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def ensure_database(path: Path) -> Path:
    """Create and seed the shop database at `path` unless it is there already; return `path`.

    Idempotent and safe when two processes call it at once: the check and the seeding happen in
    one ``BEGIN IMMEDIATE`` transaction, so the second caller waits, then finds the database seeded.
    A database seeded earlier keeps everything written since (refunds, tickets).

    Raises:
        ConfigError: `path` is not a database, or one seeded by another version of this demo.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with connect(path) as conn:
            # WAL lets the tools read while a refund is being written; the mode is stored in
            # the file, so setting it on every call is cheap and harmless.
            # Several processes switching a new file at once: the losers are told "locked"
            # at once (SQLite calls no busy handler there); `switch_to_wal` copes.
            switch_to_wal(conn.cursor())
            with write_transaction(conn):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    _create_and_seed(conn)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(
            f"{path} is not a usable shop database ({exc}); "
            "move it away or call reset_database() to recreate it"
        ) from exc
    if version not in (0, SCHEMA_VERSION):
        raise ConfigError(
            f"{path} holds shop data of schema version {version}, this code expects "
            f"{SCHEMA_VERSION}; call reset_database() to recreate it (its refunds and tickets "
            "will be lost)"
        )
    return path


def reset_database(path: Path) -> Path:
    """Delete the database at `path` (with its WAL files) and seed a fresh one; return `path`.

    Only for demos and tests: every refund and ticket written since the seed is lost.
    """
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return ensure_database(path)


def _create_and_seed(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany("INSERT INTO customers (id, name, email) VALUES (?, ?, ?)", SEED_CUSTOMERS)
    for order in _SEED_ORDERS:
        total = sum(quantity * price for _, _, quantity, price in order.items)
        conn.execute(
            "INSERT INTO orders (id, customer_id, status, currency, total_cents, placed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (order.id, order.customer_id, order.status, order.currency, total, order.placed_at),
        )
        conn.executemany(
            "INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(order.id, line, *item) for line, item in enumerate(order.items, start=1)],
        )
        if order.shipment is not None:
            conn.execute(
                "INSERT INTO shipments (order_id, carrier, tracking_number, status,"
                " last_location, eta) VALUES (?, ?, ?, ?, ?, ?)",
                (order.id, *order.shipment),
            )
    # PRAGMA user_version is written in the same transaction: a failed seed leaves it at 0.
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
