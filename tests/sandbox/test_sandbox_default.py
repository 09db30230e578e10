from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from bastion.errors import ConfigError, TransientToolError
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolContext, ToolSpec
from bastion.router.registry import make_tool
from bastion.sandbox import ExecutionSandbox, TieredSandbox
from bastion.sandbox.capabilities import Capabilities, TierSupport
from bastion.settings import SandboxSettings
from bastion.testing.clock import FakeClock

PRINCIPAL = Principal(id="user_1", scopes=frozenset({"orders:read"}))
NO_ISOLATION = Capabilities(
    inline=TierSupport(tier="inline", available=True),
    process=TierSupport(tier="process", available=False, reasons=("no pids cgroup here",)),
    os=TierSupport(tier="os", available=False, reasons=("bubblewrap is not installed",)),
)
ALL_TIERS = Capabilities(
    inline=TierSupport(tier="inline", available=True),
    process=TierSupport(tier="process", available=True),
    os=TierSupport(tier="os", available=True),
)
TINY = 0.05


class Receipt(BaseModel):
    amount: Decimal
    at: datetime


class Picky(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def _no_thirteen(cls, value: int) -> int:
        if value == 13:
            raise LookupError("unlucky")
        return value


class Unserialisable:
    pass


def make_sandbox(
    clock: FakeClock | None = None, **settings: Any
) -> tuple[TieredSandbox, FakeClock]:
    clock = clock or FakeClock()
    return TieredSandbox(clock=clock, settings=SandboxSettings(**settings)), clock


def make_call(tool_name: str, args: dict[str, Any] | None = None, **fields: Any) -> ToolCall:
    return ToolCall(run_id="run_1", step_id=3, tool_name=tool_name, args=args or {}, **fields)


async def run(
    sandbox: TieredSandbox, spec: ToolSpec, args: dict[str, Any] | None = None, **call: Any
) -> ToolOutcome:
    deadline = call.pop("deadline", math.inf)
    return await sandbox.run(
        make_call(spec.name, args, **call), spec, deadline=deadline, principal=PRINCIPAL
    )


def test_implements_the_protocol() -> None:
    sandbox: ExecutionSandbox = make_sandbox()[0]
    assert isinstance(sandbox, TieredSandbox)


async def test_async_tool_success_with_duration_on_the_clock() -> None:
    sandbox, clock = make_sandbox()

    async def add(a: int, b: int) -> int:
        clock.advance(2.5)
        return a + b

    outcome = await run(sandbox, make_tool(add), {"a": 2, "b": 3})

    assert outcome == ToolOutcome.success(5, duration_s=2.5)


async def test_sync_tool_runs_off_the_event_loop() -> None:
    sandbox, _ = make_sandbox()
    loop_thread = threading.get_ident()

    def where(tag: str) -> dict[str, Any]:
        return {"tag": tag, "off_loop": threading.get_ident() != loop_thread}

    outcome = await run(sandbox, make_tool(where), {"tag": "x"})

    assert outcome.ok
    assert outcome.value == {"tag": "x", "off_loop": True}


async def test_args_are_validated_into_python_values() -> None:
    sandbox, _ = make_sandbox()
    seen: list[Any] = []

    def pay(receipt: Receipt, amount: Decimal) -> None:
        seen.extend([receipt, amount])

    outcome = await run(
        sandbox,
        make_tool(pay),
        {"receipt": {"amount": "1.50", "at": "2026-01-01T00:00:00Z"}, "amount": "2"},
    )

    assert outcome.ok
    assert outcome.value is None
    assert seen == [
        Receipt(amount=Decimal("1.50"), at=datetime(2026, 1, 1, tzinfo=UTC)),
        Decimal(2),
    ]


async def test_value_is_made_json_safe() -> None:
    sandbox, _ = make_sandbox()

    async def receipt() -> Receipt:
        return Receipt(amount=Decimal("9.99"), at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

    outcome = await run(sandbox, make_tool(receipt))

    assert outcome.value == {"amount": "9.99", "at": "2026-01-02T03:04:05Z"}


async def test_invalid_args_never_call_the_tool() -> None:
    sandbox, _ = make_sandbox()
    calls: list[int] = []

    def lookup(order_id: int) -> None:
        calls.append(order_id)

    outcome = await run(sandbox, make_tool(lookup), {"order_id": "x", "extra": 1})

    assert outcome.error_kind is ToolErrorKind.INVALID_ARGS
    assert outcome.error is not None
    assert outcome.error.startswith("invalid args for tool 'lookup': order_id:")
    assert "extra" in outcome.error
    assert calls == []


async def test_validator_raising_a_foreign_exception_is_invalid_args() -> None:
    sandbox, _ = make_sandbox()

    def pick(p: Picky) -> None:
        raise AssertionError("never called")

    outcome = await run(sandbox, make_tool(pick), {"p": {"n": 13}})

    assert outcome == ToolOutcome.failure(
        ToolErrorKind.INVALID_ARGS, "invalid args for tool 'pick': LookupError: unlucky"
    )


async def test_async_hang_times_out_with_the_tool_timeout() -> None:
    sandbox, _ = make_sandbox()

    async def hang() -> None:
        await asyncio.Event().wait()

    outcome = await run(sandbox, make_tool(hang, timeout_s=TINY))

    assert outcome.error_kind is ToolErrorKind.TIMEOUT
    assert outcome.transient is True
    assert outcome.error == "tool 'hang' timed out after 0.05s"


async def test_sync_hang_times_out_and_the_thread_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox, _ = make_sandbox()
    release = threading.Event()
    finished = threading.Event()

    def block() -> str:
        release.wait(timeout=10)
        finished.set()
        return "late"

    try:
        outcome = await run(sandbox, make_tool(block, timeout_s=TINY))
        assert not finished.is_set()
    finally:
        release.set()

    assert outcome.error_kind is ToolErrorKind.TIMEOUT
    assert outcome.transient is True
    assert outcome.error == "tool 'block' timed out after 0.05s"
    assert "tool 'block' timed out after 0.05s (run run_1, step 3)" in caplog.text
    assert "cannot be stopped" in caplog.text
    assert finished.wait(timeout=10)


async def test_settings_override_beats_the_tools_timeout() -> None:
    sandbox, _ = make_sandbox(timeout_overrides={"hang": TINY}, default_timeout_s=60)

    async def hang() -> None:
        await asyncio.Event().wait()

    outcome = await run(sandbox, make_tool(hang, timeout_s=30))

    assert outcome.error == "tool 'hang' timed out after 0.05s"


def test_timeout_precedence() -> None:
    sandbox, _ = make_sandbox(default_timeout_s=7, timeout_overrides={"slow": 90.0})

    def slow() -> None:
        pass

    def quick() -> None:
        pass

    assert sandbox.timeout_for(make_tool(slow, timeout_s=5)) == 90.0
    assert sandbox.timeout_for(make_tool(quick, timeout_s=5)) == 5.0
    assert sandbox.timeout_for(make_tool(quick)) == 7.0


async def test_run_deadline_caps_the_timeout() -> None:
    sandbox, clock = make_sandbox()

    async def hang() -> None:
        await asyncio.Event().wait()

    outcome = await run(sandbox, make_tool(hang, timeout_s=30), deadline=clock.monotonic() + TINY)

    assert outcome.error == "tool 'hang' timed out after 0.05s"


async def test_past_deadline_never_calls_the_tool() -> None:
    sandbox, clock = make_sandbox()
    calls: list[str] = []

    def lookup() -> None:
        calls.append("called")

    for deadline in (clock.monotonic(), clock.monotonic() - 1):
        outcome = await run(sandbox, make_tool(lookup), deadline=deadline)
        assert outcome == ToolOutcome.failure(
            ToolErrorKind.TIMEOUT,
            "tool 'lookup' was not started: the run's deadline has passed",
            transient=True,
        )
    assert calls == []


@pytest.mark.parametrize("is_async", [True, False])
async def test_exception_is_a_tool_error(is_async: bool) -> None:
    sandbox, _ = make_sandbox()

    def boom_sync(order_id: int) -> None:
        raise ValueError(f"order {order_id} not found")

    async def boom_async(order_id: int) -> None:
        boom_sync(order_id)

    spec = make_tool(boom_async if is_async else boom_sync, name="boom")
    outcome = await run(sandbox, spec, {"order_id": 4})

    assert outcome == ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, "ValueError: order 4 not found")


async def test_tools_own_timeout_error_is_a_tool_error_not_ours() -> None:
    sandbox, _ = make_sandbox()

    async def upstream() -> None:
        raise TimeoutError("upstream took too long")

    outcome = await run(sandbox, make_tool(upstream))

    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
    assert outcome.error == "TimeoutError: upstream took too long"


async def test_sync_tools_own_timeout_error_is_a_tool_error_not_ours() -> None:
    sandbox, _ = make_sandbox()

    def upstream() -> None:
        raise TimeoutError("lock wait")

    outcome = await run(sandbox, make_tool(upstream))

    assert outcome == ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, "TimeoutError: lock wait")


