"""Every Bastion table, in one `MetaData`, in SQLAlchemy Core, portable to SQLite and PostgreSQL.

The tables are defined once here and created by `bastion.storage.migrations`; stores import the
`Table` objects and write Core statements against them (no ORM: our in-process values are frozen
dataclasses, and a store's queries should read as the SQL they run).

Two column types make the backends agree on values, not just on shapes:

* `UtcDateTime`: SQLite has no time zones and would silently drop an offset (storing 12:00+02:00
  as 12:00). Values are converted to UTC on the way in, and come back aware UTC from both backends;
  a naive datetime is refused, since nobody can tell which zone it meant.
* `Money`: an exact `Decimal` both ways. PostgreSQL stores an unbounded ``NUMERIC`` (exact, and
  SQL can sum it); SQLite, whose ``NUMERIC`` is a float, stores the decimal's text. Unbounded rather
  than ``NUMERIC(18, 8)`` because a single token of a cheap model costs less than 1e-8 USD, and
  rounding would make a ledger disagree with the sum of its entries.

JSON columns hold what `bastion.storage.codec` produces (JSONB on PostgreSQL).
Status columns hold a `StrEnum`'s value as plain text, so adding a status needs no migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC and read back as aware UTC on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} cannot be stored: pass an aware UTC "
                "datetime (from the injected Clock's now())"
            )
        value = value.astimezone(UTC)
        # SQLite's DATETIME ignores tzinfo; strip it so nothing depends on how it ignores it.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(sa.TypeDecorator[Decimal]):
    """An exact `Decimal` amount: unbounded ``NUMERIC`` on PostgreSQL, text on SQLite."""

    impl = sa.String(64)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(asdecimal=True))
        return dialect.type_descriptor(sa.String(64))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(
                f"money must be a Decimal, not {type(value).__name__} ({value!r}): floats are "
                "inexact; build it with Decimal('0.01')"
            )
        amount = Decimal(value)
        if not amount.is_finite():
            raise ValueError(f"money must be a finite amount, not {amount}")
        return amount if dialect.name == "postgresql" else str(amount)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


#: JSON, stored as JSONB on PostgreSQL (compact, indexable) and as text on SQLite.
Json = sa.JSON().with_variant(JSONB(), "postgresql")

#: A string identifier: run ids, user ids, session ids, principal ids.
_Id = sa.String(255)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Which migrations have been applied: one row per version (see `bastion.storage.migrations`).
schema_version = sa.Table(
    "bastion_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column(
        "applied_at", UtcDateTime, nullable=False, server_default=sa.func.current_timestamp()
    ),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", _Id, primary_key=True),
    sa.Column("user_id", _Id, nullable=False),
    sa.Column("session_id", _Id, nullable=False),
    sa.Column("request_message", sa.Text, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("answer", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("total_cost_usd", Money, nullable=False),
    sa.Column("model", _Id),
    # A user's history, newest first; and the dashboard's "every run, newest first" / "by status".
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "created_at"),
)


def _run_fk() -> sa.ForeignKey:
    return sa.ForeignKey(runs.c.run_id, ondelete="CASCADE")


run_plans = sa.Table(
    "run_plans",
    metadata,
    sa.Column("run_id", _Id, _run_fk(), primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("plan", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

run_steps = sa.Table(
    "run_steps",
    metadata,
    sa.Column("run_id", _Id, _run_fk(), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("record", Json, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    #: The tool actually run (a fallback's name when one replaced the planned tool).
    sa.Column("tool_name", _Id, nullable=False),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("run_id", _Id, _run_fk(), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("data", Json, nullable=False),
)

# SQLite only autoincrements an "INTEGER PRIMARY KEY"; PostgreSQL gets a 64-bit identity.
_Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: Not tied to `runs` by a foreign key: a session's history outlives the runs that wrote it.
session_turns = sa.Table(
    "session_turns",
    metadata,
    sa.Column("id", _Serial, primary_key=True, autoincrement=True),
    sa.Column("session_id", _Id, nullable=False),
    sa.Column("user_id", _Id, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("run_id", _Id),
    sa.Index(None, "session_id", "id"),
)

#: Append-only and hash-chained; written by `bastion.gate.audit`, whose code relies on these names.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", _Serial, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("principal_id", _Id),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", _Id),
    sa.Column("tool_name", _Id),
    sa.Column("stage", sa.String(16)),
    sa.Column("details", Json, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# -- v2: the Permissions Gate's tables (migration 2) --------------------------------------------

#: The keyed audit chain, written by `bastion.gate.audit`. ``seq`` is the entry's position (0, 1,
#: ...): as the primary key it makes a fork impossible (two entries can never share a position).
#: ``body`` is the entry's canonical JSON, exactly the text its MAC covers; the other columns
#: repeat a few of its fields for `bastion audit show`'s filters, and verify checks they agree.
#: (The v1 ``audit_log`` above holds the unkeyed entries written before migration 2.)
audit_entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("principal_id", _Id),
    sa.Column("run_id", _Id),
    sa.Column("tool_name", _Id),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("prev_mac", sa.String(64), nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
    sa.Index(None, "run_id"),
    sa.Index(None, "principal_id"),
    sa.Index(None, "tool_name"),
)

#: API keys, stored as an HMAC of the key (`bastion.gate.keys`); the key itself is never stored.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("principal_id", _Id, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime),
    sa.Column("revoked_at", UtcDateTime),
    sa.Index(None, "principal_id"),
)

#: Principals kept in the database (service accounts made by ``bastion keys create --scope``),
#: besides those an app declares in code or in its principals file.
principals = sa.Table(
    "principals",
    metadata,
    sa.Column("principal_id", _Id, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("roles", Json, nullable=False),
    sa.Column("scopes", Json, nullable=False),
    sa.Column("display_name", sa.String(255)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

#: Durable workers (`bastion.durable.workers`): one row per executor id, its heartbeat, and who
#: took over its runs when it died for good.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("executor_id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("heartbeat_at", UtcDateTime, nullable=False),
    sa.Column("stopped_at", UtcDateTime),
    sa.Column("taken_over_by", sa.String(64)),
    sa.Column("taken_over_at", UtcDateTime),
)

#: Durable runs' step journal (`bastion.durable.journal`, migration 8): each checkpointed step's
#: output, by run and position in the run's sequence of steps, written once (the key refuses a
#: second writer: an execution that finds its step already written by another one stops).
#: ``execution`` is the token of the workflow execution that wrote it (an intent written by an
#: earlier execution means that execution died before it finished the call). ``output`` is JSON.
durable_steps = sa.Table(
    "durable_steps",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("execution", sa.String(64), nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("completed_ms", sa.BigInteger, nullable=False),
)

# -- v6: long-term memory (migration 6) ---------------------------------------------------------

#: Long-term facts about one user (`bastion.memory.facts`), written by a tool or by the app.
#: ``source_key`` makes a write idempotent (a tool step's idempotency key): writing the same key
#: for the same user again keeps the first row. Full-text search is added by the migration in each
#: backend's own way (an FTS5 table on SQLite, a GIN expression index on PostgreSQL).
memory_facts = sa.Table(
    "memory_facts",
    metadata,
    sa.Column("id", _Serial, primary_key=True, autoincrement=True),
    sa.Column("user_id", _Id, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("source_key", _Id),
    sa.Column("run_id", _Id),
    sa.Column("created_at", UtcDateTime, nullable=False),
    #: None: kept until deleted (no TTL was configured when it was written).
    sa.Column("expires_at", UtcDateTime),
    sa.UniqueConstraint("user_id", "source_key"),
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "expires_at"),
)

#: The model's summary of a session's older turns, up to and including turn ``through_turn_id``;
#: reused until more turns fall out of the verbatim window (`bastion.memory.summaries`).
memory_summaries = sa.Table(
    "memory_summaries",
    metadata,
    sa.Column("user_id", _Id, primary_key=True),
    sa.Column("session_id", _Id, primary_key=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("through_turn_id", sa.BigInteger, nullable=False),
    sa.Column("turns_covered", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# -- v5: human approvals (migration 5) ----------------------------------------------------------

#: Human approvals of risky calls (`bastion.gate.approvals`): one row per call that paused a run,
#: bound to the call by ``tool_name`` and ``args_hash``. ``status`` moves pending → approved →
#: used, or pending → denied | expired, only by conditional updates (a decision is final).
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("approval_id", sa.String(64), primary_key=True),
    sa.Column("run_id", _Id, nullable=False),
    sa.Column("step_key", _Id, nullable=False),
    sa.Column("tool_name", _Id, nullable=False),
    sa.Column("args_hash", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("requested_by", _Id, nullable=False),
    sa.Column("requested_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_by", _Id),
    sa.Column("decided_at", UtcDateTime),
    sa.Column("decision_note", sa.Text),
    sa.Column("used_at", UtcDateTime),
    sa.UniqueConstraint("run_id", "step_key"),
    sa.Index(None, "status"),
)

# -- v4: the Cost Controller's ledger (migration 4, `bastion.cost.sql`) ------------------------

#: One row per budget and window: what is settled and what is held against it. ``scope`` is
#: ``run``, ``session``, ``user`` or ``app``; ``period`` the window (``all``, ``d:2026-11-27``,
#: ``m:2026-11``), so that a new day or month starts a fresh row. Limits are not stored: they
#: come from the request and the settings at each reservation.
cost_counters = sa.Table(
    "cost_counters",
    metadata,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("subject", _Id, primary_key=True),
    sa.Column("period", sa.String(16), primary_key=True),
    sa.Column("settled_usd", Money, nullable=False),
    sa.Column("reserved_usd", Money, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

#: Every reservation (model call or priced tool call) and every denial. ``status`` is ``held``,
#: ``settled``, ``released``, ``expired`` (freed by the reconciler) or ``denied``. The id is the
#: run id and the call's number in the run, so a durable replay finds its own rows again.
cost_reservations = sa.Table(
    "cost_reservations",
    metadata,
    sa.Column("id", sa.String(300), primary_key=True),
    sa.Column("run_id", _Id, nullable=False),
    sa.Column("user_id", _Id, nullable=False),
    sa.Column("session_id", _Id, nullable=False),
    sa.Column("app", sa.String(64), nullable=False),
    sa.Column("model", _Id, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_usd", Money, nullable=False),
    sa.Column("cost_usd", Money, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    #: The counters this hold is charged to, as ``scope|subject|period`` strings.
    sa.Column("counters", Json, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime),
    #: The part of ``input_tokens`` served from the provider's prompt cache (migration 7).
    sa.Column("cached_input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Index(None, "status", "expires_at"),
    sa.Index(None, "run_id"),
    sa.Index(None, "user_id", "created_at"),
    sa.Index(None, "created_at"),
)
