"""`SqlMemory`: the default Memory Manager, on SQLite or PostgreSQL through SQLAlchemy Core.

Runs are written as they go, one small transaction per transition, plan or step (with the events
that led to it), so a run is inspectable while it is under way and nothing ever rewrites its
history: a plan revision is one row, a step record one row (replaced in place when the step is
retried), an event one row. Dataclasses go into JSON columns through `bastion.storage.codec` and
come back equal. The run writes are synchronous functions run by the database's shared writer
(`bastion.storage.writes.TransactionRunner`: on SQLite one hand-off per transaction, committed in
groups with the other writes of the process), with statements built once per table.

Reads take only what they need: `get_run` the run's header, latest plan, steps and events;
`list_runs` headers only; `load_context` the user's relevant facts, the session's stored summary
and a few pages of the newest turns (`bastion.memory.assemble`).

Long-term facts go to a `FactStore` (default `SqlFacts`, full-text search in the same database);
`forget_user` and the TTLs are in `bastion.memory.retention`.

Caller mistakes (an unknown run, a run id used twice, an event ``seq`` repeated) raise
`ValueError` naming the run; database outages propagate as SQLAlchemy errors, except at `start`,
where an unreachable database is a `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.memory.assemble import ContextPlan, assemble
from bastion.memory.facts import Fact, FactSource, FactStore
from bastion.memory.fts import SqlFacts
from bastion.memory.interface import ForgetReport, MemoryContext, MemoryManager, RunRecord
from bastion.memory.retention import forget_user, purge_turns
from bastion.messages import (
    AgentPlan,
    AgentRequest,
    AgentResponse,
    EventKind,
    RunEvent,
    RunStatus,
    StepRecord,
)
from bastion.models.interface import ChatModel
from bastion.storage.codec import (
    decode_plan,
    decode_step_record,
    encode_json_object,
    encode_plan,
    encode_step_record,
)
from bastion.storage.engine import (
    begin_write,
    create_engine,
    insert_ignore_statement,
    insert_statement,
    update_statement,
    upsert_statement,
)
from bastion.storage.migrations import migrate
from bastion.storage.reads import ReadRunner
from bastion.storage.statements import Statement
from bastion.storage.tables import run_events, run_plans, run_steps, runs, session_turns
from bastion.storage.writes import TransactionRunner


class SqlMemory(MemoryManager):
    """Sessions, runs, facts and summaries in a SQL database (SQLite or PostgreSQL).

    Use it as ``async with SqlMemory.from_url(url, clock=clock) as memory: ...``, or call `start`
    and `close` yourself.

    Args:
        engine: the database, as made by `bastion.storage.create_engine`.
        clock: stamps turns and plan revisions; decides what has expired.
        owns_engine: whether `close` disposes of `engine` (False when it is shared with other
            stores).
        facts: where long-term facts live; default `SqlFacts` on `engine` with `fact_ttl_s`.
        fact_ttl_s: how long a new fact is kept (for the default `facts`); None: until deleted.
        turn_ttl_s: turns older than this are never read, and `purge_expired` deletes them.
        facts_limit: most facts put in a context.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        owns_engine: bool = False,
        facts: FactStore | None = None,
        fact_ttl_s: float | None = None,
        turn_ttl_s: float | None = None,
        facts_limit: int = 5,
    ) -> None:
        if turn_ttl_s is not None and turn_ttl_s <= 0:
            raise ValueError(f"turn_ttl_s must be positive or None, got {turn_ttl_s}")
        if facts_limit < 0:
            raise ValueError(f"facts_limit must not be negative, got {facts_limit}")
        self._engine = engine
        self._clock = clock
        self._owns_engine = owns_engine
        self._reads = ReadRunner(engine)
        self._facts = facts or SqlFacts(
            engine=engine, clock=clock, ttl_s=fact_ttl_s, reads=self._reads
        )
        self._turn_ttl_s = turn_ttl_s
        self._facts_limit = facts_limit
        self._started = False
        self._writes: TransactionRunner | None = None

    @classmethod
    def from_url(cls, url: str, *, clock: Clock) -> SqlMemory:
        """A `SqlMemory` on its own engine for `url`, disposed of by `close`.

        Raises:
            ConfigError: the URL is bad or unsupported (see `bastion.storage.create_engine`).
        """
        return cls(engine=create_engine(url), clock=clock, owns_engine=True)

    @property
    def engine(self) -> AsyncEngine:
        """The engine this memory reads and writes through."""
        return self._engine

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bring the schema up to date (a no-op when it is); safe to call twice.

        Raises:
            ConfigError: the database cannot be reached, or its schema is newer than this Bastion.
        """
        try:
            async with self._engine.connect():
                pass
        except Exception as exc:  # each driver raises its own errors on connect (asyncpg's bare)
            url = self._engine.url.render_as_string(hide_password=True)
            raise ConfigError(
                f"cannot connect to the database {url!r}: {exc!r}. Check that it is running and "
                "that the URL, user and permissions are right"
            ) from exc
        await migrate(self._engine)
        if self._writes is None:
            self._writes = TransactionRunner(self._engine)
        self._started = True

    async def close(self) -> None:
        """Stop; dispose of the engine if this memory owns it. Safe to call twice."""
        self._started = False
        writes, self._writes = self._writes, None
        if writes is not None:
            await writes.aclose()
        await self._reads.aclose()
        if self._owns_engine:
            await self._engine.dispose()

    # -- sessions ------------------------------------------------------------------------------

    async def load_context(
        self,
        request: AgentRequest,
        *,
        token_budget: int,
        reserved_tokens: int = 0,
        model: ChatModel | None = None,
    ) -> MemoryContext:
        """The user's relevant facts, the session's summary and recent turns, within budget.

        Only facts of `request`'s user, and turns of its session *and* user, are read: a session
        id guessed or reused by another user reveals nothing. See `bastion.memory.assemble`.

        Raises:
            ValueError: a budget is negative.
        """
        self._check_started()
        plan = ContextPlan(
            request=request,
            token_budget=token_budget,
            reserved_tokens=reserved_tokens,
            facts_limit=self._facts_limit,
            turns_since=self._turns_cutoff(),
        )
        return await assemble(
            self._engine, self._facts, plan, clock=self._clock, model=model, reads=self._reads
        )

    # -- long-term facts and retention ---------------------------------------------------------

    async def remember(
        self,
        user_id: str,
        content: str,
        *,
        source: FactSource = "app",
        source_key: str | None = None,
        run_id: str | None = None,
    ) -> Fact:
        """Store a fact about `user_id`; a ``source_key`` already stored returns that fact.

        Raises:
            ValueError: the fact is empty or too long.
        """
        self._check_started()
        return await self._facts.remember(
            user_id, content, source=source, source_key=source_key, run_id=run_id
        )

    async def recall(self, user_id: str, query: str, *, limit: int = 5) -> list[Fact]:
        """`user_id`'s facts matching `query`'s words, most relevant first."""
        self._check_started()
        return await self._facts.search(user_id, query, limit=limit)

    async def forget_user(self, user_id: str) -> ForgetReport:
        """Delete everything about `user_id` (see `bastion.memory.retention`).

        Raises:
            ValueError: `user_id` is empty.
        """
        self._check_started()
        report = await forget_user(self._engine, user_id)
        if not isinstance(self._facts, SqlFacts):  # facts kept elsewhere go too
            gone = await self._facts.forget_facts(user_id)
            if gone:
                report.deleted["facts"] = report.deleted.get("facts", 0) + gone
        return report

    async def purge_expired(self) -> int:
        """Delete expired facts, and turns and summaries older than the turn TTL."""
        self._check_started()
        removed = await self._facts.purge_expired()
        cutoff = self._turns_cutoff()
        if cutoff is not None:
            async with begin_write(self._engine) as connection:
                removed += await purge_turns(connection, before=cutoff)
        return removed

    def _turns_cutoff(self) -> datetime | None:
        if self._turn_ttl_s is None:
            return None
        return self._clock.now() - timedelta(seconds=self._turn_ttl_s)

    async def persist_turns(self, request: AgentRequest, response: AgentResponse) -> None:
        """Append the user's message, then the answer, to the session (one transaction).

        Idempotent per run: a run whose turns are already recorded (a durable replay of its last
        stage) appends nothing.
        """
        self._check_started()
        now = self._clock.now()
        common = {
            "session_id": request.session_id,
            "user_id": request.user_id,
            "at": now,
            "run_id": request.run_id,
        }

        def write(connection: sa.Connection) -> None:
            if _TURN_OF_RUN.rows(connection, {"run_id": request.run_id}):
                return
            # Two statements, not one executemany, so that the answer's id is surely the higher.
            _INSERT_TURN.execute(connection, {"role": "user", "content": request.message, **common})
            _INSERT_TURN.execute(
                connection, {"role": "assistant", "content": response.message, **common}
            )

        await self._write(write)

    # -- runs ----------------------------------------------------------------------------------

    async def create_run(
        self, request: AgentRequest, *, at: datetime, events: Sequence[RunEvent] = ()
    ) -> None:
        """Insert the run in status ``admitted``, and `events`, in one transaction.

        Creating again a run that exists for the same user, session and message is a no-op (a
        durable replay re-enters the run from its start; `events` are then appended as
        `append_events` would).

        Raises:
            ValueError: a run with this id exists for another request.
        """
        self._check_started()
        row = {
            "run_id": request.run_id,
            "user_id": request.user_id,
            "session_id": request.session_id,
            "request_message": request.message,
            "status": RunStatus.ADMITTED.value,
            "created_at": at,
            "updated_at": at,
            "total_cost_usd": Decimal(0),
        }
        rows = _event_rows(events)
        columns = tuple(row)

        def write(connection: sa.Connection) -> None:
            insert_statement(runs, columns).execute(connection, row)
            self._insert_events(connection, rows)

        try:
            await self._write(write)
        except IntegrityError as exc:
            async with self._engine.connect() as connection:
                existing = (
                    await connection.execute(
                        sa.select(runs.c.user_id, runs.c.session_id, runs.c.request_message).where(
                            runs.c.run_id == request.run_id
                        )
                    )
                ).one_or_none()
            same = (request.user_id, request.session_id, request.message)
            if existing is not None and tuple(existing) == same:
                await self.append_events(events)
                return
            raise ValueError(
                f"run {request.run_id!r} already exists: every request needs a fresh run_id"
            ) from exc

    async def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        at: datetime,
        answer: str | None = None,
        error: str | None = None,
        total_cost_usd: Decimal | None = None,
        model: str | None = None,
        events: Sequence[RunEvent] = (),
    ) -> None:
        """Record a transition, and `events`, in one transaction.

        Fields left as None keep their stored value.

        Raises:
            ValueError: no run has this id.
        """
        self._check_started()
        values: dict[str, Any] = {"status": status.value, "updated_at": at}
        optional = {
            "answer": answer,
            "error": error,
            "total_cost_usd": total_cost_usd,
            "model": model,
        }
        values.update({name: value for name, value in optional.items() if value is not None})
        rows = _event_rows(events)

        def write(connection: sa.Connection) -> None:
            update = update_statement(runs, tuple(values), keys=("run_id",))
            if update.execute(connection, {**values, "k_run_id": run_id}) == 0:
                raise ValueError(f"cannot update run {run_id!r}: no such run (create_run it first)")
            self._insert_events(connection, rows)

        try:
            await self._write(write)
        except IntegrityError as exc:
            raise await self._integrity_error({run_id}, "events", str(exc.orig)) from exc

    async def save_plan(
        self, run_id: str, plan: AgentPlan, *, events: Sequence[RunEvent] = ()
    ) -> None:
        """Keep `plan` as revision ``plan.revision`` of the run, and `events`, in one transaction.

        Saving a revision again replaces it.

        Raises:
            ValueError: no run has this id.
        """
        self._check_started()
        row = {
            "run_id": run_id,
            "revision": plan.revision,
            "plan": encode_plan(plan),
            "created_at": self._clock.now(),
        }
        await self._upsert(
            run_plans, row, keys=("run_id", "revision"), what="a plan", events=events
        )

    async def save_step(
        self, run_id: str, index: int, record: StepRecord, *, events: Sequence[RunEvent] = ()
    ) -> None:
        """Insert the run's `index`-th step record, and `events`, in one transaction.

        Saving a step again (a retried step) replaces it.

        Raises:
            ValueError: `index` is negative, or no run has this id.
        """
        self._check_started()
        if index < 0:
            raise ValueError(f"step index must not be negative, got {index}")
        row = {
            "run_id": run_id,
            "idx": index,
            "record": encode_step_record(record),
            "status": record.status.value,
            "tool_name": record.tool_name or record.step.tool_name,
        }
        await self._upsert(
            run_steps, row, keys=("run_id", "idx"), what=f"step {index}", events=events
        )

    async def append_events(self, events: Sequence[RunEvent]) -> None:
        """Append `events` in one statement; an empty sequence writes nothing.

        An event whose ``seq`` is already recorded for its run is dropped and the stored one kept:
        a durable replay of a run emits its events again and must not duplicate them.

        Raises:
            ValueError: an event names an unknown run.
        """
        self._check_started()
        if not events:
            return
        rows = _event_rows(events)
        try:
            await self._write(lambda connection: self._insert_events(connection, rows))
        except IntegrityError as exc:
            raise await self._integrity_error(
                {e.run_id for e in events}, "events", "an event names an unknown run"
            ) from exc

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its latest plan, its steps by index and its events by ``seq``."""
        self._check_started()
        async with self._engine.connect() as connection:
            header = (
                await connection.execute(sa.select(runs).where(runs.c.run_id == run_id))
            ).one_or_none()
            if header is None:
                return None
            plan = await connection.scalar(
                sa.select(run_plans.c.plan)
                .where(run_plans.c.run_id == run_id)
                .order_by(run_plans.c.revision.desc())
                .limit(1)
            )
            steps = await connection.scalars(
                sa.select(run_steps.c.record)
                .where(run_steps.c.run_id == run_id)
                .order_by(run_steps.c.idx)
            )
            events = await connection.execute(
                sa.select(run_events)
                .where(run_events.c.run_id == run_id)
                .order_by(run_events.c.seq)
            )
            return _run_record(
                header,
                plan=None if plan is None else decode_plan(plan),
                steps=tuple(decode_step_record(s) for s in steps),
                events=tuple(_run_event(e) for e in events),
            )

    async def list_runs(
        self, *, user_id: str | None = None, status: RunStatus | None = None, limit: int = 50
    ) -> list[RunRecord]:
        """Run headers (no plan, steps or events), newest first.

        Raises:
            ValueError: `limit` is below 1.
        """
        self._check_started()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.run_id.desc())
        if user_id is not None:
            query = query.where(runs.c.user_id == user_id)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        async with self._engine.connect() as connection:
            rows = await connection.execute(query.limit(limit))
            return [_run_record(row) for row in rows]

    # -- helpers -------------------------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError(
                "SqlMemory is not started: await memory.start() (or use 'async with memory') "
                "before using it"
            )

    async def _write(self, fn: Callable[[sa.Connection], None]) -> None:
        assert self._writes is not None  # set by start(), checked by _check_started()
        await self._writes.run(fn)

    def _insert_events(self, connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            _INSERT_EVENTS.execute(connection, rows)

    async def _upsert(
        self,
        table: sa.Table,
        row: dict[str, Any],
        *,
        keys: Sequence[str],
        what: str,
        events: Sequence[RunEvent] = (),
    ) -> None:
        rows = _event_rows(events)
        columns = tuple(row)

        def write(connection: sa.Connection) -> None:
            upsert_statement(table, columns, keys=tuple(keys)).execute(connection, row)
            self._insert_events(connection, rows)

        try:
            await self._write(write)
        except IntegrityError as exc:
            raise await self._integrity_error({row["run_id"]}, what, str(exc.orig)) from exc

    async def _integrity_error(
        self, run_ids: Collection[str], what: str, otherwise: str
    ) -> ValueError:
        """Explain a failed write: most often its run does not exist (a foreign key failed)."""
        async with self._engine.connect() as connection:
            known = set(
                await connection.scalars(sa.select(runs.c.run_id).where(runs.c.run_id.in_(run_ids)))
            )
        unknown = sorted(set(run_ids) - known)
        if unknown:
            return ValueError(f"cannot save {what}: no such run {unknown} (create_run it first)")
        return ValueError(f"cannot save {what} for run(s) {sorted(run_ids)}: {otherwise}")


_TURN_OF_RUN = Statement(sa.text("SELECT id FROM session_turns WHERE run_id = :run_id LIMIT 1"))
_INSERT_TURN = insert_statement(
    session_turns, ("session_id", "user_id", "at", "run_id", "role", "content")
)
_INSERT_EVENTS = insert_ignore_statement(
    run_events, ("run_id", "seq", "kind", "at", "data"), keys=("run_id", "seq")
)


def _event_rows(events: Sequence[RunEvent]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": e.run_id,
            "seq": e.seq,
            "kind": e.kind.value,
            "at": e.at,
            "data": encode_json_object(e.data),
        }
        for e in events
    ]


def _run_record(
    row: sa.Row[Any],
    *,
    plan: AgentPlan | None = None,
    steps: tuple[StepRecord, ...] = (),
    events: tuple[RunEvent, ...] = (),
) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        user_id=row.user_id,
        session_id=row.session_id,
        request_message=row.request_message,
        status=RunStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        answer=row.answer,
        error=row.error,
        total_cost_usd=row.total_cost_usd,
        model=row.model,
        plan=plan,
        steps=steps,
        events=events,
    )


def _run_event(row: sa.Row[Any]) -> RunEvent:
    return RunEvent(
        run_id=row.run_id, seq=row.seq, kind=EventKind(row.kind), at=row.at, data=row.data
    )
