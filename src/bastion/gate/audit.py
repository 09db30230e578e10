r"""The audit log: every gate decision, sealed, numbered and chained with a keyed MAC.

Entry ``seq`` (0, 1, 2, ...) is stored as its canonical JSON ``body`` (sorted keys, no spaces, UTC
time with microseconds, the entry's own ``seq`` inside) and::

    mac = HMAC-SHA256(audit_key, prev_mac + "\n" + body)        prev_mac of entry 0 = GENESIS

where ``prev_mac`` is the MAC of entry ``seq - 1``. The audit key is derived from the server
secret (`bastion.gate.secret`), which is not in the database: whoever can write the database can
delete or edit rows, but cannot make a row that verifies. `verify` names the first bad entry:

* a byte edited in an entry: its MAC no longer matches (or, for a filter column, the column no
  longer agrees with the sealed body);
* an entry deleted, two swapped, an entry moved: a ``seq`` out of place, or a broken link;
* a forged entry inserted: its MAC does not match (no key), and the entries after it are out of
  place;
* the chain recomputed without the key (plain SHA-256, a guessed key): the first recomputed entry;
* the tail truncated, or an older copy of the log restored: only a checkpoint kept outside the
  database shows it (`bastion.gate.checkpoints`); `verify` takes those too.

Two processes appending never fork the chain: each append reads the last entry and inserts the
next in one write transaction that first takes a lock (``pg_advisory_xact_lock`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), and ``seq`` is the primary key, so even without the lock two
entries could not claim one position. A crash mid-append leaves no partial entry: the entry is one
row, inserted in one transaction.

Entries are sealed before they are chained: secrets redacted (`bastion.gate.redact.Redactor`, by
whoever appends), details made plain JSON, the time made UTC. `InMemoryAuditLog` (tests, in-memory
systems) and `SqlAuditLog` (the ``audit_entries`` table) seal and chain with the same functions, so
a chain read back from either verifies with the same code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.clock import Clock
from bastion.gate.checkpoints import Checkpoint, append_checkpoint, make_checkpoint
from bastion.gate.interface import AuditEntry, AuditLog, Stage
from bastion.gate.redact import Redactor, clean
from bastion.storage.engine import insert_statement
from bastion.storage.statements import Statement
from bastion.storage.tables import audit_entries
from bastion.storage.writes import TransactionRunner

logger = logging.getLogger(__name__)

#: The ``prev_mac`` of entry 0.
GENESIS = "0" * 64
#: Characters of a time in a body: ``2026-03-01T12:00:00.000000+00:00``.
_ISO_CHARS = 32
# A fixed key for pg_advisory_xact_lock, serialising appends across processes ("bstaudit" in
# ASCII; distinct from the migrations' key, so appends never wait on a migration's lock).
_PG_LOCK_KEY = 0x6273_7461_7564_6974
_DEFAULT_REDACTOR = Redactor()


class StoredEntry(NamedTuple):
    """One entry as stored: its position, filter columns, sealed body and MACs.

    A `NamedTuple` rather than the frozen dataclass STYLE.md asks for: `verify` reads 100k of
    them at a time, and a tuple is built several times faster (bench/audit_verify.py). It is as
    immutable; change a copy with ``_replace``.
    """

    seq: int
    at: datetime
    action: str
    decision: str
    principal_id: str | None
    run_id: str | None
    tool_name: str | None
    body: str
    prev_mac: str
    mac: str

    def entry(self) -> AuditEntry:
        """The entry the body holds.

        Raises:
            ValueError: the body is not a sealed entry (only a tampered log has such a body).
        """
        return _parse_body(self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """What `verify` found."""

    entries: int
    #: The first entry that is not as written (None: the log is intact as far as can be told).
    first_bad: int | None = None
    problem: str | None = None
    checkpoints_matched: int = 0

    @property
    def ok(self) -> bool:
        """Whether no entry is bad."""
        return self.first_bad is None


# -- sealing and chaining --------------------------------------------------------------------


def seal(entry: AuditEntry, redactor: Redactor = _DEFAULT_REDACTOR) -> AuditEntry:
    """`entry` as it is stored: aware UTC time, secrets redacted, details made plain JSON.

    Raises:
        ValueError: the entry's time is naive (its zone would be a guess).
    """
    if entry.at.tzinfo is None or entry.at.utcoffset() is None:
        raise ValueError(
            f"audit entry time {entry.at.isoformat()} has no timezone; use the Clock's now()"
        )
    return AuditEntry(
        at=entry.at.astimezone(UTC),
        action=clean(entry.action),
        decision=entry.decision,
        principal_id=_text_opt(entry.principal_id),
        reason=clean(redactor.text(entry.reason)),
        run_id=_text_opt(entry.run_id),
        tool_name=_text_opt(entry.tool_name),
        stage=entry.stage,
        details=redactor.json(entry.details),
    )


def canonical_body(seq: int, entry: AuditEntry) -> str:
    """The sealed entry at position `seq` as the exact text its MAC covers.

    Compact JSON: first the fields the table repeats as columns, in a fixed order (so that verify
    checks the columns against the body by comparing a prefix, without parsing it), then the
    others with their keys sorted, at every depth.
    """
    tail = json.dumps(
        {"stage": entry.stage, "reason": entry.reason, "details": entry.details},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    head = _body_head(
        seq,
        entry.at,
        entry.action,
        entry.decision,
        entry.principal_id,
        entry.run_id,
        entry.tool_name,
    )
    return f"{head},{tail[1:]}"


def _body_head(
    seq: int,
    at: datetime,
    action: str,
    decision: str,
    principal_id: str | None,
    run_id: str | None,
    tool_name: str | None,
) -> str:
    """``{"seq":…,"at":…,"action":…,"decision":…,"principal_id":…,"run_id":…,"tool_name":…``."""
    return f'{{"seq":{seq:d},"at":"{_utc_iso(at)}' + _body_rest(
        action, decision, principal_id, run_id, tool_name
    )


def _body_rest(
    action: str, decision: str, principal_id: str | None, run_id: str | None, tool_name: str | None
) -> str:
    return (
        f'","action":{_str(action)},"decision":{_str(decision)},'
        f'"principal_id":{_str(principal_id)},"run_id":{_str(run_id)},'
        f'"tool_name":{_str(tool_name)}'
    )


def _str(value: str | None) -> str:
    # What json.dumps(value, ensure_ascii=False) returns, without its per-call overhead.
    return "null" if value is None else encode_basestring(value)


def entry_mac(key: bytes, prev_mac: str, body: str) -> str:
    r"""``HMAC-SHA256(key, prev_mac + "\n" + body)`` as 64 hex digits."""
    return hmac.digest(key, f"{prev_mac}\n{body}".encode(), hashlib.sha256).hex()


def link(
    key: bytes,
    *,
    seq: int,
    prev_mac: str,
    entry: AuditEntry,
    redactor: Redactor = _DEFAULT_REDACTOR,
) -> StoredEntry:
    """Seal `entry` and chain it at position `seq`, after the entry whose MAC is `prev_mac`."""
    sealed = seal(entry, redactor)
    body = canonical_body(seq, sealed)
    return StoredEntry(
        seq=seq,
        at=sealed.at,
        action=sealed.action,
        decision=sealed.decision,
        principal_id=sealed.principal_id,
        run_id=sealed.run_id,
        tool_name=sealed.tool_name,
        body=body,
        prev_mac=prev_mac,
        mac=entry_mac(key, prev_mac, body),
    )


# -- verification ----------------------------------------------------------------------------


def verify(
    entries: Sequence[StoredEntry], *, key: bytes, checkpoints: Sequence[Checkpoint] = ()
) -> VerifyReport:
    """Check every entry's position, link, MAC and columns, then each checkpoint; see the module.

    Args:
        entries: the stored entries, in ``seq`` order (as `read_chain` returns them).
        key: the audit key (`bastion.gate.secret.derive_key` of the server secret).
        checkpoints: checkpoints kept outside the database (already checked against their MACs).

    Returns:
        The number of entries and, if any is bad, the first bad index and why.
    """
    bad_at, problem = _first_broken(entries, key)
    intact = len(entries) if bad_at is None else bad_at  # entries [0, intact) verify
    matched, lower = 0, 0
    for checkpoint in sorted(checkpoints, key=lambda c: c.size):
        last = checkpoint.size - 1
        if checkpoint.size <= len(entries):
            if last >= intact:
                break  # the chain is already broken before this checkpoint's head
            if hmac.compare_digest(entries[last].mac, checkpoint.head):
                matched, lower = matched + 1, checkpoint.size
                continue
        index, why = _disagreement(entries, checkpoint, lower)
        if bad_at is None or index < bad_at:
            bad_at, problem = index, why
        break
    return VerifyReport(
        entries=len(entries), first_bad=bad_at, problem=problem, checkpoints_matched=matched
    )


def _first_broken(entries: Sequence[StoredEntry], key: bytes) -> tuple[int | None, str | None]:
    expected_prev = GENESIS
    for index, item in enumerate(entries):
        if item.seq != index:
            return index, (
                f"it is stored as entry {item.seq}: entries were deleted, inserted or reordered "
                "before it"
            )
        if item.prev_mac != expected_prev:
            return index, (
                "it does not link to the entry before it: an entry was deleted, inserted or "
                "moved here"
            )
        if not hmac.compare_digest(entry_mac(key, item.prev_mac, item.body), item.mac):
            hint = (
                " (or the gate secret is not the one the log was written with)"
                if index == 0
                else ""
            )
            return index, (
                "its MAC does not match its content: it was edited, forged, or chained without "
                f"the audit key{hint}"
            )
        if not _columns_agree(item):
            return index, _columns_disagree(item)
        expected_prev = item.mac
    return None, None


def _columns_agree(item: StoredEntry) -> bool:
    """Whether the body starts with the columns' values, as `canonical_body` writes them.

    The hot path of `verify`: string comparisons and one ISO time parse, no JSON parsing.
    """
    body = item.body
    start = f'{{"seq":{item.seq:d},"at":"'
    if not body.startswith(start):
        return False
    end = len(start) + _ISO_CHARS
    try:
        if datetime.fromisoformat(body[len(start) : end]) != item.at:
            return False
    except ValueError:
        return False
    rest = _body_rest(item.action, item.decision, item.principal_id, item.run_id, item.tool_name)
    return body.startswith(rest, end) and body[end + len(rest) : end + len(rest) + 1] == ","


def _columns_disagree(item: StoredEntry) -> str:
    """Which column disagrees with the sealed body (the slow path, once a check has failed)."""
    try:
        body = json.loads(item.body)
    except ValueError:
        return "its body is not JSON"
    if not isinstance(body, dict):
        return "its body is not a JSON object"
    stored = {
        "seq": item.seq,
        "at": _utc_iso(item.at),
        "action": item.action,
        "decision": item.decision,
        "principal_id": item.principal_id,
        "run_id": item.run_id,
        "tool_name": item.tool_name,
    }
    for name, value in stored.items():
        if body.get(name) != value:
            return (
                f"its {name} column says {value!r} but the sealed entry says "
                f"{body.get(name)!r}: the column was edited"
            )
    return "its sealed body is not in canonical form"


def _disagreement(
    entries: Sequence[StoredEntry], checkpoint: Checkpoint, lower: int
) -> tuple[int, str]:
    """Where a log that disagrees with a checkpoint first went wrong, as closely as can be told.

    Every entry the checkpoint covers existed when it was taken, so the first of them stamped
    later than the checkpoint was written after it: an older copy was restored and appended to.
    Failing that, a log shorter than the checkpoint lost its tail; and a log as long whose entry
    ``size - 1`` differs was rewritten somewhere after the last checkpoint that matched, which is
    as close as the evidence goes.
    """
    taken = _utc_iso(checkpoint.at)
    for index in range(lower, min(checkpoint.size, len(entries))):
        if entries[index].at > checkpoint.at:
            return index, (
                f"it was written after the checkpoint of {taken}, which vouches for "
                f"{checkpoint.size} entries that this log does not hold: an older copy of the log "
                "was restored and appended to"
            )
    if checkpoint.size > len(entries):
        return len(entries), (
            f"the log has {len(entries)} entries, but the checkpoint of {taken} vouches for "
            f"{checkpoint.size}: entries {len(entries)} to {checkpoint.size - 1} are missing (the "
            "tail was cut off, or an older copy of the log was restored)"
        )
    return lower, (
        f"entry {checkpoint.size - 1} is not the one the checkpoint of {taken} vouches for: the "
        f"log was rewritten or rolled back at or after entry {lower}, the first entry no earlier "
        "checkpoint covers"
    )


# -- the logs --------------------------------------------------------------------------------


#: The entries `appended_together` holds back, with the log each goes to (None: none held).
_HELD_BACK: ContextVar[list[tuple[SqlAuditLog, AuditEntry]] | None] = ContextVar(
    "bastion_audit_held_back", default=None
)


@asynccontextmanager
async def appended_together() -> AsyncIterator[None]:
    """Store the entries `SqlAuditLog.append` gets inside the block together, as it ends.

    For a burst of decisions that nothing acts on before the burst is over (the gate vetting every
    step of a fresh plan): one transaction instead of one per entry. The entries are stored when
    the block ends, however it ends, and before the code after it runs; an entry that cannot be
    stored raises there, so no decision of the block is acted on unrecorded. Entries keep their
    order. Other audit logs (`InMemoryAuditLog`) append at once, as always.
    """
    held: list[tuple[SqlAuditLog, AuditEntry]] = []
    token = _HELD_BACK.set(held)
    try:
        yield
    finally:
        _HELD_BACK.reset(token)
        by_log: dict[int, tuple[SqlAuditLog, list[AuditEntry]]] = {}
        for log, entry in held:
            by_log.setdefault(id(log), (log, []))[1].append(entry)
        for log, entries in by_log.values():
            await log.append_many(entries)


class InMemoryAuditLog(AuditLog):
    """An audit log held in a list: for tests and systems that keep nothing on disk.

    Args:
        key: the audit key; a random one if None (read it back from `key`).
        redactor: hides secrets in what is appended.
    """

    def __init__(self, *, key: bytes | None = None, redactor: Redactor | None = None) -> None:
        self.key = key if key is not None else secrets.token_bytes(32)
        self._redactor = redactor or _DEFAULT_REDACTOR
        #: The stored entries, oldest first (tests tamper with this list).
        self.rows: list[StoredEntry] = []

    async def append(self, entry: AuditEntry) -> None:
        prev = self.rows[-1].mac if self.rows else GENESIS
        self.rows.append(
            link(self.key, seq=len(self.rows), prev_mac=prev, entry=entry, redactor=self._redactor)
        )

    @property
    def entries(self) -> list[AuditEntry]:
        """The sealed entries, oldest first."""
        return [row.entry() for row in self.rows]

    async def read_chain(self) -> list[StoredEntry]:
        """Every stored entry, oldest first (a copy), for `verify`."""
        return list(self.rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """What `SqlAuditLog.query` selects; None matches anything."""

    run_id: str | None = None
    principal_id: str | None = None
    tool_name: str | None = None
    decision: str | None = None
    action: str | None = None


class SqlAuditLog(AuditLog):
    """The audit log in the ``audit_entries`` table (SQLite or PostgreSQL).

    The table must exist: the memory store's ``start()`` runs the migrations, or call
    `bastion.storage.migrations.migrate` first.

    Args:
        engine: the database.
        key: the audit key (`bastion.gate.secret.derive_key(secret, AUDIT_PURPOSE)`).
        redactor: hides secrets in what is appended.
        clock: stamps checkpoints.
        checkpoint_file: where a checkpoint is appended every `checkpoint_every` entries (None:
            none are written).
        checkpoint_every: entries between two checkpoints.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        key: bytes,
        redactor: Redactor | None = None,
        clock: Clock | None = None,
        checkpoint_file: Path | None = None,
        checkpoint_every: int = 1000,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
        self._engine = engine
        self._key = key
        self._redactor = redactor or _DEFAULT_REDACTOR
        self._clock = clock
        self._checkpoint_file = checkpoint_file
        self._every = checkpoint_every
        self._writes = TransactionRunner(engine)
        #: On PostgreSQL, this process's appends take turns before they take a connection: each
        #: waits for the advisory lock on the server, and many waiting there at once would hold
        #: every connection of the pool. (On SQLite the one writer thread takes them in turn.)
        self._turns = asyncio.Lock()

    async def append(self, entry: AuditEntry) -> None:
        held = _HELD_BACK.get()
        if held is not None:  # inside `appended_together`: stored at its end
            held.append((self, entry))
            return
        await self.append_many([entry])

    async def append_many(self, entries: Sequence[AuditEntry]) -> None:
        """Append `entries` in order, in one transaction (all of them, or none)."""
        if not entries:
            return

        def write(conn: sa.Connection) -> list[StoredEntry]:
            # One transaction holding the database's write lock (SQLite's, or the advisory lock
            # on PostgreSQL): the head it reads is the head it extends, across processes.
            if conn.dialect.name == "postgresql":
                conn.execute(_PG_LOCK, {"key": _PG_LOCK_KEY})
            last = _HEAD_ROW.rows(conn)
            size, prev = (int(last[0][0]) + 1, str(last[0][1])) if last else (0, GENESIS)
            rows = []
            for seq, entry in enumerate(entries, start=size):
                rows.append(
                    link(self._key, seq=seq, prev_mac=prev, entry=entry, redactor=self._redactor)
                )
                prev = rows[-1].mac
            _INSERT.execute(conn, [_columns(row) for row in rows])
            return rows

        if self._engine.dialect.name == "sqlite":
            rows = await self._writes.run(write)
        else:
            async with self._turns:
                rows = await self._writes.run(write)
        for row in rows:
            if (row.seq + 1) % self._every == 0:
                await self._checkpoint(row.seq + 1, row.mac)

    async def aclose(self) -> None:
        """Let go of the database's shared writer (see `TransactionRunner`). Safe to repeat."""
        await self._writes.aclose()

    async def _checkpoint(self, size: int, head: str) -> None:
        if self._checkpoint_file is None or self._clock is None:
            return
        checkpoint = make_checkpoint(self._key, size=size, head=head, at=self._clock.now())
        try:
            await asyncio.to_thread(append_checkpoint, self._checkpoint_file, checkpoint)
        except OSError:
            # The entry is safely stored; only the extra evidence is missing. Say so loudly.
            logger.exception(
                "could not append the audit checkpoint (size %d) to %s", size, self._checkpoint_file
            )

    async def checkpoint(self, path: Path, *, at: datetime) -> Checkpoint | None:
        """Append a checkpoint of the log as it is now to `path`; None if the log is empty.

        Raises:
            OSError: the file cannot be written.
        """
        async with self._engine.connect() as conn:
            size, head = await _head(conn)
        if size == 0:
            return None
        checkpoint = make_checkpoint(self._key, size=size, head=head, at=at)
        await asyncio.to_thread(append_checkpoint, path, checkpoint)
        return checkpoint

    async def read_chain(self) -> list[StoredEntry]:
        """Every stored entry, in ``seq`` order, for `verify`.

        Read with the driver's own rows rather than SQLAlchemy's typed ones: on 100k entries the
        per-value type processing costs more than verifying them (see bench/audit_verify.py).
        """
        async with self._engine.connect() as conn:
            result = await conn.exec_driver_sql(_READ_CHAIN)
            rows = result.all()
        # SQLite hands back UTC text, PostgreSQL an aware datetime: one conversion for all rows.
        times: list[datetime] = (
            [datetime.fromisoformat(row[1] + "+00:00") for row in rows]
            if rows and isinstance(rows[0][1], str)
            else [_aware(row[1]) for row in rows]
        )
        return [
            StoredEntry(row[0], at, row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9])
            for row, at in zip(rows, times, strict=True)
        ]

    async def query(self, where: AuditFilter, *, limit: int = 50) -> list[StoredEntry]:
        """The newest `limit` entries matching `where`, oldest first."""
        table = audit_entries
        statement = sa.select(table).order_by(table.c.seq.desc()).limit(limit)
        for column, value in (
            (table.c.run_id, where.run_id),
            (table.c.principal_id, where.principal_id),
            (table.c.tool_name, where.tool_name),
            (table.c.decision, where.decision),
            (table.c.action, where.action),
        ):
            if value is not None:
                statement = statement.where(column == value)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_from_row(row) for row in reversed(rows)]


