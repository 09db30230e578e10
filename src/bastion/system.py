"""`AgentSystem`: holds the eight components and runs requests through admit → execute → respond.

The only module that names concrete classes (in `from_settings`); everything else talks to the
components' protocols. `run()` never raises (but for cancellation): every run ends in a terminal
status with a message for the end user, and an unexpected error is logged with the run id.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from bastion.clock import Clock, SystemClock
from bastion.cost.interface import CostController
from bastion.errors import AdmissionError, ConfigError
from bastion.evaluator.interface import Evaluator
from bastion.flow.admit import admit
from bastion.flow.components import Components
from bastion.flow.execute import Execution, ExecutionResult, Stopped, stopped_by
from bastion.flow.respond import AnswerComposer, default_answer, respond
from bastion.flow.state import EventSink, RunState
from bastion.gate.interface import ArgPolicy, PermissionsGate
from bastion.memory.interface import MemoryManager
from bastion.messages import AgentRequest, AgentResponse, Principal, RunStatus
from bastion.models.interface import ChatModel
from bastion.planner.interface import Planner
from bastion.recovery.interface import RecoveryHandler
from bastion.resilience.breaker import BreakerBoard, BreakerState
from bastion.router.interface import ToolRouter, ToolSpec
from bastion.sandbox.interface import ExecutionSandbox
from bastion.settings import Settings

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
        )
        self.breakers = breakers
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
            principals: who may use the system, with their scopes.
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
        from bastion.gate.audit import SqlAuditLog
        from bastion.gate.default import PolicyGate
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
        memory = SqlMemory(engine=engine, clock=clock, owns_engine=True)
        return cls(
            gate=PolicyGate(
                principals=list(principals),
                audit=SqlAuditLog(engine=engine),
                clock=clock,
                policies=policies or {},
            ),
            cost=LedgerCostController(prices=PriceTable(settings.cost), clock=clock),
            memory=memory,
            planner=ModelPlanner(settings=settings.planner, system_prompt=system_prompt),
            router=router,
            sandbox=BreakerSandbox(TieredSandbox(clock=clock, settings=settings.sandbox), breakers),
            evaluator=ChecksEvaluator(),
            recovery=PolicyRecovery(settings=settings.recovery, rng=rng or random.Random()),
            model=BreakerChatModel(model, breakers.get(f"model:{model.name}")),
            settings=settings,
            clock=clock,
            answer=answer,
            breakers=breakers,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage and run migrations. Safe to call twice; `run` calls it if needed."""
        async with self._start_lock:
            if not self._started:
                await self.components.memory.start()
                self._started = True

    async def close(self) -> None:
        """Release connections (and the model's client, if it has one to close)."""
        if self._started:
            await self.components.memory.close()
            self._started = False
        aclose = getattr(self.components.model, "aclose", None)
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

        Args:
            request: what the user asked, with the run's budget and time limit.
            on_event: called with every `RunEvent` as it happens (must not block).
        """
        c = self.components
        timeout_s = request.timeout_s or c.settings.run.timeout_s
        run = RunState(
            request=request,
            memory=c.memory,
            clock=c.clock,
            deadline_at=c.clock.now() + timedelta(seconds=timeout_s),
            on_event=on_event,
        )
        try:
            await self.start()
            await run.begin()
        except Exception as exc:
            logger.exception("run %s could not be recorded", request.run_id)
            return AgentResponse(
                run_id=request.run_id, status=RunStatus.FAILED, message=_UNEXPECTED, error=repr(exc)
            )
        try:
            result = await self._admit_and_execute(run, timeout_s)
        except asyncio.CancelledError:
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
            async with asyncio.timeout(timeout_s):
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
