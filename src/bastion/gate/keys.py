"""API keys: shown once at creation, stored only as a keyed hash, checked in constant time.

A key looks like ``bst_<key id>_<secret>``: ``bst_`` so that leaked keys are easy to spot (and the
redactor hides them, `bastion.gate.redact`), 12 hex digits of public key id (listed, revoked and
audited by it), and 32 random bytes, URL-safe. The database stores the key id, its principal, a
name, the times it was made, expires and was revoked, and ``HMAC-SHA256(api_key_key, key)`` where
the HMAC key is derived from the server secret (`bastion.gate.secret`): a stolen database yields
neither the keys nor the means to test guesses offline.

Checking a key (`KeyStore.authenticate`): the key id finds the row; the HMAC of the presented key is
compared with ``hmac.compare_digest`` (constant time); only a key that matches learns whether it
was revoked or has expired, so a bare key id reveals nothing. Each refusal is a `NotAuthenticated`
whose message says what is wrong and what to do, for the operator and for the key's holder.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.errors import NotAuthenticated
from bastion.storage.engine import begin_write
from bastion.storage.tables import api_keys

KEY_PREFIX = "bst"
_KEY = re.compile(r"^bst_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_\-]{43})$")
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
_NOT_RECOGNISED = "API key not recognised: check it was copied whole, or create a new one"


class KeyStatus(StrEnum):
    """Whether a key can be used."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A stored API key: everything but the key itself."""

    key_id: str
    principal_id: str
    name: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def status(self, now: datetime) -> KeyStatus:
        """Revoked wins over expired: a revocation is a decision, an expiry a date."""
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        return KeyStatus.ACTIVE

    @property
    def label(self) -> str:
        """How the key is named in messages and lists: ``bst_<key id>_…``."""
        return f"{KEY_PREFIX}_{self.key_id}_…"


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedKey:
    """A key just created: the only time the whole key exists outside its holder's hands."""

    record: ApiKey
    key: str = field(repr=False)


def key_id_of(text: str) -> str | None:
    """The key id in a whole key or a bare key id (``bst_`` optional); None if neither."""
    text = text.strip()
    matched = _KEY.match(text)
    if matched:
        return matched["key_id"]
    bare = text.removeprefix(f"{KEY_PREFIX}_").rstrip("_…")
    return bare if _KEY_ID.match(bare) else None


class KeyStore(Protocol):
    """Issues, checks, lists and revokes API keys. Never stores nor returns a key after issuing."""

    async def create(
        self, principal_id: str, *, name: str, now: datetime, expires_at: datetime | None
    ) -> IssuedKey:
        """A new key for `principal_id`, valid until `expires_at` (None: until revoked)."""
        ...

    async def authenticate(self, key: str, *, now: datetime) -> ApiKey:
        """The stored key matching `key`.

        Raises:
            NotAuthenticated: the key is malformed, unknown, revoked or expired (the message
                says which, the last two only to someone holding the real key).
        """
        ...

    async def owner(self, key: str) -> str | None:
        """The principal id of the stored key matching `key` (whatever its status), else None."""
        ...

    async def list(self, *, principal_id: str | None = None) -> list[ApiKey]:
        """Stored keys, oldest first."""
        ...

    async def revoke(self, key_id: str, *, now: datetime) -> ApiKey:
        """Revoke a key (revoking twice keeps the first time).

        Raises:
            LookupError: no key has this id.
        """
        ...


class SqlKeyStore(KeyStore):
    """API keys in the ``api_keys`` table (SQLite or PostgreSQL).

    Args:
        engine: the database (migrated).
        key: the HMAC key (`bastion.gate.secret.derive_key(secret, API_KEYS_PURPOSE)`).
    """

    def __init__(self, *, engine: AsyncEngine, key: bytes) -> None:
        self._engine = engine
        self._key = key

    def _digest(self, key: str) -> str:
        return hmac.digest(self._key, key.encode(), hashlib.sha256).hex()

    async def create(
        self, principal_id: str, *, name: str, now: datetime, expires_at: datetime | None
    ) -> IssuedKey:
        if not principal_id.strip():
            raise ValueError("an API key needs a principal id")
        if expires_at is not None and expires_at <= now:
            raise ValueError(f"an API key cannot expire in the past ({expires_at.isoformat()})")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            key_id=key_id,
            principal_id=principal_id,
            name=name,
            created_at=now,
            expires_at=expires_at,
        )
        async with begin_write(self._engine) as conn:
            await conn.execute(
                sa.insert(api_keys).values(
                    key_id=key_id,
                    principal_id=principal_id,
                    name=name,
                    digest=self._digest(key),
                    created_at=now,
                    expires_at=expires_at,
                    revoked_at=None,
                )
            )
        return IssuedKey(record=record, key=key)

    async def _matching(self, key: str) -> ApiKey | None:
        matched = _KEY.match(key.strip())
        if matched is None:
            return None
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(api_keys).where(api_keys.c.key_id == matched["key_id"])
                    )
                )
                .mappings()
                .one_or_none()
            )
        # Compared even when no row matched, so that timing does not tell which ids exist.
        digest = row["digest"] if row is not None else "0" * 64
        if not hmac.compare_digest(self._digest(key.strip()), digest) or row is None:
            return None
        return _record(dict(row))

    async def authenticate(self, key: str, *, now: datetime) -> ApiKey:
        if _KEY.match(key.strip()) is None:
            raise NotAuthenticated(
                "API key malformed: Bastion keys look like bst_<12 hex digits>_<43 characters>"
            )
        record = await self._matching(key)
        if record is None:
            raise NotAuthenticated(_NOT_RECOGNISED)
        status = record.status(now)
        if status is KeyStatus.REVOKED:
            assert record.revoked_at is not None
            error = NotAuthenticated(
                f"API key {record.label} was revoked at {record.revoked_at.isoformat()}; "
                "create a new one with: bastion keys create"
            )
            error.user_message = "Your API key has been revoked. Ask for a new one."
            raise error
        if status is KeyStatus.EXPIRED:
            assert record.expires_at is not None
            error = NotAuthenticated(
                f"API key {record.label} expired at {record.expires_at.isoformat()}; "
                "create a new one with: bastion keys create"
            )
            error.user_message = "Your API key has expired. Ask for a new one."
            raise error
        return record

    async def owner(self, key: str) -> str | None:
        record = await self._matching(key)
        return None if record is None else record.principal_id

    async def list(self, *, principal_id: str | None = None) -> list[ApiKey]:
        statement = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if principal_id is not None:
            statement = statement.where(api_keys.c.principal_id == principal_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_record(dict(row)) for row in rows]

    async def revoke(self, key_id: str, *, now: datetime) -> ApiKey:
        async with begin_write(self._engine) as conn:
            row = (
                (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise LookupError(f"no API key has the id {key_id!r} (see: bastion keys list)")
            if row["revoked_at"] is None:
                await conn.execute(
                    sa.update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=now)
                )
                return _record({**row, "revoked_at": now})
        return _record(dict(row))


def _record(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=str(row["key_id"]),
        principal_id=str(row["principal_id"]),
        name=str(row["name"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