async def test_transient_tool_error_is_transient() -> None:
    sandbox, _ = make_sandbox()

    def flaky() -> None:
        raise TransientToolError("upstream 503")

    outcome = await run(sandbox, make_tool(flaky))

    assert outcome == ToolOutcome.failure(
        ToolErrorKind.TRANSIENT, "TransientToolError: upstream 503", transient=True
    )


async def test_value_that_cannot_be_made_json_safe_is_a_tool_error() -> None:
    sandbox, _ = make_sandbox()

    async def odd() -> Any:
        return {"x": Unserialisable()}

    outcome = await run(sandbox, make_tool(odd))

    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
    assert outcome.error is not None
    assert outcome.error.startswith("tool 'odd' returned a dict that cannot be turned into JSON")
    assert outcome.transient is False


async def test_context_is_injected_with_the_idempotency_key() -> None:
    sandbox, _ = make_sandbox()
    seen: list[ToolContext] = []

    async def refund(order_id: int, ctx: ToolContext) -> int:
        seen.append(ctx)
        return order_id

    outcome = await run(sandbox, make_tool(refund), {"order_id": 9}, attempt=2)

    assert outcome.value == 9
    assert seen == [
        ToolContext(
            run_id="run_1",
            step_id=3,
            attempt=2,
            principal=PRINCIPAL,
            idempotency_key="run_1:3",
        )
    ]


