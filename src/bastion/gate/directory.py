"""Principals kept in the database: service accounts an operator creates without a redeploy.

An app declares its principals in code or in a principals file (`bastion.gate.principals`); both
are fixed for the life of the process. Principals that come and go while it runs (a service
account for a new integration, made with ``bastion keys create NAME --scope ...``) are rows of the
``principals`` table instead, read by the gate when a request names one.

Principals declared by the app win over rows of the same id: an app's own users cannot be widened
by whoever can write the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.messages import Principal
from bastion.storage.engine import begin_write
from bastion.storage.tables import principals

PrincipalKind = Literal["user", "service"]


class PrincipalStore(Protocol):
    """Principals looked up by id while the system runs."""

    async def get(self, principal_id: str) -> Principal | None:
        """The principal with this id, or None."""
        ...


class SqlPrincipalStore(PrincipalStore):
    """Principals in the ``principals`` table (SQLite or PostgreSQL).

    Args:
        engine: the database (migrated).
    """

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, principal_id: str) -> Principal | None:
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(principals).where(principals.c.principal_id == principal_id)
                    )
                )
                .mappings()
                .one_or_none()
            )
        return None if row is None else _principal(row)

    async def put(
        self, principal: Principal, *, kind: PrincipalKind = "service", now: datetime
    ) -> None:
        """Create the principal, or replace its roles, scopes and name."""
        if not principal.id.strip():
            raise ValueError("a principal needs an id")
        row = {
            "principal_id": principal.id,
            "kind": kind,
            "roles": sorted(principal.roles),
            "scopes": sorted(principal.scopes),
            "display_name": principal.display_name,
            "created_at": now,
            "updated_at": now,
        }
        async with begin_write(self._engine) as conn:
            exists = await conn.scalar(
                sa.select(principals.c.principal_id).where(
                    principals.c.principal_id == principal.id
                )
            )
            if exists is None:
                await conn.execute(sa.insert(principals).values(**row))
            else:  # an update keeps the row's creation time
                del row["created_at"]
                await conn.execute(
                    sa.update(principals)
                    .where(principals.c.principal_id == principal.id)
                    .values(**row)
                )

    async def list(self) -> list[tuple[Principal, PrincipalKind]]:
        """Every stored principal with its kind, by id."""
        async with self._engine.connect() as conn:
            rows = (
                (await conn.execute(sa.select(principals).order_by(principals.c.principal_id)))
                .mappings()
                .all()
            )
        return [(_principal(row), row["kind"]) for row in rows]


def _principal(row: sa.RowMapping) -> Principal:
    return Principal(
        id=row["principal_id"],
        roles=frozenset(row["roles"]),
        scopes=frozenset(row["scopes"]),
        display_name=row["display_name"],
    )
