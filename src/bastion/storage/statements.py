"""`Statement`: a statement of the hot write paths, run straight on SQLite's cursor.

A run writes its step records, events and audit entries a few dozen times. Through SQLAlchemy's
execution machinery (cache key, compiled-cache lookup, parameter processing, events, result
set-up) each statement costs about 60 to 80 µs of Python on this kind of machine, several times
SQLite's own work, and on the writer thread (`bastion.storage.writes`) that time also holds the
interpreter lock the event loop needs. A `Statement` is compiled once per dialect; on SQLite it
then runs on the DB-API cursor of the caller's connection, inside the caller's transaction, with
each parameter converted by the same bind processor SQLAlchemy would use (so what is stored, and
how it reads back, does not change) and a driver error raised as SQLAlchemy's own exception class
(`IntegrityError`, `OperationalError`, ...), as if SQLAlchemy had run it. On any other dialect
it is an ordinary ``connection.execute``.

Only plain SQL text with typed parameters (`sa.text(...).bindparams(...)`) is accepted: its one
compiled form is all there is to it.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    #: A row's values in the statement's order (`operator.itemgetter` of the bind names).
    values: Callable[[Mapping[str, Any]], Any]
    single: bool
    #: (position, bind processor) for the values that need converting.
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]

    def row(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        found = self.values(params)
        if self.single:
            found = (found,)
        if not self.conversions:
            return tuple(found)
        values = list(found)
        for position, convert in self.conversions:
            value = values[position]
            if value is not None:
                values[position] = convert(value)
        return tuple(values)


class Statement:
    """`clause` compiled once per dialect; run directly on SQLite (see the module docs).

    Args:
        clause: SQL text whose parameters are typed (``sa.bindparam(name, type_=...)``) where a
            value needs converting (times, JSON, decimals).
    """

    __slots__ = ("_compiled", "_lock", "clause")

    def __init__(self, clause: sa.TextClause) -> None:
        self.clause = clause
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def execute(self, connection: sa.Connection, params: Params | None = None) -> int:
        """Run the statement with `params` (one mapping, or several: one run each).

        Returns:
            The number of rows it changed, as the driver counts them (-1 for several sets of
            parameters on PostgreSQL: asyncpg does not count them).

        Raises:
            sqlalchemy.exc.DBAPIError: the database refused it (the subclass SQLAlchemy raises).
        """
        if connection.dialect.name != "sqlite":
            return connection.execute(self.clause, params).rowcount
        compiled, rows = self._prepare(connection.dialect, params)
        cursor = connection.connection.cursor()
        try:
            if len(rows) == 1:
                cursor.execute(compiled.sql, rows[0])
            else:
                cursor.executemany(compiled.sql, rows)
            return int(cursor.rowcount)
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _translated(connection.dialect, compiled.sql, rows, exc) from exc
        finally:
            cursor.close()

    def rows(self, connection: sa.Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Run the statement (a query) with `params`; its rows as the driver gives them.

        The values are not converted by result processors: fit for integers and text.

        Raises:
            sqlalchemy.exc.DBAPIError: the database refused it.
        """
        if connection.dialect.name != "sqlite":
            return list(connection.execute(self.clause, params or {}).all())
        compiled, rows = self._prepare(connection.dialect, params or {})
        cursor = connection.connection.cursor()
        try:
            cursor.execute(compiled.sql, rows[0])
            return list(cursor.fetchall())
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _translated(connection.dialect, compiled.sql, rows, exc) from exc
        finally:
            cursor.close()

    def _prepare(
        self, dialect: Dialect, params: Params | None
    ) -> tuple[_Compiled, list[tuple[Any, ...]]]:
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        many = params if isinstance(params, Sequence) else [params or {}]
        if not many:
            raise ValueError("a Statement needs at least one set of parameters")
        try:
            rows = [compiled.row(row) for row in many]
        except Exception as exc:  # a parameter missing or refused by its type, as SQLAlchemy says
            raise StatementError(
                f"({type(exc).__module__}.{type(exc).__name__}) {exc}", compiled.sql, None, exc
            ) from exc
        return compiled, rows

    def _compile(self, dialect: Dialect) -> _Compiled:
        with self._lock:
            found = self._compiled.get(dialect.name)
            if found is not None:
                return found
            compiled = self.clause.compile(dialect=dialect)
            if not compiled.positional or compiled.positiontup is None:
                raise ValueError(f"the {dialect.name!r} dialect is not positional")
            names = tuple(compiled.positiontup)
            processors = [
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            ]
            made = self._compiled[dialect.name] = _Compiled(
                sql=compiled.string,
                values=operator.itemgetter(*names) if names else lambda _: (),
                single=len(names) == 1,
                conversions=tuple((i, p) for i, p in enumerate(processors) if p is not None),
            )
            return made


def _translated(
    dialect: Dialect, sql: str, rows: list[tuple[Any, ...]], exc: Exception
) -> DBAPIError:
    """The exception SQLAlchemy would have raised for the driver's `exc`."""
    error = DBAPIError.instance(
        sql,
        rows if len(rows) > 1 else rows[0],
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=True,
        dialect=dialect,
        ismulti=len(rows) > 1,
    )
    assert isinstance(error, DBAPIError)
    return error
