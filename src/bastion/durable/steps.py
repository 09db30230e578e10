"""Wrappers that make a component's calls checkpointed steps when they run inside a durable run.

A step's output is checkpointed in the run's journal (`bastion.durable.journal`); when a crashed
run is recovered its workflow runs again from the top, and each completed step returns its
recorded output instead of running again: no model call is repeated (no repeated spend), no gate
decision is audited twice, no tool call with side effects is repeated, no backoff is slept twice.
Outside a workflow each wrapper is a plain pass-through.

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
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from dbos import DBOS
from dbos._dbos import _get_dbos_instance
from dbos._error import DBOSWorkflowCancelledError
from pydantic import TypeAdapter

from bastion.clock import Clock
from bastion.durable import codec
from bastion.durable.journal import Entry, Journal, ReplayMismatch
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
from bastion.storage.writes import RIDERS, Riders

T = TypeVar("T")

#: At most this long between two checks, at a step, that the run was not cancelled elsewhere
#: (``bastion runs cancel`` in another process); a step with side effects always checks first,
#: so a run cancelled elsewhere may still make a model call, but never acts on its plan.
CANCEL_CHECK_S = 1.0


#: The principal a run's caller authenticated as before the run started (by API key), if any.
AUTHENTICATED = contextvars.ContextVar[Principal | None]("bastion_authenticated", default=None)


async def _dbos_cancelled(run_id: str) -> bool:
    sys_db = _get_dbos_instance()._sys_db
    return run_id in await asyncio.to_thread(sys_db.get_cancelled_workflow_ids, [run_id])


@dataclass(eq=False)
class Execution:
    """One execution of a durable run's workflow body in this process, and its journal.

    Steps are numbered in the order they start (the number is taken before the step awaits
    anything, so concurrent steps started in a fixed order are numbered the same on replay).

    A read-only step's checkpoint rides with the run's next write to the database (`riders`;
    see `bastion.durable.journal` for when each checkpoint commits): the workflow body runs with
    `riders` set as `RIDERS` (`activate`).

    Args:
        token: unique to this execution: an intent journaled under another token was written
            by an earlier execution, i.e. before a crash or a restart.
        recorded: the run's journal as it stood when this execution began.
        cancelled: whether the run was cancelled (asked of DBOS by default).
        monotonic: paces those checks (a real clock: it throttles a query, times no wait).
    """

    run_id: str
    token: str
    journal: Journal
    recorded: dict[int, Entry]
    cancelled: Callable[[str], Awaitable[bool]] = _dbos_cancelled
    monotonic: Callable[[], float] = time.monotonic  # noqa: TID251 - see the docstring
    next_seq: int = 0
    #: The checkpoints not yet committed, riding with the run's next write.
    riders: Riders = field(init=False, repr=False)
    #: When the run was last seen not cancelled: DBOS checks as it starts the workflow body.
    _checked_at: float = field(default=float("nan"), repr=False)

    def __post_init__(self) -> None:
        self.riders = Riders(self.journal.engine)
        self._checked_at = self.monotonic()

    def activate(self) -> Callable[[], None]:
        """Make this the caller's execution (`CURRENT`, `RIDERS`); returns what undoes it."""
        current, riding = CURRENT.set(self), RIDERS.set(self.riders)

        def undo() -> None:
            RIDERS.reset(riding)
            CURRENT.reset(current)

        return undo

    async def flush(self) -> None:
        """Commit every checkpoint of this execution still riding; done when this returns.

        Raises:
            RunTakenOver: another execution journaled one of them first.
        """
        await self.journal.flush(self.riders)

    async def run(self, name: str, fn: Callable[[], Awaitable[Any]], *, check: bool) -> Any:
        """The step's recorded output, or `fn`'s, journaled (`check` says when it commits).

        Args:
            name: the step's name, checked on replay against the recorded one.
            fn: runs the step; what it returns must be JSON data.
            check: the step has side effects: the checkpoints before it are committed and the
                run's cancellation checked before it runs (else at most every `CANCEL_CHECK_S`),
                and its own is committed before this returns (else it rides with the run's next
                write).

        Raises:
            ReplayMismatch: a recorded step of another name holds this step's place.
            RunTakenOver: another execution journaled this step first.
            asyncio.CancelledError: the run was cancelled.
        """
        seq = self.next_seq
        self.next_seq += 1
        found = self.recorded.get(seq)
        if found is not None:
            if found.name != name:
                raise ReplayMismatch(
                    f"run {self.run_id}: step {seq} was {found.name!r} when first run and is "
                    f"{name!r} on replay"
                )
            return found.output
        if check:
            await self.flush()
        now = self.monotonic()
        if check or now - self._checked_at >= CANCEL_CHECK_S:
            self._checked_at = now
            if await self.cancelled(self.run_id):
                raise asyncio.CancelledError(f"run {self.run_id} cancelled")
        started = _epoch_ms()
        inside = _STEP.set(seq)
        try:
            output = await fn()
        finally:
            _STEP.reset(inside)
        entry = Entry(seq, name, self.token, output, started, _epoch_ms())
        self.riders.add(self.journal.write(self.run_id, entry))
        self.recorded[seq] = entry
        if check:
            await self.flush()
        return output

    def was_recorded(self, seq: int) -> bool:
        """Whether step `seq` has a recorded output."""
        return seq in self.recorded


