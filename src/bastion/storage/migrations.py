"""Bring a database's schema up to the version this Bastion knows: a tiny, linear migration runner.

Why not Alembic: Bastion has one linear schema, runs on async engines, and must migrate SQLite and
PostgreSQL alike at every start of the app, from code, with no ``alembic.ini``, ``env.py`` or
scripts directory shipped to users. For that, an ordered tuple of functions and a version table
are enough and can be read in one sitting. When the schema needs branching migrations,
autogeneration or downgrades, Alembic can take over: its first revision is the schema at the
version this runner last reached.

How it works: `MIGRATIONS[i]` takes the schema from version ``i`` to ``i + 1``; it is a function of
a (synchronous) SQLAlchemy connection, run inside a transaction with the ``bastion_schema_version``
row that records it, so a migration is applied whole or not at all. Each transaction first takes
the migration lock, then reads the version; a second process starting at the same time waits for
the lock and then finds the work done. The lock is ``pg_advisory_xact_lock`` on PostgreSQL (held
until the transaction ends) and SQLite's write lock (``BEGIN IMMEDIATE``) on SQLite.

Rule for later migrations: a migration's effect must never change. `_create_tables_v1` builds the
tables from `bastion.storage.tables` as they stand at v1; a later migration that alters a table
must first copy the v1 definition of that table here, so that v1 keeps creating what it always did.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.errors import ConfigError
from bastion.storage import tables
from bastion.storage.engine import begin_write

#: Takes the schema one version up, inside the caller's transaction.
Migration = Callable[[sa.Connection], None]

#: A fixed key for ``pg_advisory_xact_lock``: every Bastion process migrating one database uses it.
MIGRATION_LOCK_KEY = 0x62617374696F6E  # "bastion" in ASCII


def _create_tables_v1(connection: sa.Connection) -> None:
    tables.metadata.create_all(
        connection,
        tables=[
            tables.runs,
            tables.run_plans,
            tables.run_steps,
            tables.run_events,
            tables.session_turns,
            tables.audit_log,
        ],
    )


def _create_gate_tables_v2(connection: sa.Connection) -> None:
    # The Permissions Gate's keyed audit chain, API keys and stored principals. The v1
    # ``audit_log`` is left as it is: its entries were chained without a key, and re-keying them
    # here would vouch for entries nobody can check (the key is not in the database).
    tables.metadata.create_all(
        connection, tables=[tables.audit_entries, tables.api_keys, tables.principals]
    )


def _create_workers_table_v3(connection: sa.Connection) -> None:
    # Durable execution's worker registry: heartbeats, unique live executor ids, takeovers.
    tables.metadata.create_all(connection, tables=[tables.workers])


#: SQLite: the facts' full-text index, an FTS5 table over ``memory_facts.content`` (external
#: content: the text is stored once, in ``memory_facts``), kept in step by triggers. Porter stemming
#: so that "emails" finds "email", as PostgreSQL's ``english`` configuration does.
_SQLITE_FACTS_FTS = (
    "CREATE VIRTUAL TABLE memory_facts_fts USING fts5(content, content='memory_facts', "
    "content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER memory_facts_ai AFTER INSERT ON memory_facts BEGIN "
    "INSERT INTO memory_facts_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER memory_facts_ad AFTER DELETE ON memory_facts BEGIN "
    "INSERT INTO memory_facts_fts(memory_facts_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
)
#: PostgreSQL: a GIN index on the facts' ``english`` tsvector, the expression searches use.
_POSTGRES_FACTS_FTS = (
    "CREATE INDEX ix_memory_facts_tsv ON memory_facts USING gin (to_tsvector('english', content))",
)


def _create_memory_tables_v6(connection: sa.Connection) -> None:
    # Long-term facts with full-text search, session summaries, and the indexes retention needs
    # on the v1 session_turns (a per-user delete, a TTL sweep by age).
    tables.metadata.create_all(connection, tables=[tables.memory_facts, tables.memory_summaries])
    sqlite = connection.dialect.name == "sqlite"
    for statement in _SQLITE_FACTS_FTS if sqlite else _POSTGRES_FACTS_FTS:
        connection.exec_driver_sql(statement)
    connection.exec_driver_sql("CREATE INDEX ix_session_turns_user_id ON session_turns (user_id)")
    connection.exec_driver_sql("CREATE INDEX ix_session_turns_at ON session_turns (at)")


#: ``cost_reservations`` as v4 created it (v7 adds ``cached_input_tokens``), in a metadata of its
#: own with the same naming convention, so that v4 keeps creating what it always did.
_v4 = sa.MetaData(naming_convention=tables.metadata.naming_convention)
_cost_reservations_v4 = sa.Table(
    "cost_reservations",
    _v4,
    sa.Column("id", sa.String(300), primary_key=True),
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("session_id", sa.String(255), nullable=False),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_usd", tables.Money, nullable=False),
    sa.Column("cost_usd", tables.Money, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("counters", tables.Json, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", tables.UtcDateTime, nullable=False),
    sa.Column("expires_at", tables.UtcDateTime, nullable=False),
    sa.Column("closed_at", tables.UtcDateTime),
    sa.Index(None, "status", "expires_at"),
    sa.Index(None, "run_id"),
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "created_at"),
)


def _create_cost_tables_v4(connection: sa.Connection) -> None:
    # The Cost Controller's ledger (issue 7): budget counters per window, and reservations.
    tables.metadata.create_all(connection, tables=[tables.cost_counters])
    _v4.create_all(connection, tables=[_cost_reservations_v4])


def _create_approvals_table_v5(connection: sa.Connection) -> None:
    # Human approvals of risky calls (issue 6): slot v5, after the cost ledger's v4.
    tables.metadata.create_all(connection, tables=[tables.approvals])


def _add_cached_input_tokens_v7(connection: sa.Connection) -> None:
    # Cached-input prices (issue 7): the ledger records how much of a call's input the provider
    # served from its prompt cache, for `bastion usage`. Earlier rows had none cached.
    connection.exec_driver_sql(
        "ALTER TABLE cost_reservations ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0"
    )


def _create_durable_steps_v8(connection: sa.Connection) -> None:
    # Durable runs' step journal (issue 4): a step's checkpoint is one row in Bastion's database,
    # written with the run's own records, instead of DBOS's per-step system-database transactions.
    tables.metadata.create_all(connection, tables=[tables.durable_steps])


#: Every migration, in order: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[Migration, ...] = (
    _create_tables_v1,
    _create_gate_tables_v2,
    _create_workers_table_v3,
    _create_cost_tables_v4,
    _create_approvals_table_v5,  # v5 (slot reserved; v4 cost goes before it)
    _create_memory_tables_v6,  # v6 (slot reserved; v4 cost, v5 approvals go before it)
    _add_cached_input_tokens_v7,  # v7: the ledger's cached input tokens
    _create_durable_steps_v8,  # v8: durable runs' step journal
)

#: The schema version this Bastion writes and reads.
LATEST_VERSION = len(MIGRATIONS)


async def migrate(engine: AsyncEngine, *, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the migrations the database has not had yet; return the version it is now at.

    Safe to call at every start, and from several processes at once: at most one applies each
    migration, the others wait and then see it applied.

    Args:
        engine: the database to migrate.
        migrations: the migrations to apply; only tests pass anything but `MIGRATIONS`.

    Raises:
        ConfigError: the database is at a newer version than `migrations` reach (it was migrated
            by a newer Bastion, whose schema this one cannot be trusted to read or write).
    """
    # Most starts find the schema current: say so from a read, without queueing for the write
    # lock behind every process that is busy writing (SQLite has one writer at a time).
    async with engine.connect() as connection:
        version = await current_version(connection)
    if version == len(migrations):
        return version
    while True:
        async with begin_write(engine) as connection:
            await _lock(connection)
            await connection.run_sync(tables.schema_version.create, checkfirst=True)
            version = await current_version(connection)
            if version > len(migrations):
                raise ConfigError(
                    f"database schema v{version} is newer than this Bastion "
                    f"(v{len(migrations)}): upgrade Bastion"
                )
            if version == len(migrations):
                return version
            await connection.run_sync(migrations[version])
            await connection.execute(sa.insert(tables.schema_version).values(version=version + 1))


async def current_version(connection: AsyncConnection) -> int:
    """The highest migration applied to the database (0 for a database Bastion never migrated)."""
    if not await connection.run_sync(
        lambda sync: sa.inspect(sync).has_table(tables.schema_version.name)
    ):
        return 0
    found = await connection.scalar(sa.select(sa.func.max(tables.schema_version.c.version)))
    return int(found or 0)


async def _lock(connection: AsyncConnection) -> None:
    # SQLite needs nothing more: begin_write's BEGIN IMMEDIATE already holds the write lock.
    if connection.dialect.name == "postgresql":
        await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
