"""Wrappers that make a component's calls DBOS steps when they run inside a durable run.

A step's output is checkpointed; when a crashed run is recovered its workflow runs again from the
top, and each completed step returns its recorded output instead of running again: no model call
is repeated (no repeated spend), no gate decision is audited twice, no tool call with side effects
is repeated, no backoff is slept twice. Outside a workflow each wrapper is a plain pass-through.

What is a step, and why:

* `DurableChatModel.complete`: model calls cost money and are not deterministic.
* `DurableCheckpoints.call`: a tool call with its execution-time authorization, as one step (a
  call interrupted before it completed is authorized afresh; one that completed is never
  re-decided, nor re-run). A tool with side effects that is not idempotent is preceded by an
  *intent* step; finding, on recovery, an intent whose call has no recorded outcome means the
  process died mid-call: whether it happened is unknown, so the call is never re-run blindly, its
  outcome is recorded as ``unknown_outcome`` and the run waits for an operator.
* `DurableCheckpoints.step`: a fresh plan's vetting by the gate (decisions read state the run
  itself changes, a refund policy reads refunds, and are audited: recorded, they are the same on
  replay and audited once).
* `DurableGate.authenticate`: the principal a run acts as, audited once.
* `DurableRecovery.decide`: it draws jitter and reads the clock.
* `DurableClock.sleep`: a durable sleep, skipped on replay once it has elapsed.

Everything else in the flow is deterministic given these outputs, or idempotent (run-store
writes), so a replay takes the same path as the first execution did.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from dbos import DBOS
from dbos._dbos import _get_dbos_instance
from dbos._error import DBOSWorkflowCancelledError
from pydantic import TypeAdapter

from bastion.clock import Clock
from bastion.durable import codec
from bastion.errors import BastionError
from bastion.flow.checkpoints import Checkpoints
from bastion.flow.inbox import Inbox
from bastion.gate.interface import Decision, Grant, PermissionsGate, Stage
from bastion.messages import (
    AgentRequest,
    JsonObject,
    Principal,
    RecoveryAction,
    ToolErrorKind,
    ToolOutcome,
)
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse
from bastion.recovery.interface import Failure, RecoveryHandler
from bastion.router.interface import ToolSpec

T = TypeVar("T")

#: A token per execution of a workflow body in this process: an intent recorded under another
#: token was written by an earlier execution, i.e. before a crash or a restart.
EXECUTION = contextvars.ContextVar[str]("bastion_durable_execution", default="")


#: The principal a run's caller authenticated as before the run started (by API key), if any.
AUTHENTICATED = contextvars.ContextVar[Principal | None]("bastion_authenticated", default=None)


def in_workflow() -> bool:
    """Whether the caller runs inside a durable run's workflow (and not inside a step)."""
    return DBOS.workflow_id is not None and DBOS.step_id is None


