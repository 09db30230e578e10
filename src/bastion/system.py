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
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from bastion.clock import Clock, SystemClock
from bastion.cost.interface import CostController
from bastion.errors import AdmissionError, ConfigError
from bastion.evaluator.interface import Evaluator
from bastion.flow.admit import admit
from bastion.flow.checkpoints import Checkpoints, InProcess
from bastion.flow.components import Components
from bastion.flow.execute import Execution, ExecutionResult, Stopped, stopped_by
from bastion.flow.inbox import Inbox
from bastion.flow.respond import AnswerComposer, default_answer, respond
from bastion.flow.state import EventSink, RunState
from bastion.gate.interface import ArgPolicy, PermissionsGate
from bastion.gate.redact import Redactor
from bastion.gate.redacting import redact_response, redacting_sink
from bastion.memory.interface import MemoryManager
from bastion.messages import AgentRequest, AgentResponse, Principal, RunStatus
from bastion.models.interface import ChatModel
from bastion.planner.interface import Planner
from bastion.recovery.interface import RecoveryHandler
from bastion.resilience.breaker import BreakerBoard, BreakerState
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
        inbox: where a paused run receives a person's decision (durable runs only).
        checkpoints: how the flow's units of work are made durable (default: in process).
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
            inbox=inbox,
            checkpoints=checkpoints or InProcess(),
        )
        self.breakers = breakers
        self.durable = durable
        self.redactor = redactor or Redactor()
        self._started = False
        self._start_lock = asyncio.Lock()

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
            default_model: ``provider:model`` used when settings name none.
            model: a ready model instance (tests); wins over names.
            clock: the source of time (a `FakeClock` in tests).
            rng: randomness for backoff jitter (seeded in tests).

        Raises:
            ConfigError: no model is configured, a name is unknown, or a tool is misdeclared.
        """
        # Concrete classes are named here and nowhere else (STYLE.md §1).
        from bastion.cost.default import LedgerCostController
        from bastion.cost.pricing import PriceTable
        from bastion.evaluator.default import ChecksEvaluator
        from bastion.gate.default import PolicyGate
        from bastion.gate.redacting import AuditedCostController, RedactingMemory
        from bastion.gate.wiring import gate_from_settings
        from bastion.memory.default import SqlMemory
        from bastion.models.breaker import BreakerChatModel
        from bastion.models.loader import load_model
        from bastion.planner.default import ModelPlanner
        from bastion.recovery.default import PolicyRecovery
        from bastion.router.default import RegistryRouter
        from bastion.sandbox.breaker import BreakerSandbox
        from bastion.sandbox.default import TieredSandbox
        from bastion.storage.engine import create_engine

        clock = clock or SystemClock()
        if model is None:
            name = settings.model.name or default_model
            if not name:
                raise ConfigError(
                    "no model is configured: set BASTION_MODEL__NAME (e.g. openai:gpt-4o-mini) "
                    "or pass --model"
                )
            model = load_model(name, settings=settings, clock=clock)
        router = RegistryRouter(tools)
        router.validate()
        breakers = BreakerBoard(clock=clock, settings=settings.breaker)
        engine = create_engine(settings.database_url)
        wiring = gate_from_settings(settings, engine=engine, clock=clock, principals=principals)
        memory = RedactingMemory(
            SqlMemory(engine=engine, clock=clock, owns_engine=True), redactor=wiring.redactor
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
        sandbox: ExecutionSandbox = BreakerSandbox(
            TieredSandbox(clock=clock, settings=settings.sandbox), breakers
        )
        recovery: RecoveryHandler = PolicyRecovery(
            settings=settings.recovery, rng=rng or random.Random()
        )
        model = BreakerChatModel(model, breakers.get(f"model:{model.name}"))
        durable, inbox, checkpoints = None, None, None
        if settings.durable.enabled:
            from bastion.durable import DurableEngine, steps

            durable = DurableEngine(settings=settings, store=engine, clock=clock)
            gate = steps.DurableGate(gate)
            checkpoints = steps.DurableCheckpoints(redact=wiring.redactor.json)
            recovery, model = steps.DurableRecovery(recovery), steps.DurableChatModel(model)
            clock, inbox = steps.DurableClock(clock), steps.DurableInbox()
        return cls(
            gate=gate,
            cost=AuditedCostController(
                LedgerCostController(prices=PriceTable(settings.cost), clock=clock),
                audit=wiring.audit,
                clock=clock,
            ),
            memory=memory,
            planner=ModelPlanner(settings=settings.planner, system_prompt=system_prompt),
            router=router,
            sandbox=sandbox,
            evaluator=ChecksEvaluator(),
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
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, run migrations and, if durable, start DBOS.

        DBOS then recovers this executor's interrupted runs. Safe to call twice; `run` calls it
        if needed.
        """
        async with self._start_lock:
            if not self._started:
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
        for owner in (self.components.sandbox, self.components.model):
            # Warm sandbox workers and HTTP clients: closed when the component has them.
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

    def breaker_states(self) -> dict[str, BreakerState]:
        """Every breaker's state, by name (empty when the system has no board)."""
        return self.breakers.states() if self.breakers is not None else {}

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
            return AgentResponse(
                run_id=request.run_id, status=RunStatus.FAILED, message=_UNEXPECTED, error=repr(exc)
            )
        try:
            result = await self._admit_and_execute(run, max(0.0, run.time_left_s))
        except asyncio.CancelledError:
            if self.durable is None or not self.durable.stopping:
                # A process shutting down leaves its runs to be recovered; they are not cancelled.
                await asyncio.shield(self._cancelled(run))
            raise
        try:
            return await respond(run, c, result)
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
