from __future__ import annotations

import asyncio
import math

import pytest

from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.resilience.breaker import BreakerBoard, BreakerConfig, BreakerState
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool
from bastion.sandbox import BreakerSandbox, ExecutionSandbox
from bastion.testing.clock import FakeClock

PRINCIPAL = Principal(id="u")
OK = ToolOutcome.success({"ok": True})


def refund(order_id: int) -> None:
    """Refund."""


SPEC = make_tool(refund)
CALL = ToolCall(run_id="r", step_id=0, tool_name="refund", args={"order_id": 1})


class ScriptedSandbox(ExecutionSandbox):
    """Returns the scripted outcomes in order; counts calls."""

    def __init__(self, *outcomes: ToolOutcome) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        self.calls += 1
        return self.outcomes.pop(0)


class BlockingSandbox(ExecutionSandbox):
    """Blocks until cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def failure(kind: ToolErrorKind) -> ToolOutcome:
    return ToolOutcome.failure(kind, f"{kind} happened")


def make(
    *outcomes: ToolOutcome, threshold: int = 2
) -> tuple[BreakerSandbox, ScriptedSandbox, BreakerBoard, FakeClock]:
    clock = FakeClock()
    board = BreakerBoard(clock=clock, config=BreakerConfig.consecutive(threshold, open_wait_s=30.0))
    inner = ScriptedSandbox(*outcomes)
    return BreakerSandbox(inner, board), inner, board, clock


async def run(sandbox: ExecutionSandbox) -> ToolOutcome:
    return await sandbox.run(CALL, SPEC, deadline=math.inf, principal=PRINCIPAL)


async def test_success_passes_through() -> None:
    sandbox, inner, board, _ = make(OK)

    assert await run(sandbox) is OK
    assert inner.calls == 1
    assert board.states() == {"tool:refund": BreakerState.CLOSED}


@pytest.mark.parametrize(
    "kind",
    [
        ToolErrorKind.TIMEOUT,
        ToolErrorKind.TOOL_ERROR,
        ToolErrorKind.CRASHED,
        ToolErrorKind.TRANSIENT,
        ToolErrorKind.RESOURCE_EXHAUSTED,
    ],
)
async def test_tool_failures_open_the_breaker(kind: ToolErrorKind) -> None:
    sandbox, _inner, board, _ = make(failure(kind), failure(kind))

    assert await run(sandbox) == failure(kind)
    assert await run(sandbox) == failure(kind)

    assert board.states() == {"tool:refund": BreakerState.OPEN}


async def test_open_breaker_fails_fast_without_calling_the_tool() -> None:
    sandbox, inner, _, clock = make(failure(ToolErrorKind.TIMEOUT), failure(ToolErrorKind.TIMEOUT))
    await run(sandbox)
    await run(sandbox)

    outcome = await run(sandbox)

    assert inner.calls == 2
    assert outcome.error_kind is ToolErrorKind.CIRCUIT_OPEN
    assert outcome.transient is False
    assert outcome.error == (
        "tool 'refund' was not called: it has been failing and its circuit breaker is open "
        f"(until t={clock.monotonic() + 30:.3f} on the monotonic clock); use another tool or "
        "try later"
    )


@pytest.mark.parametrize(
    "kind",
    [
        ToolErrorKind.INVALID_ARGS,
        ToolErrorKind.DENIED,
        ToolErrorKind.UNKNOWN_TOOL,
        ToolErrorKind.CIRCUIT_OPEN,
    ],
)
async def test_callers_own_faults_never_open_the_breaker(kind: ToolErrorKind) -> None:
    sandbox, inner, board, _ = make(*[failure(kind)] * 5)

    for _ in range(5):
        assert await run(sandbox) == failure(kind)

    assert inner.calls == 5
    assert board.states() == {"tool:refund": BreakerState.CLOSED}
    assert board.get("tool:refund").window_calls == 0


async def test_half_open_probe_success_closes() -> None:
    timeout = failure(ToolErrorKind.TIMEOUT)
    sandbox, _inner, board, clock = make(timeout, timeout, OK, OK)
    await run(sandbox)
    await run(sandbox)
    clock.advance(30.0)

    assert await run(sandbox) is OK
    assert board.states() == {"tool:refund": BreakerState.CLOSED}
    assert await run(sandbox) is OK


async def test_callers_fault_during_the_probe_frees_the_slot() -> None:
    timeout = failure(ToolErrorKind.TIMEOUT)
    invalid = failure(ToolErrorKind.INVALID_ARGS)
    sandbox, _inner, board, clock = make(timeout, timeout, invalid, OK)
    await run(sandbox)
    await run(sandbox)
    clock.advance(30.0)

    assert await run(sandbox) == invalid
    assert board.states() == {"tool:refund": BreakerState.HALF_OPEN}
    assert await run(sandbox) is OK
    assert board.states() == {"tool:refund": BreakerState.CLOSED}


async def test_cancellation_propagates_and_frees_the_probe_slot() -> None:
    clock = FakeClock()
    board = BreakerBoard(clock=clock, config=BreakerConfig.consecutive(1, open_wait_s=5))
    breaker = board.get("tool:refund")
    breaker.check()
    breaker.record_failure()
    clock.advance(5.0)
    inner = BlockingSandbox()
    sandbox = BreakerSandbox(inner, board)

    task = asyncio.create_task(run(sandbox))
    await inner.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.state is BreakerState.HALF_OPEN
    breaker.check()  # the slot is free again


async def test_breakers_are_per_tool() -> None:
    def other(x: int) -> None:
        """Other."""

    sandbox, _, board, _ = make(failure(ToolErrorKind.TOOL_ERROR), OK, threshold=1)
    await run(sandbox)
    other_call = ToolCall(run_id="r", step_id=1, tool_name="other", args={"x": 1})

    outcome = await sandbox.run(
        other_call, make_tool(other), deadline=math.inf, principal=PRINCIPAL
    )

    assert outcome is OK
    assert board.states() == {"tool:refund": BreakerState.OPEN, "tool:other": BreakerState.CLOSED}


async def test_close_reaches_the_wrapped_sandbox_when_it_has_something_to_close() -> None:
    closed: list[str] = []

    class Closing(ScriptedSandbox):
        async def aclose(self) -> None:
            closed.append("closed")

    await BreakerSandbox(
        Closing(), BreakerBoard(clock=FakeClock(), config=BreakerConfig())
    ).aclose()
    await BreakerSandbox(
        ScriptedSandbox(), BreakerBoard(clock=FakeClock(), config=BreakerConfig())
    ).aclose()

    assert closed == ["closed"]