_HEAD = (
    sa.select(audit_entries.c.seq, audit_entries.c.mac)
    .order_by(audit_entries.c.seq.desc())
    .limit(1)
)
#: `_HEAD` as text, run straight on SQLite's cursor by the hot path (`append_many`).
_HEAD_ROW = Statement(sa.text("SELECT seq, mac FROM audit_entries ORDER BY seq DESC LIMIT 1"))
_INSERT = insert_statement(
    audit_entries,
    (
        "seq",
        "at",
        "action",
        "decision",
        "principal_id",
        "run_id",
        "tool_name",
        "body",
        "prev_mac",
        "mac",
    ),
)
_PG_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")


async def _head(conn: AsyncConnection) -> tuple[int, str]:
    """The number of entries and the last MAC (GENESIS for an empty log)."""
    last = (await conn.execute(_HEAD)).one_or_none()
    return (0, GENESIS) if last is None else (int(last.seq) + 1, str(last.mac))


_READ_CHAIN = (
    "SELECT seq, at, action, decision, principal_id, run_id, tool_name, body, prev_mac, mac "
    "FROM audit_entries ORDER BY seq"
)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _columns(row: StoredEntry) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "action": row.action,
        "decision": row.decision,
        "principal_id": row.principal_id,
        "run_id": row.run_id,
        "tool_name": row.tool_name,
        "body": row.body,
        "prev_mac": row.prev_mac,
        "mac": row.mac,
    }


def _from_row(row: sa.RowMapping) -> StoredEntry:
    return StoredEntry(
        seq=int(row["seq"]),
        at=row["at"],  # aware UTC from either backend (the table's UtcDateTime)
        action=row["action"],
        decision=row["decision"],
        principal_id=row["principal_id"],
        run_id=row["run_id"],
        tool_name=row["tool_name"],
        body=row["body"],
        prev_mac=row["prev_mac"],
        mac=row["mac"],
    )


def _parse_body(body: str) -> AuditEntry:
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("an audit body must be a JSON object")
    return AuditEntry(
        at=datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00")),
        action=str(data["action"]),
        decision=data["decision"],
        principal_id=data.get("principal_id"),
        reason=str(data.get("reason", "")),
        run_id=data.get("run_id"),
        tool_name=data.get("tool_name"),
        stage=cast("Stage | None", data.get("stage")),
        details=dict(data.get("details") or {}),
    )


def _text_opt(text: str | None) -> str | None:
    return None if text is None else clean(text)


def _utc_iso(at: datetime) -> str:
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.isoformat(timespec="microseconds")
