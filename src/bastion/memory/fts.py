"""`SqlFacts`: long-term facts in the SQL store, searched by each backend's own full-text engine.

* SQLite: the FTS5 table ``memory_facts_fts`` (made by migration 6, kept in step by triggers),
  queried with the terms OR-ed and ranked by FTS5's ``bm25()`` (lower is better, so the score
  returned is its negation).
* PostgreSQL: ``to_tsvector('english', content) @@ to_tsquery('english', 't1 | t2 ...')``, served
  by the GIN expression index of migration 6, ranked by ``ts_rank``.

Either way the ranked rows are filtered on the user's id in the same statement (never by fetching
and dropping), and expired facts are filtered out by comparing ``expires_at`` with the injected
clock's now, so expiry holds between two purges.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.clock import Clock
from bastion.memory.facts import Fact, FactSource, FactStore, check_fact, query_terms
from bastion.storage.engine import begin_write
from bastion.storage.reads import ReadRunner
from bastion.storage.tables import memory_facts

_F = memory_facts.c


class SqlFacts(FactStore):
    """Facts in ``memory_facts``, searched with FTS5 (SQLite) or tsvector (PostgreSQL).

    Args:
        engine: a database migrated to v6 or later (the Memory Manager's `start` does it).
        clock: stamps facts and decides what has expired.
        ttl_s: how long a new fact is kept; None keeps it until deleted.
        reads: runs the searches (one hand-off each on SQLite); its own if None.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        ttl_s: float | None = None,
        reads: ReadRunner | None = None,
    ) -> None:
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None, got {ttl_s}")
        self._engine = engine
        self._clock = clock
        self._ttl_s = ttl_s
        self._reads = reads or ReadRunner(engine)

    async def aclose(self) -> None:
        """Close the connections the searches keep (see `ReadRunner`). Safe to repeat."""
        await self._reads.aclose()

    async def remember(
        self,
        user_id: str,
        content: str,
        *,
        source: FactSource = "app",
        source_key: str | None = None,
        run_id: str | None = None,
    ) -> Fact:
        text = check_fact(user_id, content)
        now = self._clock.now()
        expires = None if self._ttl_s is None else now + timedelta(seconds=self._ttl_s)
        async with begin_write(self._engine) as connection:
            if source_key is not None:
                row = (
                    await connection.execute(
                        sa.select(memory_facts).where(
                            _F.user_id == user_id, _F.source_key == source_key
                        )
                    )
                ).one_or_none()
                if row is not None:
                    return _fact(row)
            fact_id = await connection.scalar(
                sa.insert(memory_facts)
                .values(
                    user_id=user_id,
                    content=text,
                    source=source,
                    source_key=source_key,
                    run_id=run_id,
                    created_at=now,
                    expires_at=expires,
                )
                .returning(_F.id)
            )
        assert fact_id is not None  # RETURNING of an INSERT always yields the row
        return Fact(
            fact_id=int(fact_id),
            user_id=user_id,
            content=text,
            source=source,
            created_at=now,
            expires_at=expires,
        )

    async def search(self, user_id: str, query: str, *, limit: int = 5) -> list[Fact]:
        _check_limit(limit)
        terms = query_terms(query)
        if not terms:
            return []
        if self._engine.dialect.name == "sqlite":
            return await self._reads.run(
                lambda connection: self._search_sqlite(connection, user_id, terms, limit)
            )
        return await self._reads.run(
            lambda connection: self._search_postgres(connection, user_id, terms, limit)
        )

    def _search_sqlite(
        self, connection: sa.Connection, user_id: str, terms: list[str], limit: int
    ) -> list[Fact]:
        # Each term quoted: FTS5 then reads it as a string, never as an operator or a column.
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        rows = connection.execute(
            _SEARCH_SQLITE,
            {"match": match, "user_id": user_id, "now": self._clock.now(), "limit": limit},
        )
        return [_fact(row, score=-float(row.bm25)) for row in rows]

    def _search_postgres(
        self, connection: sa.Connection, user_id: str, terms: list[str], limit: int
    ) -> list[Fact]:
        # Terms are \w+ words, so quoting each makes a valid tsquery whatever they spell.
        tsquery = sa.func.to_tsquery(
            sa.literal_column("'english'"), " | ".join(f"'{term}'" for term in terms)
        )
        vector = sa.func.to_tsvector(sa.literal_column("'english'"), _F.content)
        rank = sa.func.ts_rank(vector, tsquery).label("rank")
        rows = connection.execute(
            sa.select(memory_facts, rank)
            .where(_F.user_id == user_id, vector.op("@@")(tsquery), self._live())
            .order_by(rank.desc(), _F.id.desc())
            .limit(limit)
        )
        return [_fact(row, score=float(row.rank)) for row in rows]

    async def recent(self, user_id: str, *, limit: int = 5) -> list[Fact]:
        _check_limit(limit)
        params = {"user_id": user_id, "now": self._clock.now(), "limit": limit}
        return await self._reads.run(
            lambda connection: [_fact(row) for row in connection.execute(_RECENT, params)]
        )

    async def forget_facts(self, user_id: str) -> int:
        async with begin_write(self._engine) as connection:
            count = await delete_facts(connection, _F.user_id == user_id)
        return count

    async def purge_expired(self) -> int:
        async with begin_write(self._engine) as connection:
            count = await delete_facts(
                connection, _F.expires_at.is_not(None), _F.expires_at <= self._clock.now()
            )
        return count

    def _live(self) -> sa.ColumnElement[bool]:
        return sa.or_(_F.expires_at.is_(None), _F.expires_at > self._clock.now())


