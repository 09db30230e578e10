"""Shared database fixtures: a test that takes `database_url` runs on SQLite and on PostgreSQL.

The PostgreSQL variant creates a fresh database for each test and drops it after, so tests never
see each other's rows, and tests of other packages can use the same server at the same time.
The server is ``BASTION_TEST_POSTGRES_URL`` (default: trust auth on localhost, database ``test``).
When it cannot be reached the PostgreSQL variants are skipped, saying why; set
``BASTION_REQUIRE_POSTGRES=1`` (as CI should) to make that a failure instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.errors import ConfigError
from bastion.storage import create_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_CONNECT_TIMEOUT_S = 10.0


@asynccontextmanager
async def _fresh_postgres_database() -> AsyncIterator[str]:
    try:
        admin = create_engine(POSTGRES_ADMIN_URL)
    except ConfigError as exc:  # asyncpg not installed
        _unavailable(f"cannot use PostgreSQL: {exc}")
    name = f"bastion_test_{uuid.uuid4().hex[:16]}"
    try:
        try:
            await asyncio.wait_for(_admin(admin, "SELECT 1"), _CONNECT_TIMEOUT_S)
        except Exception as exc:  # asyncpg raises its own errors on connect, not SQLAlchemy's
            _unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({exc!r})")
        await _admin(admin, f'CREATE DATABASE "{name}"')
        try:
            yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
        finally:
            await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


async def _admin(engine: AsyncEngine, sql: str) -> None:
    async with engine.connect() as connection:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.exec_driver_sql(sql)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("BASTION_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason}, and BASTION_REQUIRE_POSTGRES=1")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
        return
    async with _fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database (not migrated), disposed of after the test."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