async def test_context_is_injected_into_sync_tools() -> None:
    sandbox, _ = make_sandbox()

    def whoami(context: ToolContext) -> str:
        return context.principal.id

    outcome = await run(sandbox, make_tool(whoami))

    assert outcome.value == "user_1"


async def test_unavailable_tier_is_refused_without_calling() -> None:
    clock = FakeClock()
    sandbox = TieredSandbox(clock=clock, settings=SandboxSettings(), capabilities=NO_ISOLATION)
    calls: list[str] = []

    def shell() -> None:
        calls.append("ran")

    spec = dataclasses.replace(make_tool(shell), sandbox="process")
    outcome = await run(sandbox, spec)

    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
    assert outcome.error == (
        "tool 'shell' was not run: settings ask for sandbox tier 'process', which this machine "
        "cannot provide: no pids cgroup here. Run 'bastion doctor' for details; a tool never "
        "runs on a weaker tier than it asks for"
    )
    assert calls == []


def test_default_tier_is_a_floor_never_a_ceiling() -> None:
    sandbox = TieredSandbox(
        clock=FakeClock(),
        settings=SandboxSettings(default_tier="process"),
        capabilities=ALL_TIERS,
    )
    spec = make_tool(_module_level_tool)

    assert sandbox.tier_for(spec) == "process"
    assert sandbox.tier_for(dataclasses.replace(spec, sandbox="os")) == "os"
    assert TieredSandbox(clock=FakeClock(), settings=SandboxSettings()).tier_for(spec) == "inline"


def test_a_default_tier_the_machine_lacks_fails_at_build() -> None:
    with pytest.raises(
        ConfigError, match=r"^sandbox.default_tier: settings ask for sandbox tier 'os'"
    ):
        TieredSandbox(
            clock=FakeClock(),
            settings=SandboxSettings(default_tier="os"),
            capabilities=NO_ISOLATION,
        )


def _module_level_tool() -> int:
    return 1


async def test_run_cancellation_propagates_from_an_async_tool() -> None:
    sandbox, _ = make_sandbox()
    started = asyncio.Event()

    async def wait_forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(run(sandbox, make_tool(wait_forever)))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_cancellation_propagates_from_a_sync_tool() -> None:
    sandbox, _ = make_sandbox()
    started = threading.Event()
    release = threading.Event()

    def block() -> None:
        started.set()
        release.wait(timeout=10)

    task = asyncio.create_task(run(sandbox, make_tool(block)))
    try:
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