async def run_step(name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run `fn` as a checkpointed step; DBOS's cancellation becomes asyncio's."""

    async def step() -> Any:  # DBOS awaits only what it sees to be a coroutine function
        return await fn()

    try:
        return await DBOS.run_step_async({"name": name}, step)
    except DBOSWorkflowCancelledError as exc:
        raise asyncio.CancelledError(f"run cancelled: {exc}") from exc


async def _guarded(fn: Callable[[], Awaitable[T]], encode: Callable[[T], Any]) -> Any:
    """Call `fn`, encoding its value, or the Bastion error it raised, as the step's output."""
    try:
        return encode(await fn())
    except BastionError as exc:
        return codec.encode_error(exc)


def _raise_or(data: Any) -> Any:
    if codec.is_error(data):
        raise codec.decode_error(data)
    return data


class DurableChatModel(ChatModel):
    """Each `complete` is a step: a recovered run never calls the model again for it."""

    def __init__(self, wrapped: ChatModel) -> None:
        self.wrapped = wrapped

    @property
    def name(self) -> str:
        return self.wrapped.name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if not in_workflow():
            return await self.wrapped.complete(request)
        data = await run_step(
            f"model:{self.name}",
            lambda: _guarded(
                lambda: self.wrapped.complete(request), lambda r: codec.dump(codec.CHAT_RESPONSE, r)
            ),
        )
        return codec.CHAT_RESPONSE.validate_python(_raise_or(data))

    async def aclose(self) -> None:
        """Close the wrapped model's client, if it has one."""
        aclose = getattr(self.wrapped, "aclose", None)
        if aclose is not None:
            await aclose()


class DurableCheckpoints(Checkpoints):
    """The flow's units of work as DBOS steps; a non-idempotent side effect is never re-run.

    Args:
        redact: applied to each tool outcome before it is checkpointed, so that no secret a tool
            returned is stored in DBOS's database. The run goes on with the redacted outcome,
            the same on first execution and on replay.
    """

    def __init__(self, *, redact: Callable[[Any], Any] | None = None) -> None:
        self._redact = redact or (lambda value: value)

    async def call(self, spec: ToolSpec, fn: Callable[[], Awaitable[ToolOutcome]]) -> ToolOutcome:
        if not in_workflow():
            return await fn()
        name = f"tool:{spec.name}"
        if spec.side_effects and not spec.idempotent and await self._died_mid_call(spec):
            data = await run_step(name, lambda: _unknown_outcome(spec))
        else:
            data = await run_step(
                name, lambda: _guarded(fn, lambda o: self._redact(codec.dump(codec.OUTCOME, o)))
            )
        return codec.OUTCOME.validate_python(_raise_or(data))

    async def step(self, name: str, fn: Callable[[], Awaitable[T]], adapter: TypeAdapter[T]) -> T:
        if not in_workflow():
            return await fn()
        data = await run_step(
            name, lambda: _guarded(fn, lambda v: adapter.dump_python(v, mode="json"))
        )
        return adapter.validate_python(_raise_or(data))

    async def _died_mid_call(self, spec: ToolSpec) -> bool:
        """Record an intent; True when an earlier execution recorded it and never finished."""
        token = EXECUTION.get()

        async def intent() -> dict[str, Any]:
            return {"execution": token, "step_id": DBOS.step_id}

        mark = await run_step(f"intent:{spec.name}", intent)
        if mark["execution"] == token:
            return False  # written just now: this is the first attempt of this call
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None
        return not await _step_recorded(workflow_id, int(mark["step_id"]) + 1)


async def _unknown_outcome(spec: ToolSpec) -> dict[str, Any]:
    outcome = ToolOutcome.failure(
        ToolErrorKind.UNKNOWN_OUTCOME,
        f"the process running tool {spec.name!r} stopped during the call; whether it took effect "
        "is unknown, so it was not run again",
    )
    return codec.dump(codec.OUTCOME, outcome)  # type: ignore[no-any-return]


async def _step_recorded(workflow_id: str, step_id: int) -> bool:
    """Whether step `step_id` of the workflow has a recorded outcome.

    Asks DBOS's system database directly, not through `DBOS.list_workflow_steps`, which would
    itself be recorded as a step of the workflow and shift every step after it.
    """
    sys_db = _get_dbos_instance()._sys_db
    steps = await asyncio.to_thread(sys_db.list_workflow_steps, workflow_id, load_output=False)
    return any(s["function_id"] == step_id for s in steps)


class DurableGate(PermissionsGate):
    """Authentication as a step: the same principal on replay, audited once."""

    def __init__(self, wrapped: PermissionsGate) -> None:
        self.wrapped = wrapped

    async def authenticate(self, request: AgentRequest) -> Principal:
        if not in_workflow():
            return await self.wrapped.authenticate(request)
        known = AUTHENTICATED.get()
        if known is not None:
            # Authenticated with its API key before the run started (a key is never stored).
            return known
        data = await run_step(
            "gate:authenticate",
            lambda: _guarded(
                lambda: self.wrapped.authenticate(request), lambda p: codec.dump(codec.PRINCIPAL, p)
            ),
        )
        return codec.PRINCIPAL.validate_python(_raise_or(data))

    async def aclose(self) -> None:
        aclose = getattr(self.wrapped, "aclose", None)
        if aclose is not None:
            await aclose()

    def may_use(self, principal: Principal, tool: ToolSpec) -> bool:
        return self.wrapped.may_use(principal, tool)

    async def authorize(
        self,
        principal: Principal,
        tool: ToolSpec,
        args: JsonObject,
        *,
        stage: Stage,
        run_id: str,
        grant: Grant | None = None,
    ) -> Decision:
        # Not a step of its own: the flow checkpoints each decision with what it guards (a
        # plan's vetting, or a call), so that a call interrupted before it ran is decided afresh.
        return await self.wrapped.authorize(
            principal, tool, args, stage=stage, run_id=run_id, grant=grant
        )


class DurableRecovery(RecoveryHandler):
    """Recovery decisions as steps (they draw jitter and read the clock)."""

    def __init__(self, wrapped: RecoveryHandler) -> None:
        self.wrapped = wrapped

    async def decide(self, failure: Failure) -> RecoveryAction:
        if not in_workflow():
            return await self.wrapped.decide(failure)
        data = await run_step(
            "recovery:decide",
            lambda: _guarded(
                lambda: self.wrapped.decide(failure), lambda a: codec.dump(codec.ACTION, a)
            ),
        )
        return codec.ACTION.validate_python(_raise_or(data))


class DurableClock(Clock):
    """The wrapped clock, with durable sleeps inside a run (an elapsed sleep is not slept again)."""

    def __init__(self, wrapped: Clock) -> None:
        self.wrapped = wrapped

    def monotonic(self) -> float:
        return self.wrapped.monotonic()

    def now(self) -> datetime:
        return self.wrapped.now()

    async def sleep(self, seconds: float) -> None:
        if not in_workflow():
            await self.wrapped.sleep(seconds)
            return

        async def wake_at() -> str:
            return (self.wrapped.now() + timedelta(seconds=max(0.0, seconds))).isoformat()

        # The wake-up time is recorded, not the wait: after a restart the run sleeps only what
        # is left of it (nothing, once it has passed), on the wrapped clock (a fake one in tests).
        until = datetime.fromisoformat(await run_step("sleep", wake_at))
        await self.wrapped.sleep(max(0.0, (until - self.wrapped.now()).total_seconds()))


class DurableInbox(Inbox):
    """A run's inbox on DBOS: the wait is durable (a restart resumes it) and holds no thread."""

    async def receive(self, topic: str, *, timeout_s: float) -> JsonObject | None:
        try:
            message = await DBOS.recv_async(topic, timeout_seconds=timeout_s)
        except DBOSWorkflowCancelledError as exc:
            raise asyncio.CancelledError(f"run cancelled: {exc}") from exc
        return message if isinstance(message, dict) else None


def new_execution_token() -> str:
    """A fresh token for one execution of a workflow body."""
    return uuid.uuid4().hex