#: `SqlFacts.search`'s query on SQLite, built once.
_SEARCH_SQLITE = (
    sa.text(
        "SELECT f.id, f.user_id, f.content, f.source, f.created_at, f.expires_at,"
        " bm25(memory_facts_fts) AS bm25"
        " FROM memory_facts_fts JOIN memory_facts f ON f.id = memory_facts_fts.rowid"
        " WHERE memory_facts_fts MATCH :match AND f.user_id = :user_id"
        " AND (f.expires_at IS NULL OR f.expires_at > :now)"
        " ORDER BY bm25, f.id DESC LIMIT :limit"
    )
    .bindparams(sa.bindparam("now", type_=_F.expires_at.type))
    .columns(_F.id, _F.user_id, _F.content, _F.source, _F.created_at, _F.expires_at)
)

#: `SqlFacts.recent`'s query, built once (building it per call cost more than running it).
_RECENT = (
    sa.select(memory_facts)
    .where(
        _F.user_id == sa.bindparam("user_id"),
        sa.or_(_F.expires_at.is_(None), _F.expires_at > sa.bindparam("now")),
    )
    .order_by(_F.created_at.desc(), _F.id.desc())
    .limit(sa.bindparam("limit"))
)


async def delete_facts(connection: AsyncConnection, *where: sa.ColumnElement[bool]) -> int:
    """Delete the facts matching `where` and, on SQLite, squeeze their terms out of the index.

    The FTS5 delete trigger only marks entries deleted; ``optimize`` merges the index so that no
    page of it still holds a deleted fact's words (a deleted user's words must not linger).
    """
    result = await connection.execute(sa.delete(memory_facts).where(*where))
    if result.rowcount and connection.dialect.name == "sqlite":
        await connection.exec_driver_sql(
            "INSERT INTO memory_facts_fts(memory_facts_fts) VALUES ('optimize')"
        )
    return int(result.rowcount or 0)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def _fact(row: sa.Row[Any], *, score: float = 0.0) -> Fact:
    return Fact(
        fact_id=int(row.id),
        user_id=row.user_id,
        content=row.content,
        source=row.source,
        created_at=row.created_at,
        expires_at=row.expires_at,
        score=score,
    )
