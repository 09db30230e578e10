from __future__ import annotations

import math

import pytest

from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool
from bastion.sandbox.cache import CachingSandbox
from bastion.sandbox.interface import ExecutionSandbox
from bastion.testing.clock import FakeClock

ALICE, BOB = Principal(id="alice"), Principal(id="bob")


def order_status(order_id: int) -> dict[str, str]:
    """Read an order's status."""
    return {}


def refund(order_id: int) -> None:
    """Refund an order."""


READ = make_tool(order_status)
WRITE = make_tool(refund, side_effects=True, idempotent=True)


class Scripted(ExecutionSandbox):
    def __init__(self, *outcomes: ToolOutcome) -> None:
        self.outcomes = list(outcomes)
        self.closed = False

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        return self.outcomes.pop(0)

    async def aclose(self) -> None:
        self.closed = True


def call(order_id: int = 7) -> ToolCall:
    return ToolCall(run_id="r", step_id=1, tool_name="order_status", args={"order_id": order_id})


DOWN = ToolOutcome.failure(ToolErrorKind.CIRCUIT_OPEN, "breaker open")
FRESH = ToolOutcome.success({"status": "shipped"})


async def run(
    sandbox: CachingSandbox,
    spec: ToolSpec = READ,
    c: ToolCall | None = None,
    who: Principal = ALICE,
) -> ToolOutcome:
    return await sandbox.run(c or call(), spec, deadline=math.inf, principal=who)


@pytest.mark.parametrize(
    "kind",
    [
        ToolErrorKind.CIRCUIT_OPEN,
        ToolErrorKind.TIMEOUT,
        ToolErrorKind.TRANSIENT,
        ToolErrorKind.CRASHED,
    ],
)
async def test_a_down_read_only_tool_serves_its_last_result_marked_with_its_age(
    kind: ToolErrorKind,
) -> None:
    clock = FakeClock()
    sandbox = CachingSandbox(
        Scripted(FRESH, ToolOutcome.failure(kind, "down")), clock=clock, ttl_s=600
    )
    assert (await run(sandbox)).cached_age_s is None
    clock.advance(42.0)

    served = await run(sandbox)

    assert served.ok
    assert served.value == {"status": "shipped"}
    assert served.cached_age_s == 42.0


async def test_nothing_is_served_past_the_ttl_nor_for_other_args_or_another_user() -> None:
    clock = FakeClock()
    inner = Scripted(FRESH, DOWN, DOWN, DOWN)
    sandbox = CachingSandbox(inner, clock=clock, ttl_s=60)
    await run(sandbox)

    assert await run(sandbox, c=call(8)) is DOWN  # other args
    assert await run(sandbox, who=BOB) is DOWN  # never another user's result
    clock.advance(61.0)
    assert await run(sandbox) is DOWN  # too old


async def test_a_tool_with_side_effects_is_never_served_from_cache() -> None:
    inner = Scripted(FRESH, DOWN)
    sandbox = CachingSandbox(inner, clock=FakeClock(), ttl_s=600)
    await run(sandbox, WRITE)

    assert await run(sandbox, WRITE) is DOWN


async def test_a_wrong_call_is_not_hidden_by_the_cache() -> None:
    invalid = ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, "no such order")
    sandbox = CachingSandbox(Scripted(FRESH, invalid), clock=FakeClock(), ttl_s=600)
    await run(sandbox)

    assert await run(sandbox) is invalid


async def test_the_cache_is_bounded_least_recently_used_out() -> None:
    clock = FakeClock()
    sandbox = CachingSandbox(
        Scripted(FRESH, FRESH, FRESH, DOWN, DOWN), clock=clock, ttl_s=600, max_entries=2
    )
    for order in (1, 2, 3):
        await run(sandbox, c=call(order))

    assert await run(sandbox, c=call(1)) is DOWN  # evicted
    assert (await run(sandbox, c=call(3))).ok


async def test_close_reaches_the_wrapped_sandbox() -> None:
    inner = Scripted()
    await CachingSandbox(inner, clock=FakeClock(), ttl_s=1).aclose()
    assert inner.closed