#: The execution of a durable run that the caller runs in, if any.
CURRENT = contextvars.ContextVar[Execution | None]("bastion_durable_execution", default=None)
#: The step the caller runs inside, if any (a wrapper called inside a step is a pass-through).
_STEP = contextvars.ContextVar[int | None]("bastion_durable_step", default=None)


def in_workflow() -> bool:
    """Whether the caller runs inside a durable run's workflow (and not inside a step)."""
    return CURRENT.get() is not None and _STEP.get() is None


def current_step() -> int | None:
    """The position of the step the caller runs inside, in its run's journal, if any."""
    return _STEP.get()


async def run_step(
    name: str, fn: Callable[[], Awaitable[Any]], *, check: bool = False, commit: bool = False
) -> Any:
    """Run `fn` as a checkpointed step of the current run (see `Execution.run`).

    Args:
        name: the step's name.
        fn: runs the step.
        check: the step has side effects (see `Execution.run`).
        commit: commit the run's checkpoints, this one's included, before returning (implied
            by `check`).
    """
    execution = CURRENT.get()
    if execution is None:
        raise RuntimeError("run_step is called inside a durable run only")
    output = await execution.run(name, fn, check=check)
    if commit and not check:
        await execution.flush()
    return output


async def commit_steps() -> None:
    """Commit the current run's checkpoints still riding (nothing outside a durable run)."""
    execution = CURRENT.get()
    if execution is not None:
        await execution.flush()


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


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
    """The flow's units of work as journaled steps; a non-idempotent side effect is never re-run.

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
                name,
                lambda: _guarded(fn, lambda o: self._redact(codec.dump(codec.OUTCOME, o))),
                check=spec.side_effects,
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
        execution = CURRENT.get()
        assert execution is not None

        async def intent() -> dict[str, Any]:
            return {"execution": execution.token, "step_id": current_step()}

        mark = await run_step(f"intent:{spec.name}", intent, check=True)
        if mark["execution"] == execution.token:
            return False  # written just now: this is the first attempt of this call
        return not execution.was_recorded(int(mark["step_id"]) + 1)


async def _unknown_outcome(spec: ToolSpec) -> dict[str, Any]:
    outcome = ToolOutcome.failure(
        ToolErrorKind.UNKNOWN_OUTCOME,
        f"the process running tool {spec.name!r} stopped during the call; whether it took effect "
        "is unknown, so it was not run again",
    )
    return codec.dump(codec.OUTCOME, outcome)  # type: ignore[no-any-return]


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
        until = datetime.fromisoformat(await run_step("sleep", wake_at, commit=True))
        await self.wrapped.sleep(max(0.0, (until - self.wrapped.now()).total_seconds()))


class DurableInbox(Inbox):
    """A run's inbox on DBOS: the wait is durable (a restart resumes it) and holds no thread."""

    async def receive(self, topic: str, *, timeout_s: float) -> JsonObject | None:
        await commit_steps()  # what the run did before it waits is durable while it waits
        try:
            message = await DBOS.recv_async(topic, timeout_seconds=timeout_s)
        except DBOSWorkflowCancelledError as exc:
            raise asyncio.CancelledError(f"run cancelled: {exc}") from exc
        return message if isinstance(message, dict) else None


def new_execution_token() -> str:
    """A fresh token for one execution of a workflow body."""
    return uuid.uuid4().hex
