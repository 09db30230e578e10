"""`DurableAdmin`: manage durable runs from outside the process that runs them.

Built on DBOS's client, which talks only to the system database: it never launches DBOS, so it
never recovers (and then abandons) runs the way a short-lived process launching DBOS would. The
runs' step checkpoints are read from Bastion's database (`bastion.durable.journal`). The
CLI's ``runs``, ``run --detach`` and ``worker`` plumbing, and later the HTTP API, go through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOSClient
from dbos._error import DBOSNonExistentWorkflowError

from bastion.durable import codec
from bastion.durable.engine import (
    APP_NAME,
    DBOS_STEP_VERSIONS,
    RUN_QUEUE,
    WORKFLOW_VERSION,
    sqlite_engine,
    system_database_url,
)
from bastion.durable.journal import Journal
from bastion.durable.workflow import WORKFLOW_NAME
from bastion.errors import ConfigError
from bastion.messages import AgentRequest
from bastion.settings import Settings
from bastion.storage.engine import create_engine


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowInfo:
    """A run as DBOS sees it."""

    run_id: str
    status: str
    app_version: str | None
    executor_id: str | None
    created_at: datetime | None

    @property
    def stranded(self) -> bool:
        """Left unfinished by another workflow version: no worker of this version takes it."""
        return self.status in ("PENDING", "ENQUEUED") and self.app_version != WORKFLOW_VERSION


class DurableAdmin:
    """Queue, list, cancel, resume and message durable runs through the system database."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.url = system_database_url(settings)

    @contextmanager
    def _client(self, *, migrate: bool = False) -> Iterator[DBOSClient]:
        engine = (
            sqlite_engine(self.url, self.settings.durable.sqlite_synchronous)
            if self.url.startswith("sqlite")
            else None
        )
        try:
            client = DBOSClient(
                system_database_url=None if engine is not None else self.url,
                system_database_engine=engine,
                serializer=codec.JsonSerializer(),
                application_name=APP_NAME,
            )
        except Exception as exc:
            if engine is not None:
                engine.dispose()
            raise ConfigError(f"cannot reach the durable run database: {exc}") from exc
        try:
            if migrate:
                # A run queued before any worker ever started finds no DBOS tables yet.
                client._sys_db.run_migrations()
            yield client
        finally:
            client.destroy()
            if engine is not None:
                engine.dispose()

    async def enqueue(self, request: AgentRequest, *, deadline_at: datetime) -> str:
        """Queue a run for a worker; returns its id. Queuing the same run id twice is a no-op."""

        def go() -> str:
            with self._client(migrate=True) as client:
                return client.enqueue(
                    {
                        "queue_name": RUN_QUEUE,
                        "workflow_name": WORKFLOW_NAME,
                        "workflow_id": request.run_id,
                        "app_version": WORKFLOW_VERSION,
                        "queue_partition_key": request.user_id,
                    },
                    codec.encode_run_input(request, deadline_at),
                ).get_workflow_id()

        return await asyncio.to_thread(go)

    async def runs(self, *, status: str | None = None, limit: int = 100) -> list[WorkflowInfo]:
        """Runs as DBOS knows them, newest first."""

        def go() -> list[WorkflowInfo]:
            with self._client() as client:
                found = client.list_workflows(
                    status=status,
                    name=WORKFLOW_NAME,
                    limit=limit,
                    sort_desc=True,
                    load_input=False,
                    load_output=False,
                )
            return [
                WorkflowInfo(
                    run_id=w.workflow_id,
                    status=str(w.status),
                    app_version=w.app_version,
                    executor_id=w.executor_id,
                    created_at=_from_epoch_ms(w.created_at),
                )
                for w in found
            ]

        return await asyncio.to_thread(go)

    async def stranded(self) -> list[WorkflowInfo]:
        """Unfinished runs of another workflow version (see `bastion.durable.engine`)."""
        return [w for w in await self.runs(limit=10_000) if w.stranded]

    async def cancel(self, run_id: str) -> None:
        """Cancel a run: it stops at its next step boundary and ends `cancelled`.

        Raises:
            KeyError: no run has this id.
        """

        def go() -> None:
            with self._client() as client:
                client.cancel_workflow(run_id)

        try:
            await asyncio.to_thread(go)
        except DBOSNonExistentWorkflowError as exc:
            raise KeyError(run_id) from exc

    async def resume(self, run_id: str) -> None:
        """Resume a cancelled, failed-to-start or stranded run under this workflow version.

        Its completed steps are not re-run. Resume a stranded run only if this version still takes
        the same steps (a version bump that reorders steps makes DBOS refuse the replay, and the
        run then ends failed); otherwise cancel it.

        Raises:
            KeyError: no unfinished run has this id.
            ConfigError: the run was started by a Bastion that checkpointed its steps in DBOS
                (workflow versions 1 and 2), which this one cannot replay.
        """

        def go() -> None:
            with self._client() as client:
                status = client._sys_db.tables.workflow_status
                with client._sys_db.engine.begin() as connection:
                    version = connection.execute(
                        sa.select(status.c.application_version).where(
                            status.c.workflow_uuid == run_id
                        )
                    ).scalar()
                    if version in DBOS_STEP_VERSIONS:
                        raise ConfigError(
                            f"run {run_id} was started by an earlier Bastion ({version}) whose "
                            "checkpoints this version cannot replay: finish it with that version, "
                            "or cancel it"
                        )
                    found = connection.execute(
                        sa.update(status)
                        .where(status.c.workflow_uuid == run_id)
                        .where(status.c.status.notin_(["SUCCESS", "ERROR"]))
                        .values(application_version=WORKFLOW_VERSION)
                    ).rowcount
                if not found:
                    raise KeyError(run_id)
                client.resume_workflow(run_id)

        await asyncio.to_thread(go)

    async def forget(self, run_ids: Sequence[str], *, user_id: str) -> int:
        """Delete the checkpoints of `run_ids` and of every queued run of `user_id`.

        A run's checkpoints hold its request and each step's output: a user who is forgotten
        (``bastion memory forget``) must be gone from them too. Returns how many runs' records
        were deleted (with their journaled steps, messages and events).
        """

        def go() -> list[str]:
            with self._client(migrate=True) as client:
                status = client._sys_db.tables.workflow_status
                wanted = set(run_ids)
                with client._sys_db.engine.begin() as connection:
                    queued = connection.execute(
                        sa.select(status.c.workflow_uuid).where(
                            status.c.queue_partition_key == user_id
                        )
                    )
                    wanted.update(row[0] for row in queued)
                    found = [
                        row[0]
                        for row in connection.execute(
                            sa.select(status.c.workflow_uuid).where(
                                status.c.workflow_uuid.in_(sorted(wanted))
                            )
                        )
                    ]
                if found:
                    client.delete_workflows(found, delete_children=True)
                return found

        found = await asyncio.to_thread(go)
        async with self._journal() as journal:
            await journal.forget(found)
        return len(found)

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpointed steps: id, name, start and completion (epoch ms)."""
        async with self._journal() as journal:
            found = await journal.steps(run_id)
        return [
            {
                "step_id": entry.seq,
                "name": entry.name,
                "started_ms": entry.started_ms,
                "completed_ms": entry.completed_ms,
            }
            for entry in found
        ]

    @asynccontextmanager
    async def _journal(self) -> AsyncIterator[Journal]:
        engine = create_engine(self.settings.database_url)
        journal = Journal(engine)
        try:
            yield journal
        finally:
            try:
                await journal.aclose()
            finally:
                await engine.dispose()

    async def send(self, run_id: str, topic: str, message: dict[str, Any], *, key: str) -> None:
        """Deliver `message` to a run waiting on `topic`, once per `key` (retries are no-ops).

        Raises:
            KeyError: no run has this id.
        """

        def go() -> None:
            with self._client() as client:
                client.send(run_id, message, topic, idempotency_key=key)

        try:
            await asyncio.to_thread(go)
        except DBOSNonExistentWorkflowError as exc:
            raise KeyError(run_id) from exc


def _from_epoch_ms(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value) / 1000, tz=UTC)
