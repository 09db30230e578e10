"""The audit log: every gate decision, appended to a hash chain, with secrets redacted.

Each stored entry carries the hash of the one before it (``prev_hash``) and its own
``hash = sha256(prev_hash + canonical_json(entry))``; the first entry's ``prev_hash`` is
`GENESIS_HASH`. Editing, reordering or deleting an entry in the middle of the log breaks the chain
at that point, which `verify` (a pure function over the stored entries) reports.

Two logs implement the `AuditLog` protocol: `InMemoryAuditLog` (tests, in-memory systems) and
`SqlAuditLog` (the ``audit_log`` table of `bastion.storage.tables`, SQLite or PostgreSQL). Both seal
entries the same way, here, so that a chain read back from either verifies with the same code.

Sealing also makes the entry safe and stable to store: ``details`` is turned into plain JSON (a
`Decimal` becomes a string, a tuple a list) and values under keys that look secret (password,
token, api key, card number, ...) become ``"[redacted]"``, whoever appended the entry.

What the chain does not prove yet, by design of this first version: that nothing was cut from the
END of the log, or that the whole log was not rewritten by someone able to recompute the hashes.
A later issue adds a keyed HMAC over each hash and signed checkpoints (the last hash, published
out of band) plus the ``bastion audit verify`` CLI; `entry_hash` and `verify` are the seam they
extend, and the stored columns need no change for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import RowMapping, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.gate.interface import AuditEntry, AuditLog, Stage
from bastion.storage.engine import begin_write
from bastion.storage.tables import audit_log

#: The ``prev_hash`` of the first entry of a chain.
GENESIS_HASH = "0" * 64
#: What a secret-looking value is replaced with.
REDACTED = "[redacted]"

# Matched against a key's words and adjacent word pairs ("api_key" → "api", "key", "apikey"), not
# against substrings, so that "max_tokens" or "secretary" stay readable while "access_token",
# "clientSecret", "X-Api-Key" and "card_number" are hidden.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "token",
        "secret",
        "authorization",
        "apikey",
        "cardnumber",
        "creditcard",
        "cvv",
        "cvc",
        "pin",
        "privatekey",
        "cookie",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A fixed key for pg_advisory_xact_lock, serialising appends across processes ("bstaudit" in
# ASCII; distinct from the migrations' key, so appends never wait on a migration's lock).
_PG_LOCK_KEY = 0x6273_7461_7564_6974


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainedEntry:
    """An audit entry as stored: sealed (JSON details, secrets redacted) and linked by hash."""

    entry: AuditEntry
    prev_hash: str
    hash: str


def looks_secret(key: str) -> bool:
    """Whether a mapping key names something that must not be logged (``api_key``, ...)."""
    words = [w.lower() for w in _WORD.findall(key)]
    pairs = (a + b for a, b in itertools.pairwise(words))
    return any(w in _SECRET_WORDS for w in words) or any(p in _SECRET_WORDS for p in pairs)


def redact(value: Any) -> Any:
    """`value` as plain JSON, with every value under a secret-looking key replaced by REDACTED.

    Mappings and sequences are walked to any depth; a `Decimal` becomes its string (exact), a
    datetime its ISO form, and anything else that JSON cannot hold its ``str``.
    """
    if isinstance(value, Mapping):
        return {
            _clean(str(k)): REDACTED if looks_secret(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [redact(v) for v in items]
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # PostgreSQL's JSONB gives 1e+20 back as 100000000000000000000 (an int once parsed):
        # store such a float as that int, so what we hash is what we read back.
        return int(value) if value.is_integer() and abs(value) >= 1e16 else value
    if value is None or isinstance(value, (int, bool)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo is None else _utc_iso(value)
    return str(value)


def seal(entry: AuditEntry) -> AuditEntry:
    """`entry` as it is stored: aware UTC time, JSON details with secrets redacted.

    Raises:
        ValueError: the entry's time is naive (its zone would be a guess).
    """
    if entry.at.tzinfo is None or entry.at.utcoffset() is None:
        raise ValueError(
            f"audit entry time {entry.at.isoformat()} has no timezone; use the Clock's now()"
        )
    # The JSON round trip makes what we hash exactly what a database hands back.
    details = json.loads(json.dumps(redact(entry.details), allow_nan=False))
    return replace(
        entry,
        at=entry.at.astimezone(UTC),
        action=_clean(entry.action),
        principal_id=_clean_opt(entry.principal_id),
        reason=_clean(entry.reason),
        run_id=_clean_opt(entry.run_id),
        tool_name=_clean_opt(entry.tool_name),
        details=details,
    )


def canonical_json(entry: AuditEntry) -> str:
    """The entry as hashed: sorted keys, no spaces, UTC ISO time with microseconds."""
    body = {
        "at": _utc_iso(entry.at),
        "action": entry.action,
        "decision": entry.decision,
        "principal_id": entry.principal_id,
        "reason": entry.reason,
        "run_id": entry.run_id,
        "tool_name": entry.tool_name,
        "stage": entry.stage,
        "details": entry.details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """``sha256(prev_hash + canonical_json(entry))`` as 64 hex digits."""
    return hashlib.sha256((prev_hash + canonical_json(entry)).encode("utf-8")).hexdigest()


def chain(prev_hash: str, entry: AuditEntry) -> ChainedEntry:
    """Seal `entry` and link it after the entry whose hash is `prev_hash`."""
    sealed = seal(entry)
    return ChainedEntry(entry=sealed, prev_hash=prev_hash, hash=entry_hash(prev_hash, sealed))


def verify(entries: Sequence[ChainedEntry]) -> int | None:
    """The index of the first entry that breaks the chain, or None if the chain is intact.

    An entry breaks the chain when its ``prev_hash`` is not the hash of the entry before it (the
    genesis hash for the first) or its ``hash`` does not match its content.
    """
    expected_prev = GENESIS_HASH
    for index, item in enumerate(entries):
        if item.prev_hash != expected_prev or item.hash != entry_hash(item.prev_hash, item.entry):
            return index
        expected_prev = item.hash
    return None


class InMemoryAuditLog(AuditLog):
    """An audit log held in a list: for tests and systems that keep nothing on disk."""

    def __init__(self) -> None:
        self._chain: list[ChainedEntry] = []

    async def append(self, entry: AuditEntry) -> None:
        prev = self._chain[-1].hash if self._chain else GENESIS_HASH
        self._chain.append(chain(prev, entry))

    @property
    def entries(self) -> list[AuditEntry]:
        """The sealed entries, oldest first (a copy)."""
        return [item.entry for item in self._chain]

    async def read_chain(self) -> list[ChainedEntry]:
        """Every stored entry with its hashes, oldest first (a copy), for `verify`."""
        return list(self._chain)


class SqlAuditLog(AuditLog):
    """The audit log in the ``audit_log`` table (SQLite or PostgreSQL).

    Appends are serialised by an `asyncio.Lock`, and each one reads the last hash and inserts the
    new entry in one write transaction, so the chain never forks within a process. Across
    processes too: on PostgreSQL the transaction takes an advisory lock first, and on SQLite it
    begins ``IMMEDIATE``, taking the database's write lock before reading the last hash.

    The table must exist: the memory store's ``start()`` runs the migrations, or call
    `bastion.storage.migrations.migrate` first.
    """

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine
        self._lock = asyncio.Lock()

    async def append(self, entry: AuditEntry) -> None:
        async with self._lock, begin_write(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
                )
            prev = await self._last_hash(conn)
            item = chain(prev, entry)
            sealed = item.entry
            await conn.execute(
                insert(audit_log).values(
                    at=sealed.at,
                    action=sealed.action,
                    decision=sealed.decision,
                    principal_id=sealed.principal_id,
                    reason=sealed.reason,
                    run_id=sealed.run_id,
                    tool_name=sealed.tool_name,
                    stage=sealed.stage,
                    details=sealed.details,
                    prev_hash=item.prev_hash,
                    hash=item.hash,
                )
            )

    async def read_chain(self) -> list[ChainedEntry]:
        """Every stored entry with its hashes, oldest first, for `verify`."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(audit_log).order_by(audit_log.c.id))).mappings()
            return [_from_row(row) for row in rows]

    @staticmethod
    async def _last_hash(conn: AsyncConnection) -> str:
        result = await conn.execute(
            select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
        )
        last = result.scalar_one_or_none()
        return GENESIS_HASH if last is None else str(last)


def _from_row(row: RowMapping) -> ChainedEntry:
    entry = AuditEntry(
        at=row["at"],  # aware UTC from either backend (the table's UtcDateTime)
        action=row["action"],
        decision=row["decision"],
        principal_id=row["principal_id"],
        reason=row["reason"],
        run_id=row["run_id"],
        tool_name=row["tool_name"],
        stage=cast("Stage | None", row["stage"]),
        details=dict(row["details"]),
    )
    return ChainedEntry(entry=entry, prev_hash=row["prev_hash"], hash=row["hash"])


def _clean(text: str) -> str:
    # PostgreSQL can store no NUL character in text or JSONB; nor should a log line hold one.
    return text.replace("\x00", "\ufffd")


def _clean_opt(text: str | None) -> str | None:
    return None if text is None else _clean(text)


def _utc_iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
