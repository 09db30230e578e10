"""Storage shared by every store: the engine, the tables, the migrations, JSON encoding.

Stores (memory, audit log, ledger, approvals) take an `AsyncEngine` from `create_engine`, call
`migrate` once at start, and write SQLAlchemy Core statements against the tables in
`bastion.storage.tables`. SQLite (embedded, the default) and PostgreSQL are both first-class.

The hot paths of a run (its records, events, audit entries and ledger, and the reads of its
admission) are plain synchronous functions of one connection, run whole where they are cheapest:
`bastion.storage.writes.TransactionRunner` for writes (on SQLite one writer thread per database,
committing in groups), `bastion.storage.reads.ReadRunner` for reads that must agree, and their
most frequent statements are `bastion.storage.statements.Statement`s, which SQLite runs straight
on its cursor.
"""

from bastion.storage.engine import (
    begin_write,
    create_engine,
    insert_ignore,
    mask_url,
    normalize_url,
    upsert,
)
from bastion.storage.migrations import LATEST_VERSION, MIGRATIONS, current_version, migrate
from bastion.storage.tables import metadata

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "begin_write",
    "create_engine",
    "current_version",
    "insert_ignore",
    "mask_url",
    "metadata",
    "migrate",
    "normalize_url",
    "upsert",
]
