"""Retention: delete everything stored about one user, and sweep what is past its TTL.

`forget_user` does not keep its own list of tables: it reads the database's tables when it runs
and, in one transaction, deletes

* every row of every table that has a ``run_id`` column and names one of the user's runs (plans,
  steps, events, and whatever later tables key on a run), then
* every row of every table whose ``user_id`` or ``principal_id`` is the user (runs, session
  turns, facts, summaries, API keys, a stored principal, and later tables such as a cost ledger),

so a table added by a later migration is covered without touching this module, and the test that
introspects every table keeps it honest. Facts go through `bastion.memory.fts.delete_facts`, which
also squeezes their words out of SQLite's full-text index.

Kept on purpose (`RETAINED_TABLES`): the audit logs. Their entries are hash-chained (v2 keyed with
a MAC), so deleting or rewriting one breaks the proof that the log was not tampered with; they
record decisions (who, which tool, allowed or not), with secrets redacted, not conversations. An
operator who must erase those too rotates the audit log, which is a decision about the audit
trail, not about one user.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.memory.fts import delete_facts
from bastion.memory.interface import ForgetReport
from bastion.storage.engine import begin_write
from bastion.storage.tables import memory_facts, memory_summaries, runs, session_turns

#: Columns naming the user a row belongs to.
USER_COLUMNS = ("user_id", "principal_id")
#: Tables `forget_user` leaves as they are (see the module docstring for why).
RETAINED_TABLES = frozenset({"audit_log", "audit_entries"})
#: SQLite's own tables and the FTS5 index's shadow tables (kept in step by the facts' triggers).
_INTERNAL_PREFIXES = ("sqlite_", "memory_facts_fts")


async def forget_user(engine: AsyncEngine, user_id: str) -> ForgetReport:
    """Delete every row about `user_id` outside `RETAINED_TABLES`, in one transaction.

    Raises:
        ValueError: `user_id` is empty.
    """
    if not user_id.strip():
        raise ValueError("forget_user needs a user id")
    deleted: dict[str, int] = {}
    async with begin_write(engine) as connection:
        columns = await _columns(connection)
        their_runs = sa.select(runs.c.run_id).where(runs.c.user_id == user_id)
        for name, cols in sorted(columns.items()):
            if name in (runs.name, memory_facts.name) or "run_id" not in cols:
                continue
            table = sa.table(name, sa.column("run_id"))
            result = await connection.execute(
                sa.delete(table).where(table.c.run_id.in_(their_runs))
            )
            _count(deleted, name, result.rowcount)
        _count(
            deleted,
            memory_facts.name,
            await delete_facts(connection, memory_facts.c.user_id == user_id),
        )
        for name, cols in sorted(columns.items()):
            if name == memory_facts.name:
                continue
            for column in (c for c in USER_COLUMNS if c in cols):
                table = sa.table(name, sa.column(column))
                result = await connection.execute(
                    sa.delete(table).where(table.c[column] == user_id)
                )
                _count(deleted, name, result.rowcount)
    return ForgetReport(user_id=user_id, deleted=deleted)


async def purge_turns(connection: AsyncConnection, *, before: datetime) -> int:
    """Delete turns written at or before `before`, and summaries last updated by then."""
    turns = await connection.execute(sa.delete(session_turns).where(session_turns.c.at <= before))
    summaries = await connection.execute(
        sa.delete(memory_summaries).where(memory_summaries.c.updated_at <= before)
    )
    return int(turns.rowcount or 0) + int(summaries.rowcount or 0)


async def _columns(connection: AsyncConnection) -> dict[str, set[str]]:
    """Every user table of the database's default schema, with its column names."""

    def read(sync: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(sync)
        return {
            name: {column["name"] for column in inspector.get_columns(name)}
            for name in inspector.get_table_names()
            if name not in RETAINED_TABLES and not name.startswith(_INTERNAL_PREFIXES)
        }

    return await connection.run_sync(read)


def _count(deleted: dict[str, int], name: str, rowcount: int | None) -> None:
    if rowcount:
        deleted[name] = deleted.get(name, 0) + int(rowcount)
