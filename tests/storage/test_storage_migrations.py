import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from bastion.errors import ConfigError
from bastion.storage import LATEST_VERSION, MIGRATIONS, begin_write, create_engine, migrate
from bastion.storage.migrations import MIGRATION_LOCK_KEY, Migration, current_version
from bastion.storage.tables import metadata, schema_version


async def _table_names(engine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def _versions(engine) -> list[int]:
    async with engine.connect() as connection:
        rows = await connection.scalars(sa.select(schema_version.c.version).order_by("version"))
        return list(rows)


def _recording(calls: list[str], name: str) -> Migration:
    def migration(connection: sa.Connection) -> None:
        calls.append(name)
        connection.execute(sa.text(f"CREATE TABLE {name} (x INTEGER)"))

    return migration


async def test_first_migration_creates_every_table_and_records_the_version(db_engine):
    assert await migrate(db_engine) == LATEST_VERSION == len(MIGRATIONS)
    names = await _table_names(db_engine)
    # SQLite's FTS5 index of the facts (v6) is a virtual table and its shadow tables, made by DDL.
    fts = {name for name in names if name.startswith("memory_facts_fts")}
    assert bool(fts) == (db_engine.dialect.name == "sqlite")
    assert names - fts == set(metadata.tables)
    assert await _versions(db_engine) == list(range(1, LATEST_VERSION + 1))
    async with db_engine.connect() as connection:
        applied_at = await connection.scalar(sa.select(sa.func.min(schema_version.c.applied_at)))
        assert await current_version(connection) == LATEST_VERSION
    assert applied_at is not None
    assert applied_at.tzinfo is not None


async def test_current_version_of_a_database_never_migrated_is_zero(db_engine):
    async with db_engine.connect() as connection:
        assert await current_version(connection) == 0


async def test_migrating_again_is_a_no_op_that_keeps_the_data(db_engine):
    await migrate(db_engine)
    turns = metadata.tables["session_turns"]
    async with db_engine.begin() as connection:
        await connection.execute(
            sa.insert(turns).values(
                session_id="s",
                user_id="u",
                role="user",
                content="hi",
                at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
    assert await migrate(db_engine) == LATEST_VERSION
    assert await _versions(db_engine) == list(range(1, LATEST_VERSION + 1))
    async with db_engine.connect() as connection:
        assert list(await connection.scalars(sa.select(turns.c.content))) == ["hi"]


async def test_migrations_run_once_each_in_order(db_engine):
    calls: list[str] = []
    first = (_recording(calls, "m_one"), _recording(calls, "m_two"))
    assert await migrate(db_engine, migrations=first) == 2
    assert await migrate(db_engine, migrations=first) == 2
    assert calls == ["m_one", "m_two"]
    assert await migrate(db_engine, migrations=(*first, _recording(calls, "m_three"))) == 3
    assert calls == ["m_one", "m_two", "m_three"]
    assert await _versions(db_engine) == [1, 2, 3]


async def test_a_failing_migration_leaves_nothing_behind(db_engine):
    def half_done(connection: sa.Connection) -> None:
        connection.execute(sa.text("CREATE TABLE m_half (x INTEGER)"))
        raise RuntimeError("migration 2 broke")

    calls: list[str] = []
    with pytest.raises(RuntimeError, match="migration 2 broke"):
        await migrate(db_engine, migrations=(_recording(calls, "m_one"), half_done))
    assert await _versions(db_engine) == [1]
    assert "m_half" not in await _table_names(db_engine)
    assert "m_one" in await _table_names(db_engine)


async def test_a_newer_schema_is_refused(db_engine):
    await migrate(db_engine)
    async with db_engine.begin() as connection:
        await connection.execute(sa.insert(schema_version).values(version=LATEST_VERSION + 1))
    with pytest.raises(ConfigError) as caught:
        await migrate(db_engine)
    assert str(caught.value) == (
        f"database schema v{LATEST_VERSION + 1} is newer than this Bastion "
        f"(v{LATEST_VERSION}): upgrade Bastion"
    )


async def test_two_engines_migrating_at_once_apply_each_migration_once(database_url):
    calls: list[str] = []
    migrations = (_recording(calls, "m_one"), _recording(calls, "m_two"))
    first, second = create_engine(database_url), create_engine(database_url)
    try:
        versions = await asyncio.gather(
            migrate(first, migrations=migrations), migrate(second, migrations=migrations)
        )
        assert list(versions) == [2, 2]
        assert sorted(calls) == ["m_one", "m_two"]
        assert await _versions(first) == [1, 2]
    finally:
        await first.dispose()
        await second.dispose()


_WAITING_FOR_ADVISORY_LOCK = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_migrate_waits_for_the_postgres_advisory_lock(database_url):
    holder, migrator = create_engine(database_url), create_engine(database_url)
    try:
        # The task group is left last: after the holder's transaction commits, releasing the lock.
        async with (
            asyncio.TaskGroup() as tasks,
            begin_write(holder) as held,
            holder.connect() as watcher,
        ):
            await held.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            migrating = tasks.create_task(migrate(migrator))
            waiting = 0
            for _ in range(1000):  # bounded: each round trip lets the migrator run
                waiting = await watcher.scalar(_WAITING_FOR_ADVISORY_LOCK)
                if waiting or migrating.done():
                    break
            assert waiting == 1
            assert not migrating.done()
            assert await current_version(held) == 0
        assert migrating.result() == LATEST_VERSION
    finally:
        await holder.dispose()
        await migrator.dispose()


async def test_v7_adds_cached_input_tokens_to_the_ledger_and_keeps_its_rows(db_engine):
    ledger = metadata.tables["cost_reservations"]
    at = datetime(2026, 11, 27, tzinfo=UTC)
    assert await migrate(db_engine, migrations=MIGRATIONS[:6]) == 6
    async with db_engine.begin() as connection:
        # A row written before v7 (the insert names no cached_input_tokens).
        await connection.execute(
            sa.insert(ledger).values(
                id="r:0",
                run_id="r",
                user_id="u",
                session_id="s",
                app="a",
                model="m",
                status="settled",
                amount_usd=0,
                cost_usd=0,
                input_tokens=10,
                output_tokens=5,
                counters=[],
                created_at=at,
                expires_at=at,
            )
        )
    assert await migrate(db_engine) == LATEST_VERSION
    async with db_engine.connect() as connection:
        row = (await connection.execute(sa.select(ledger))).one()
        columns = await connection.run_sync(
            lambda c: [col["name"] for col in sa.inspect(c).get_columns("cost_reservations")]
        )
    assert (row.input_tokens, row.cached_input_tokens) == (10, 0)
    assert columns == [c.name for c in ledger.c]  # as a fresh database has them, in order
