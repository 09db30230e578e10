"""`DurableEngine`: the one seam to DBOS Transact. Nothing outside `bastion.durable` imports DBOS.

A run is a DBOS workflow whose id is the run id (so starting the same run twice attaches to it);
its model calls, tool calls, gate decisions, recovery decisions and sleeps are steps
(`bastion.durable.steps`), checkpointed in Bastion's database (`bastion.durable.journal`, which
says why not as DBOS steps). DBOS keeps the workflows themselves (status, queue, owner, messages)
in its *system database*: SQLite on one machine, PostgreSQL when workers share the work.
Bastion's run store (`SqlMemory`) stays the source of truth users see; it is written
idempotently, so a replayed run leaves it as the first execution did.

DBOS's sharp edges, and what is done about each here:

* SQLite is left in rollback-journal mode: the engine given to DBOS sets WAL and
  ``synchronous=NORMAL`` on every connection (survives kill -9; a power loss may lose the last
  transactions, i.e. re-run the last steps; ``sqlite_synchronous="FULL"`` survives that too).
* The application version defaults to a hash of the workflow sources, so any code edit would
  strand in-flight runs silently: it is pinned to `WORKFLOW_VERSION`, bumped by hand when the
  workflow's step sequence changes; runs of other versions are listed as *stranded* and can be
  resumed on this version (`stranded`, `adopt`).
* The default serializer is pickle: `JsonSerializer` stores JSON only.
* Without Conductor a restarted worker recovers only its own executor id's runs: every worker
  has a stable, unique id (`bastion.durable.workers` refuses a second live one and lets a live
  worker take over a dead one's runs).
* One DBOS instance per process: this class is the only holder, and refuses a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SetWorkflowID
from dbos._error import DBOSAwaitedWorkflowCancelledError
from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.durable import codec, workflow
from bastion.durable.codec import JsonSerializer
from bastion.durable.journal import Journal
from bastion.durable.workers import WorkerRegistry, auto_executor_id
from bastion.durable.workflow import Runner
from bastion.errors import BastionError, ConfigError
from bastion.flow.state import EventSink
from bastion.messages import AgentRequest, AgentResponse, Principal, RunStatus
from bastion.settings import Settings

logger = logging.getLogger("bastion.durable")

#: Bump when a change to the run loop changes the sequence of steps a run takes (see module doc).
#: 2: approvals (request, wait, settle) and the loading of memory context are steps of their own.
#: 3: steps are checkpointed in Bastion's journal, no longer as DBOS steps.
WORKFLOW_VERSION = "bastion-run-3"
#: Versions whose steps were DBOS steps: this version cannot replay them (`DurableAdmin.resume`).
DBOS_STEP_VERSIONS = frozenset({"bastion-run-1", "bastion-run-2"})
APP_NAME = "bastion"
RUN_QUEUE = "bastion_runs"

#: How long `DurableEngine.shutdown` waits for DBOS to record the end of runs that answered
#: (one that is not recorded by then is recovered at the next start and replays to its end).
FINISHING_TIMEOUT_S = 10.0

_CANCELLED = "This request was cancelled."


def system_database_url(settings: Settings) -> str:
    """DBOS's system database: set explicitly, else Bastion's PostgreSQL, else SQLite beside it."""
    if settings.durable.system_database_url:
        return settings.durable.system_database_url
    url = settings.database_url
    for prefix in ("postgresql+asyncpg://", "postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return f"sqlite:///{Path(settings.data_dir) / 'dbos.sqlite'}"


class _ToBastionLogs(logging.Handler):
    """Hands DBOS's log records to Bastion's logging (``bastion.dbos``).

    DBOS otherwise installs its own console handler on the stream of the moment, which writes
    around Bastion's redaction and one-line CLI output (and to a closed stream once that stream,
    say a test's captured stderr, is gone).
    """

    name = "bastion-forward"

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("bastion.dbos")
        if target.isEnabledFor(record.levelno):
            target.handle(record)


def _route_dbos_logs() -> None:
    dbos_logger = logging.getLogger("dbos")
    for handler in list(dbos_logger.handlers):
        if handler.name == "__dbos_console_log_handler__":
            dbos_logger.removeHandler(handler)
    if not any(isinstance(h, _ToBastionLogs) for h in dbos_logger.handlers):
        dbos_logger.addHandler(_ToBastionLogs())
    dbos_logger.propagate = False


def sqlite_engine(url: str, synchronous: str) -> sa.Engine:
    """A SQLite engine in WAL mode, for DBOS's system database.

    DBOS leaves SQLite in rollback-journal mode, at about 16 ms a step here.
    """
    path = url.removeprefix("sqlite:///")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


class DurableEngine:
    """Starts DBOS for this process and runs requests as durable workflows."""

    _active: DurableEngine | None = None

    def __init__(
        self,
        *,
        settings: Settings,
        store: AsyncEngine,
        clock: Clock,
        checkpoint_key: bytes,
        redact: Callable[[Any], Any] | None = None,
        on_fenced: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        #: What to do on learning that another worker took this one's runs over (`beat`).
        self.on_fenced = on_fenced or _exit_fenced
        self.url = system_database_url(settings)
        self.executor_id = settings.durable.executor_id or auto_executor_id()
        #: Where the runs' steps are checkpointed (Bastion's database, not DBOS's).
        self.journal = Journal(store, key=checkpoint_key)
        #: Applied to each run's response before DBOS stores it (no secret in its plan's args).
        self.redact = redact
        self.registry = WorkerRegistry(
            engine=store,
            clock=clock,
            executor_id=self.executor_id,
            takeover_after_s=settings.durable.takeover_after_s,
            startup_grace_s=settings.durable.startup_grace_s,
        )
        #: Set while shutting down: runs interrupted then are left to be recovered, not cancelled.
        self.stopping = False
        #: Runs this process let go of (`leave`): stopped here, left pending to be resumed.
        self._leaving: set[str] = set()
        self._heartbeats: asyncio.Task[None] | None = None
        self._engine: sa.Engine | None = None
        self._runner: Runner | None = None
        #: Whether this process takes runs from the shared queue (a worker), set before start.
        self.serve_queue = False
        #: Runs that answered and whose end DBOS is still recording (`shutdown` waits for them).
        self._finishing: set[asyncio.Future[Any]] = set()

    @property
    def launched(self) -> bool:
        """Whether DBOS runs in this process on behalf of this engine."""
        return DurableEngine._active is self

    def _config(self) -> DBOSConfig:
        config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": self.url,
            "application_version": WORKFLOW_VERSION,
            "executor_id": self.executor_id,
            "serializer": JsonSerializer(),
            "notification_listener_polling_interval_sec": self.settings.durable.polling_interval_s,
            "log_level": "WARNING",
        }
        if self.url.startswith("sqlite"):
            self._engine = sqlite_engine(self.url, self.settings.durable.sqlite_synchronous)
            config["system_database_engine"] = self._engine
        return config

    async def launch(self, runner: Runner) -> None:
        """Start DBOS with `runner` attached; runs left pending by this executor are recovered.

        Call it from the event loop that will run the workflows (DBOS adopts the running loop).

        Raises:
            ConfigError: DBOS already runs in this process for another system, or cannot start.
        """
        if DurableEngine._active is not None:
            raise ConfigError(
                "a durable AgentSystem is already running in this process: close it first "
                "(DBOS allows one per process)"
            )
        await self.registry.register()
        workflow.attach(runner, self.journal, redact=self.redact)
        self._runner = runner
        self.stopping = False
        _route_dbos_logs()
        try:
            DBOS(config=self._config())
            _route_dbos_logs()
            if not self.serve_queue:
                # Only workers take queued runs; other processes run their own and recover.
                DBOS.listen_queues([])
            DBOS.launch()
            await DBOS.register_queue_async(
                RUN_QUEUE,
                worker_concurrency=self.settings.durable.worker_concurrency,
                partition_concurrency=self.settings.durable.per_user_concurrency,
                polling_interval_sec=self.settings.durable.polling_interval_s,
            )
        except Exception as exc:
            self._teardown()
            raise ConfigError(
                f"durable execution could not start on {_masked(self.url)}: {exc}"
            ) from exc
        DurableEngine._active = self
        self._heartbeats = asyncio.create_task(self._heartbeat_loop(), name="bastion-heartbeats")
        logger.info("durable execution on %s as executor %r", _masked(self.url), self.executor_id)

    async def _heartbeat_loop(self) -> None:
        period = self.settings.durable.heartbeat_s
        while True:
            try:
                await self.beat()
            except Exception:
                # A missed beat is not fatal: the next one may pass; a long outage shows as
                # a stale heartbeat, and another worker takes over, as designed.
                logger.exception("heartbeat of executor %r failed", self.executor_id)
            await asyncio.sleep(period)  # noqa: TID251 - a real period, not a fakeable wait

    async def beat(self) -> None:
        """One heartbeat: say this process is alive, stop if it was presumed dead, take over.

        A process presumed dead (its heartbeat came later than ``takeover_after_s``, e.g. on a
        stalled machine) has had its unfinished runs handed to another worker, which may be
        running them now: going on here could run a step in two places at once. So it stops
        (`on_fenced`: by default the process exits with status 75, for its supervisor to
        restart it under the same id, which then resumes the runs it took since).
        """
        taker = await self.registry.heartbeat()
        if taker is not None:
            logger.critical(
                "executor %r was presumed dead (its heartbeat came too late) and %r took its "
                "unfinished runs over: this process stops now so that no run goes on in two "
                "places; restart it with the same id to resume the runs it took since",
                self.executor_id,
                taker,
            )
            self.on_fenced()
            return
        if self.serve_queue:
            await self.take_over_dead()

    async def take_over_dead(self) -> list[str]:
        """Claim every dead executor and re-enqueue its unfinished runs; returns those claimed."""
        claimed = []
        for dead in await self.registry.dead():
            if await self.registry.claim(dead):
                handles = await asyncio.to_thread(DBOS._recover_pending_workflows, [dead])
                logger.warning(
                    "took over %d unfinished run(s) of dead executor %r", len(handles), dead
                )
                claimed.append(dead)
        return claimed

    async def shutdown(self) -> None:
        """Stop DBOS (runs still in flight are recovered later). Safe to call twice."""
        if DurableEngine._active is not self:
            return
        self.stopping = True
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=FINISHING_TIMEOUT_S)
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
            self._heartbeats = None
        DurableEngine._active = None
        try:
            self._teardown()
        finally:
            # DBOS made its own thread pool this loop's default executor (for `asyncio.to_thread`)
            # and `destroy` shut it down: without a working one back, every later
            # `to_thread` on this loop fails ("cannot schedule new futures after shutdown").
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(thread_name_prefix="asyncio")
            )
            try:
                await self.registry.stop()
            except Exception:
                logger.exception("could not record the stop of executor %r", self.executor_id)
            finally:
                await self.journal.aclose()

    def _teardown(self) -> None:
        try:
            DBOS.destroy(destroy_registry=False)
        finally:
            if self._runner is not None:
                workflow.detach(self._runner)
                self._runner = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- runs ----------------------------------------------------------------------------------

    async def run(
        self,
        request: AgentRequest,
        *,
        deadline_at: datetime,
        on_event: EventSink | None,
        principal: Principal | None = None,
    ) -> AgentResponse:
        """Run `request` as a workflow (or attach to the run with its id) and wait for its end."""
        self._require_launched()
        if on_event is not None:
            workflow.add_sink(request.run_id, on_event)
        answer = workflow.answer(request.run_id)
        try:
            with SetWorkflowID(request.run_id), workflow.starting(request.run_id):
                handle = await DBOS.start_workflow_async(
                    workflow.run_workflow, codec.encode_run_input(request, deadline_at, principal)
                )
            try:
                data = await self._outcome(handle, answer)
            except DBOSAwaitedWorkflowCancelledError:
                return _cancelled(request.run_id)
            except asyncio.CancelledError:
                if _cancelled_elsewhere():
                    return _cancelled(request.run_id)
                # The caller gave up: the run is cancelled (a step under way in this process is
                # interrupted and the run checkpointed `cancelled`, as in process). A process
                # shutting down (`stopping`) leaves its runs to be recovered instead.
                if not self.leaves(request.run_id):
                    await asyncio.shield(self._cancel_local(request.run_id))
                raise
            except Exception as exc:
                # The workflow failed (e.g. `RunNotRecorded`), here or in another process.
                return _failed(request.run_id, exc)
        finally:
            workflow.drop_sink(request.run_id)
            workflow.forget_answer(request.run_id, answer)
        return codec.RESPONSE.validate_python(data)

    async def _outcome(self, handle: Any, answer: asyncio.Future[Any]) -> Any:
        """The run's answer: from its body here once committed, else DBOS's recorded outcome.

        A body running here hands its answer over before DBOS records the workflow's end (see
        `bastion.durable.workflow`); that record goes on in the background, and `shutdown`
        waits for it.
        """
        result: asyncio.Future[Any] = asyncio.ensure_future(handle.get_result())
        try:
            await asyncio.wait((answer, result), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            result.cancel()  # only the waiting: the workflow itself is shielded
            raise
        if result.done() or not answer.done():
            return result.result()
        self._finishing.add(result)
        result.add_done_callback(self._finished)
        return answer.result()

    def _finished(self, result: asyncio.Future[Any]) -> None:
        self._finishing.discard(result)
        if not result.cancelled() and result.exception() is not None:
            # The run answered; DBOS could not record its end: it is recovered and replays.
            logger.warning("the end of a run was not recorded: %s", result.exception())

    def leaves(self, run_id: str) -> bool:
        """Whether an interruption of the run here leaves it to be resumed (not cancelled)."""
        return self.stopping or run_id in self._leaving

    async def leave(self, run_id: str) -> None:
        """Stop running `run_id` in this process without cancelling it.

        Its workflow stays pending, as after a shutdown: a restart of this executor (or
        ``bastion runs resume``) goes on from its last checkpoint. For a process that must not
        wait, e.g. ``bastion run`` when its run pauses for an approval.
        """
        self._leaving.add(run_id)
        task = workflow.running_task(run_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _cancel_local(self, run_id: str) -> None:
        await DBOS.cancel_workflow_async(run_id)
        task = workflow.running_task(run_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def wait(self, run_id: str) -> AgentResponse:
        """Wait for a run (started here or elsewhere) to end, and return its response."""
        self._require_launched()
        handle: Any = await DBOS.retrieve_workflow_async(run_id)
        try:
            data = await handle.get_result()
        except DBOSAwaitedWorkflowCancelledError:
            return _cancelled(run_id)
        except Exception as exc:
            # The workflow failed (e.g. `RunNotRecorded`), here or in another process.
            return _failed(run_id, exc)
        return codec.RESPONSE.validate_python(data)

    def _require_launched(self) -> None:
        if not self.launched:
            raise ConfigError("durable execution is not running: start the AgentSystem first")


def _exit_fenced() -> None:
    # Not an exception: a runner must not catch it and go on. 75 is EX_TEMPFAIL: restart me.
    logging.shutdown()
    os._exit(75)


def _cancelled_elsewhere() -> bool:
    """Whether a `CancelledError` just caught came from the awaited run, not from our caller.

    A run cancelled from another process (``bastion runs cancel``) stops at its next step by
    cancelling its own workflow task, and whoever awaits that task sees a `CancelledError`
    without having been cancelled itself.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


def _cancelled(run_id: str) -> AgentResponse:
    return AgentResponse(
        run_id=run_id, status=RunStatus.CANCELLED, message=_CANCELLED, error="cancelled"
    )


def _failed(run_id: str, exc: Exception) -> AgentResponse:
    """The response for a run whose workflow failed (the run itself could not go on)."""
    logger.error("run %s failed: %s", run_id, exc)
    message = exc.user_message if isinstance(exc, BastionError) else BastionError.user_message
    return AgentResponse(run_id=run_id, status=RunStatus.FAILED, message=message, error=str(exc))


def _masked(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


__all__ = ["DurableEngine", "sqlite_engine", "system_database_url"]
