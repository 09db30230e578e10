"""`AgentSystem`: holds the eight components and runs requests through admit → execute → respond.

The only module that names concrete classes (in `from_settings`); everything else talks to the
components' protocols. `run()` never raises (but for cancellation): every run ends in a terminal
status with a message for the end user, and an unexpected error is logged with the run id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from bastion.clock import Clock, SystemClock
from bastion.cost.interface import CostController
from bastion.errors import (
    AdmissionError,
    ApprovalExpired,
    ConfigError,
    RunNotRecorded,
    Superseded,
)
from bastion.evaluator.interface import Evaluator
from bastion.flow.admit import admit
from bastion.flow.checkpoints import Checkpoints, InProcess
from bastion.flow.components import Components
from bastion.flow.execute import Execution, ExecutionResult, Stopped, stopped_by
from bastion.flow.inbox import Inbox, LocalInbox
from bastion.flow.respond import AnswerComposer, default_answer, respond
from bastion.flow.state import EventSink, RunState
from bastion.gate.approvals import Approval, ApprovalStore
from bastion.gate.interface import ArgPolicy, PermissionsGate
from bastion.gate.redact import Redactor
from bastion.gate.redacting import redact_response, redacting_sink
from bastion.memory.interface import MemoryManager
from bastion.messages import AgentRequest, AgentResponse, Principal, RunStatus
from bastion.models.interface import ChatModel
from bastion.planner.interface import Planner
from bastion.recovery.interface import RecoveryHandler
from bastion.resilience.audit import audit_sink
from bastion.resilience.breaker import BreakerBoard, BreakerState
from bastion.resilience.limits import Limits
from bastion.resilience.wiring import build_resilience
from bastion.router.interface import ToolRouter, ToolSpec
from bastion.sandbox.interface import ExecutionSandbox
from bastion.settings import Settings

if TYPE_CHECKING:
    from bastion.durable import DurableEngine

logger = logging.getLogger("bastion")

_UNEXPECTED = "Sorry, something went wrong on our side while handling your request."
_TOO_LONG = "Sorry, this request took too long and was stopped. Please try again."


class AgentSystem:
    """A production agent: the eight components, wired. Use as ``async with AgentSystem(...)``.

    Args:
        gate: authenticates callers and authorizes each tool call.
        cost: keeps every run within its budget.
        memory: persists sessions and runs; assembles the planner's context.
        planner: turns a request into a plan of tool calls.
        router: the registered tools.
        sandbox: runs one tool call in isolation.
        evaluator: judges each step's outcome.
        recovery: decides what to do about a failure.
        model: the model the planner asks (already wrapped with its breaker, if any).
        settings: limits for runs, planning and recovery.
        clock: the source of time.
        answer: words the final answer from the step results.
        breakers: the breaker board, for status displays (optional).
        redactor: hides secrets in the events shown live and the response returned (what is
            stored goes through `bastion.gate.RedactingMemory`, which `from_settings` wires).
        durable: runs each request as a durable workflow (DBOS); the components must then be
            wrapped by `bastion.durable.steps` so their calls are checkpointed steps.
        inbox: where a paused run receives a person's decision (default: in process).
        checkpoints: how the flow's units of work are made durable (default: in process).
        approvals: human approvals of calls a policy holds (None: such calls are denied).
        limits: per-user and per-app rate limits checked at admission (None: none).
    """

    def __init__(
        self,
        *,
        gate: PermissionsGate,
        cost: CostController,
        memory: MemoryManager,
        planner: Planner,
        router: ToolRouter,
        sandbox: ExecutionSandbox,
        evaluator: Evaluator,
        recovery: RecoveryHandler,
        model: ChatModel,
        settings: Settings,
        clock: Clock | None = None,
        answer: AnswerComposer = default_answer,
        breakers: BreakerBoard | None = None,
        durable: DurableEngine | None = None,
        redactor: Redactor | None = None,
        inbox: Inbox | None = None,
        checkpoints: Checkpoints | None = None,
        approvals: ApprovalStore | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.components = Components(
            gate=gate,
            cost=cost,
            memory=memory,
            planner=planner,
            router=router,
            sandbox=sandbox,
            evaluator=evaluator,
            recovery=recovery,
            model=model,
            answer=answer,
            clock=clock or SystemClock(),
            settings=settings,
            inbox=inbox or (LocalInbox() if durable is None else None),
            checkpoints=checkpoints or InProcess(),
            approvals=approvals,
            limits=limits,
        )
        self.breakers = breakers
        self.durable = durable
        self.redactor = redactor or Redactor()
        self._started = False
        self._start_lock = asyncio.Lock()
        #: Whether the store was opened for approvals alone (a CLI deciding, not running).
        self._store_open = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        tools: Iterable[ToolSpec] = (),
        principals: Iterable[Principal] = (),
        policies: Mapping[str, Sequence[ArgPolicy]] | None = None,
        answer: AnswerComposer = default_answer,
        system_prompt: str | None = None,
        default_model: str | None = None,
        model: ChatModel | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        may_see_others: Callable[[Principal], bool] | None = None,
        cascade: Sequence[ChatModel] = (),
    ) -> AgentSystem:
        """Build a system from settings with every component's default.

        Args:
            settings: the loaded configuration.
            tools: the app's tools (`ToolSpec`s, e.g. made with ``@tool``).
            principals: who may use the system, with their scopes (plus those of
                ``settings.gate.principals_file`` and, at run time, of the database).
            policies: argument-level policies per tool name.
            answer: the app's answer composer.
            system_prompt: the agent's role, shown to the model.
            default_model: ``provider:model`` used when settings name none; without either,
                the best embedded local model installed (`installed_local_model`).
            model: a ready model instance (tests); wins over names.
            cascade: ready models, cheap to strong, before those of ``settings.cost.cascade``
                (`bastion.cost.cascade`); the first plans unless `model` is given.
            clock: the source of time (a `FakeClock` in tests).
            rng: randomness for backoff jitter (seeded in tests).
            may_see_others: which principals may be shown other users' data in an answer
                (staff); by default nobody (the Evaluator's final-answer check).

        Raises:
            ConfigError: no model is configured nor installed, a name is unknown, or a tool is
                misdeclared.
        """
        # Concrete classes are named here and nowhere else (STYLE.md §1).
        from bastion.cost.pricing import PriceTable
        from bastion.cost.sql import SqlCostController
        from bastion.evaluator.default import ChecksEvaluator
        from bastion.evaluator.judge import ModelJudge
        from bastion.gate.default import PolicyGate
        from bastion.gate.redacting import AuditedCostController, RedactingMemory
        from bastion.gate.wiring import gate_from_settings
        from bastion.memory.default import SqlMemory
        from bastion.memory.embedding import EmbeddingFacts, HashingEmbedder
        from bastion.models.breaker import BreakerChatModel
        from bastion.models.fallback import FallbackChatModel
        from bastion.models.loader import default_model_name, load_model
        from bastion.models.rate_limited import RateLimitedChatModel
        from bastion.planner.default import ModelPlanner
        from bastion.recovery.default import PolicyRecovery
        from bastion.router.default import RegistryRouter
        from bastion.sandbox.breaker import BreakerSandbox
        from bastion.sandbox.cache import CachingSandbox
        from bastion.sandbox.default import TieredSandbox
        from bastion.storage.engine import create_engine

        clock = clock or SystemClock()
        # A model cascade (`bastion.cost.cascade`): its first rung is the planning model.
        rungs = [
            *cascade,
            *(load_model(n, settings=settings, clock=clock) for n in settings.cost.cascade),
        ]
        if model is None and rungs:
            model = rungs[0]
        if model is None:
            name = default_model_name(settings, default_model)
            model = load_model(name, settings=settings, clock=clock)
        registry = RegistryRouter(tools)
        registry.validate()
        router: ToolRouter = registry
        if settings.mcp.servers:
            from bastion.mcp.router import McpRouter

            router = McpRouter.from_settings(registry, settings)
        engine = create_engine(settings.database_url)
        wiring = gate_from_settings(settings, engine=engine, clock=clock, principals=principals)
        kit = build_resilience(settings, clock=clock, sink=audit_sink(wiring.audit))
        breakers = kit.board
        day_s, kept = 86400.0, settings.memory
        memory = RedactingMemory(
            SqlMemory(
                engine=engine,
                clock=clock,
                owns_engine=True,
                facts=(
                    EmbeddingFacts(
                        embedder=HashingEmbedder(),
                        clock=clock,
                        ttl_s=kept.fact_ttl_days and kept.fact_ttl_days * day_s,
                    )
                    if kept.facts_backend == "embedding"
                    else None
                ),
                fact_ttl_s=kept.fact_ttl_days and kept.fact_ttl_days * day_s,
                turn_ttl_s=kept.turn_ttl_days and kept.turn_ttl_days * day_s,
                facts_limit=kept.facts_in_context,
            ),
            redactor=wiring.redactor,
        )
        gate: PermissionsGate = PolicyGate(
            principals=wiring.principals,
            audit=wiring.audit,
            clock=clock,
            policies=policies or {},
            keys=wiring.keys,
            store=wiring.store,
            require_api_key=settings.gate.require_api_key,
            redactor=wiring.redactor,
        )
        sandbox: ExecutionSandbox = CachingSandbox(
            BreakerSandbox(
                TieredSandbox(clock=clock, settings=settings.sandbox), breakers, budget=kit.budget
            ),
            clock=clock,
            ttl_s=settings.resilience.tool_cache_ttl_s,
            max_entries=settings.resilience.tool_cache_entries,
        )
        recovery: RecoveryHandler = PolicyRecovery(
            settings=settings.recovery, rng=rng or random.Random(), budget=kit.budget
        )
        chain = [model] + [
            load_model(name, settings=settings, clock=clock) for name in settings.model.fallbacks
        ]
        guarded: list[ChatModel] = [
            RateLimitedChatModel(
                BreakerChatModel(m, breakers, clock=clock, budget=kit.budget), kit.limits
            )
            for m in chain
        ]
        model = FallbackChatModel(*guarded) if len(guarded) > 1 else guarded[0]
        durable, inbox, checkpoints = None, None, None
        if settings.durable.enabled:
            from bastion.durable import DurableEngine, steps

            durable = DurableEngine(
                settings=settings,
                store=engine,
                clock=clock,
                checkpoint_key=wiring.durable_key,
                redact=wiring.redactor.json,
            )
            gate = steps.DurableGate(gate)
            checkpoints = steps.DurableCheckpoints(redact=wiring.redactor.json)
            recovery, model = steps.DurableRecovery(recovery), steps.DurableChatModel(model)
            clock, inbox = steps.DurableClock(clock), steps.DurableInbox()
        if len(rungs) > 1:
            from bastion.cost.cascade import Cascade

            stronger: list[ChatModel] = [
                RateLimitedChatModel(
                    BreakerChatModel(m, breakers, clock=clock, budget=kit.budget), kit.limits
                )
                for m in rungs[1:]
            ]
            if durable is not None:
                stronger = [steps.DurableChatModel(m) for m in stronger]
            model = Cascade([model, *stronger], rules=settings.cost.cascade_rules)
        approvals = ApprovalStore(
            engine=engine, clock=clock, audit=wiring.audit, ttl_s=settings.gate.approval_ttl_s
        )
        return cls(
            gate=gate,
            cost=AuditedCostController(
                SqlCostController(
                    engine=engine,
                    prices=PriceTable(settings.cost),
                    clock=clock,
                    settings=settings.cost,
                ),
                audit=wiring.audit,
                clock=clock,
            ),
            memory=memory,
            planner=ModelPlanner(settings=settings.planner, system_prompt=system_prompt),
            router=router,
            sandbox=sandbox,
            evaluator=ChecksEvaluator(
                redactor=wiring.redactor,
                may_see_others=may_see_others or (lambda principal: False),
                judge=ModelJudge() if settings.evaluator.judge else None,
                judge_blocks=settings.evaluator.judge_blocks,
            ),
            recovery=recovery,
            model=model,
            settings=settings,
            clock=clock,
            answer=answer,
            breakers=breakers,
            durable=durable,
            redactor=wiring.redactor,
            inbox=inbox,
            checkpoints=checkpoints,
            approvals=approvals,
            limits=kit.limits,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, run migrations and, if durable, start DBOS.

        DBOS then recovers this executor's interrupted runs. Safe to call twice; `run` calls it
        if needed.
        """
        async with self._start_lock:
            if not self._started:
                # Mounted MCP servers connect first (`bastion.mcp`): one that is required but
                # unreachable fails the start before anything else is opened.
                start_router = getattr(self.components.router, "start", None)
                if start_router is not None:
                    await start_router()
                await self.components.memory.start()
                if self.durable is not None:
                    # Launched from the running loop, DBOS runs recovered and queued workflows
                    # on it, next to the connections the run store opened here.
                    try:
                        await self.durable.launch(self._run_body)
                    except BaseException:
                        await self.components.memory.close()
                        raise
                self._started = True

    async def close(self) -> None:
        """Stop DBOS and release connections and the model's client.

        Runs still in flight are not cancelled: they resume at the next start (or on a worker).
        """
        if self._started:
            if self.durable is not None:
                await self.durable.shutdown()
            await self.components.memory.close()
            self._started = False
        elif self._store_open:
            await self.components.memory.close()
        self._store_open = False
        limits = self.components.limits
        owners = (
            self.components.sandbox,
            self.components.model,
            self.components.router,
            self.components.cost,  # the ledger's share of the database's writer
            self.components.gate,  # the audit log's
        )
        for owner in (*owners, limits.limiter) if limits is not None else owners:
            # Warm sandbox workers, HTTP clients, Redis: closed when the component has them.
            aclose = getattr(owner, "aclose", None)
            if aclose is not None:
                await aclose()

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

    @property
    def model_name(self) -> str:
        """The planning model's ``provider:model`` name."""
        return self.components.model.name

    # -- approvals -----------------------------------------------------------------------------

    def _approval_store(self) -> ApprovalStore:
        store = self.components.approvals
        if store is None:
            raise ConfigError("this system takes no human approvals (it has no approval store)")
        return store

    async def _open_store(self) -> ApprovalStore:
        """The approval store, its database migrated (without starting runs or DBOS)."""
        store = self._approval_store()
        if not self._started and not self._store_open:
            await self.components.memory.start()
            self._store_open = True
        return store

    async def approvals_pending(self, run_id: str | None = None) -> list[Approval]:
        """Approvals waiting for a decision, oldest first (optionally of one run).

        Raises:
            ConfigError: the system takes no approvals.
        """
        store = await self._open_store()
        await self._expire_and_wake(store, run_id=run_id)
        return await store.pending(run_id)

    async def approve(self, approval_id: str, principal: Principal, note: str = "") -> Approval:
        """Approve a pending approval as `principal`, and wake its run.

        `principal` must differ from the run's and hold the approver role; the run then uses the
        approval once, for the one call it was asked for.

        Raises:
            ApprovalError: unknown id, already decided, expired, self-approval, not an approver
                (each audited); ConfigError: the system takes no approvals.
        """
        store = await self._open_store()
        try:
            approval = await store.approve(approval_id, principal, note)
        except ApprovalExpired:
            await self._wake(await store.get(approval_id), "expired")
            raise
        await self._wake(approval, "approved")
        return approval

    async def deny(self, approval_id: str, principal: Principal, reason: str) -> Approval:
        """Deny a pending approval as `principal` and wake its run (it replans or ends).

        Raises:
            ApprovalError: as for `approve`; ConfigError: the system takes no approvals.
        """
        store = await self._open_store()
        try:
            approval = await store.deny(approval_id, principal, reason)
        except ApprovalExpired:
            await self._wake(await store.get(approval_id), "expired")
            raise
        await self._wake(approval, "denied")
        return approval

    async def expire_approvals(self) -> list[Approval]:
        """Expire every pending approval past its time and wake the runs waiting for them."""
        return await self._expire_and_wake(await self._open_store())

    async def _expire_and_wake(
        self, store: ApprovalStore, *, run_id: str | None = None
    ) -> list[Approval]:
        expired = await store.expire_due(run_id=run_id)
        for approval in expired:
            await self._wake(approval, "expired")
        return expired

    async def _wake(self, approval: Approval, decision: str) -> None:
        """Tell the waiting run its approval was decided (it re-reads it; never trusts this)."""
        from bastion.flow.approval import topic_of

        message = {"approval_id": approval.approval_id, "decision": decision}
        topic = topic_of(approval.approval_id)
        inbox = self.components.inbox
        if self.durable is None:
            if isinstance(inbox, LocalInbox):
                inbox.deliver(topic, message)
            return
        from bastion.durable import DurableAdmin

        try:
            await DurableAdmin(settings=self.components.settings).send(
                approval.run_id, topic, message, key=f"{topic}:{decision}"
            )
        except KeyError:
            logger.warning("approval %s: run %s is gone", approval.approval_id, approval.run_id)

    async def principal_for_key(self, api_key: str, *, user_id: str) -> Principal:
        """The principal an API key belongs to, checked (and audited) by the gate.

        Raises:
            NotAuthenticated: the key is unknown, revoked, expired, or not `user_id`'s.
        """
        await self._open_store()
        return await self.components.gate.authenticate(
            AgentRequest(
                user_id=user_id, session_id="approvals", message="decide approvals", api_key=api_key
            )
        )

    def breaker_states(self) -> dict[str, BreakerState]:
        """Every breaker's state, by name (empty when the system has no board)."""
        return self.breakers.states() if self.breakers is not None else {}

    def rate_limit_rejections(self) -> dict[str, int]:
        """Runs and model calls refused by a rate limit so far, by scope (user, app, provider)."""
        limits = self.components.limits
        return dict(limits.rejections) if limits is not None else {}

    # -- runs ----------------------------------------------------------------------------------

    async def run(
        self, request: AgentRequest, *, on_event: EventSink | None = None
    ) -> AgentResponse:
        """Run one request to a terminal status. Never raises, except `asyncio.CancelledError`.

        With durable execution on, the run is a DBOS workflow whose id is the run id: a second
        call with the same request (same ``run_id``) attaches to the first instead of running it
        again, and a run interrupted by a crash is finished by the next process to start.

        Args:
            request: what the user asked, with the run's budget and time limit.
            on_event: called with every `RunEvent` as it happens (must not block).
        """
        # Secrets a run meets stay out of what it shows live and what it returns.
        if on_event is not None:
            on_event = redacting_sink(self.redactor, on_event)
        return redact_response(self.redactor, await self._run(request, on_event))

    async def _run(self, request: AgentRequest, on_event: EventSink | None) -> AgentResponse:
        c = self.components
        timeout_s = request.timeout_s or c.settings.run.timeout_s
        deadline_at = c.clock.now() + timedelta(seconds=timeout_s)
        try:
            await self.start()
            if self.durable is not None:
                principal = None
                if request.api_key is not None:
                    # Checkpoints never hold a key: authenticate now; the run acts as the
                    # principal found (carried in its input), never re-checked by user id.
                    try:
                        principal = await c.gate.authenticate(request)
                    except AdmissionError as exc:
                        return AgentResponse(
                            run_id=request.run_id,
                            status=RunStatus.ABORTED,
                            message=exc.user_message,
                            error=str(exc),
                        )
                    request = dataclasses.replace(request, api_key=None, user_id=principal.id)
                return await self.durable.run(
                    request, deadline_at=deadline_at, on_event=on_event, principal=principal
                )
        except Exception as exc:
            logger.exception("run %s could not be started", request.run_id)
            return AgentResponse(
                run_id=request.run_id, status=RunStatus.FAILED, message=_UNEXPECTED, error=repr(exc)
            )
        return await self._run_body(request, deadline_at, on_event)

    async def _run_body(
        self, request: AgentRequest, deadline_at: datetime, on_event: EventSink | None
    ) -> AgentResponse:
        """The run itself, in process or as the body of its durable workflow.

        After a crash the body is replayed from the top, each completed step returning its
        recorded output: everything here is deterministic given those outputs, or idempotent.
        """
        c = self.components
        run = RunState(
            request=request,
            memory=c.memory,
            clock=c.clock,
            deadline_at=deadline_at,
            on_event=on_event,
        )
        try:
            await run.begin()
        except Exception as exc:
            logger.exception("run %s could not be recorded", request.run_id)
            if self.durable is not None:
                # A workflow that completed here would be a run DBOS calls finished and the
                # database never saw: fail the workflow instead (visible, resumable).
                raise RunNotRecorded(
                    f"run {request.run_id} could not be recorded: {exc!r}"
                ) from exc
            return AgentResponse(
                run_id=request.run_id, status=RunStatus.FAILED, message=_UNEXPECTED, error=repr(exc)
            )
        try:
            result = await self._admit_and_execute(run, max(0.0, run.time_left_s))
        except asyncio.CancelledError:
            if self.durable is None or not self.durable.leaves(run.run_id):
                # A process shutting down leaves its runs to be recovered; they are not cancelled.
                await asyncio.shield(self._cancelled(run))
            raise
        try:
            return await respond(run, c, result)
        except Superseded:
            raise  # the run is another execution's to finish: record nothing here
        except Exception as exc:
            logger.exception("run %s failed while responding", run.run_id)
            return await self._last_resort(run, exc)

    async def _admit_and_execute(self, run: RunState, timeout_s: float) -> ExecutionResult:
        c = self.components
        try:
            async with asyncio.timeout(timeout_s) as timer:
                run.timer = timer
                try:
                    memory_context = await admit(run, c)
                except AdmissionError as exc:
                    return stopped_by(exc)
                return await Execution(run, c, memory_context)()
        except TimeoutError:
            return Stopped(
                status=RunStatus.FAILED, user_message=_TOO_LONG, reason="run deadline exceeded"
            )
        except Superseded:
            raise  # see `_run_body`
        except Exception as exc:
            logger.exception("run %s failed unexpectedly", run.run_id)
            return Stopped(status=RunStatus.FAILED, user_message=_UNEXPECTED, reason=repr(exc))

    async def _cancelled(self, run: RunState) -> None:
        """Checkpoint a cancelled run: release its budget and mark it `cancelled`, once."""
        c = self.components
        try:
            await c.cost.finish(run.run_id)
            if not run.status.is_terminal:
                await run.transition(RunStatus.CANCELLED, error="cancelled by the caller")
        except Exception:
            logger.exception("could not checkpoint cancelled run %s", run.run_id)

    async def _last_resort(self, run: RunState, exc: Exception) -> AgentResponse:
        try:
            if not run.status.is_terminal:
                await run.transition(RunStatus.FAILED, answer=_UNEXPECTED, error=repr(exc))
        except Exception:
            logger.exception("could not record the failure of run %s", run.run_id)
        return AgentResponse(
            run_id=run.run_id, status=RunStatus.FAILED, message=_UNEXPECTED, error=repr(exc)
        )


def describe_tools(system: AgentSystem) -> list[dict[str, Any]]:
    """The registered tools as plain data (for CLIs and docs)."""
    return [
        {
            "name": t.name,
            "description": t.description,
            "permissions": sorted(t.required_permissions),
            "side_effects": t.side_effects,
            "idempotent": t.idempotent,
        }
        for t in system.components.router.describe_all()
    ]
