from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from bastion.demo.support.data import (
    SCHEMA_VERSION,
    SEED_ORDER_IDS,
    cents_to_decimal,
    connect,
    decimal_to_cents,
    ensure_database,
    normalise_order_id,
    order_owner,
    reset_database,
    write_transaction,
)
from bastion.errors import ConfigError

TABLES = ("customers", "orders", "order_items", "shipments", "refunds", "tickets")


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with connect(path) as conn:
        return {
            table: [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for table in TABLES
        }


def test_seed_is_identical_in_two_fresh_databases(tmp_path: Path) -> None:
    first = dump(ensure_database(tmp_path / "a.db"))
    second = dump(ensure_database(tmp_path / "b.db"))
    assert first == second
    assert [row[0] for row in first["customers"]] == ["c1", "c2", "c3", "c4"]
    assert [row[0] for row in first["orders"]] == list(SEED_ORDER_IDS)
    assert tuple(f"A100{n}" for n in range(1, 9)) == SEED_ORDER_IDS
    assert first["refunds"] == []
    assert first["tickets"] == []


def test_seed_spreads_orders_over_customers_and_statuses(db: Path) -> None:
    with connect(db) as conn:
        orders = {row["id"]: row for row in conn.execute("SELECT * FROM orders")}
        assert orders["A1001"]["status"] == "shipped"
        assert orders["A1001"]["customer_id"] == "c1"
        assert orders["A1002"]["status"] == "delivered"
        assert orders["A1002"]["customer_id"] == "c1"
        assert orders["A1003"]["customer_id"] == "c2"
        assert {row["status"] for row in orders.values()} == {
            "pending",
            "paid",
            "shipped",
            "delivered",
            "cancelled",
        }
        assert {row["customer_id"] for row in orders.values()} == {"c1", "c2", "c3", "c4"}
        # Timestamps are fixed, aware UTC strings: a re-seed never depends on today's date.
        assert all(row["placed_at"].endswith("+00:00") for row in orders.values())


def test_order_totals_are_the_sum_of_their_lines(db: Path) -> None:
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT o.id, o.total_cents, SUM(i.quantity * i.unit_price_cents) AS lines"
            " FROM orders o JOIN order_items i ON i.order_id = o.id GROUP BY o.id"
        ).fetchall()
    assert len(rows) == len(SEED_ORDER_IDS)
    assert all(row["total_cents"] == row["lines"] for row in rows)


def test_shipped_and_delivered_orders_have_a_shipment_and_others_none(db: Path) -> None:
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT o.status, s.order_id IS NOT NULL AS has_shipment FROM orders o"
            " LEFT JOIN shipments s ON s.order_id = o.id"
        ).fetchall()
    for row in rows:
        assert bool(row["has_shipment"]) == (row["status"] in ("shipped", "delivered"))


def test_ensure_keeps_existing_data(db: Path) -> None:
    with connect(db) as conn:
        conn.execute(
            "INSERT INTO tickets (customer_id, summary, priority, created_by, created_at,"
            " idempotency_key) VALUES ('c1', 'x', 'low', 'c1', '2026-01-01T00:00:00+00:00', 'k')"
        )
    assert ensure_database(db) == db
    assert len(dump(db)["tickets"]) == 1


def test_concurrent_ensure_seeds_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ensure_database(path), range(8)))
    assert results == [path] * 8
    assert len(dump(path)["orders"]) == len(SEED_ORDER_IDS)


def test_reset_drops_everything_written_since_the_seed(db: Path) -> None:
    fresh = dump(db)
    with connect(db) as conn:
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = 'A1001'")
    assert reset_database(db) == db
    assert dump(db) == fresh


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for" * 100)
    with pytest.raises(ConfigError, match="not a usable shop database"):
        ensure_database(path)


def test_a_database_of_another_schema_version_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="reset_database"):
        ensure_database(path)


def test_a_failed_seed_leaves_the_database_unseeded(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    with connect(path) as conn:
        # A table the schema wants to create already exists: the seed fails part way through.
        conn.execute("CREATE TABLE tickets (x INTEGER)")
    with pytest.raises(ConfigError):
        ensure_database(path)
    with connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "customers" not in names


def test_write_transaction_rolls_back_when_the_block_raises(db: Path) -> None:
    def delete_then_fail(conn: sqlite3.Connection) -> None:
        with write_transaction(conn):
            conn.execute("DELETE FROM order_items")
            raise RuntimeError("boom")

    with connect(db) as conn:
        with pytest.raises(RuntimeError, match="boom"):
            delete_then_fail(conn)
        assert conn.execute("SELECT COUNT(*) FROM order_items").fetchone()[0] > 0


def test_connect_closes_its_connection(db: Path) -> None:
    with connect(db) as conn:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_order_ids_are_normalised_and_owners_found(db: Path) -> None:
    assert normalise_order_id(" a1001 ") == "A1001"
    with connect(db) as conn:
        assert order_owner(conn, "a1003") == "c2"
        assert order_owner(conn, "A9999") is None


def test_money_converts_without_floats() -> None:
    assert cents_to_decimal(5990) == Decimal("59.90")
    assert str(cents_to_decimal(5)) == "0.05"
    assert decimal_to_cents(Decimal("59.9")) == 5990
    assert decimal_to_cents(Decimal("20")) == 2000
    with pytest.raises(ValueError, match="more than two decimal places"):
        decimal_to_cents(Decimal("1.005"))
    with pytest.raises(ValueError, match="not a number"):
        decimal_to_cents(Decimal("NaN"))
