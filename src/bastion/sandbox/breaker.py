"""`BreakerSandbox`: a circuit breaker per tool, wrapped around any `ExecutionSandbox`.

A tool that keeps failing is not called again until its breaker (``tool:<name>`` on the board)
lets a probe through; meanwhile its calls fail fast with a CIRCUIT_OPEN outcome, so the Recovery
Handler can use the tool's fallback or replan instead of waiting on timeouts.

Only the tool's own failures count (TIMEOUT, TOOL_ERROR, CRASHED, TRANSIENT, RESOURCE_EXHAUSTED).
The caller's mistakes (INVALID_ARGS, DENIED, UNKNOWN_TOOL) say nothing about the tool's health,
and a planner sending bad args must not be able to switch a tool off for everyone.
"""

from __future__ import annotations

from bastion.errors import CircuitOpen
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.resilience.breaker import BreakerBoard, Verdict
from bastion.resilience.retry_budget import RetryBudget
from bastion.router.interface import ToolSpec
from bastion.sandbox.interface import ExecutionSandbox

#: Outcome kinds that are the tool's fault, and so count against its breaker.
COUNTED_FAILURES = frozenset(
    {
        ToolErrorKind.TIMEOUT,
        ToolErrorKind.TOOL_ERROR,
        ToolErrorKind.CRASHED,
        ToolErrorKind.TRANSIENT,
        ToolErrorKind.RESOURCE_EXHAUSTED,
    }
)


def classify(outcome: ToolOutcome) -> Verdict:
    """How a tool call's outcome counts against the tool's breaker."""
    if outcome.ok:
        return Verdict.SUCCESS
    return Verdict.FAILURE if outcome.error_kind in COUNTED_FAILURES else Verdict.IGNORED


class BreakerSandbox(ExecutionSandbox):
    """Refuses calls to a tool whose breaker is open; records every other call's result.

    Args:
        wrapped: The sandbox that runs the calls.
        board: Holds one breaker per tool, named ``tool:<name>``.
        budget: Counts each call towards the retry budget (optional).
    """

    def __init__(
        self, wrapped: ExecutionSandbox, board: BreakerBoard, *, budget: RetryBudget | None = None
    ) -> None:
        self._wrapped = wrapped
        self._board = board
        self._budget = budget

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        breaker = await self._board.sync(f"tool:{spec.name}")
        try:
            breaker.check()
        except CircuitOpen as exc:
            return ToolOutcome.failure(
                ToolErrorKind.CIRCUIT_OPEN,
                f"tool {spec.name!r} was not called: it has been failing and its circuit "
                f"breaker is open (until t={exc.retry_at:.3f} on the monotonic clock); "
                "use another tool or try later",
            )
        if self._budget is not None:
            self._budget.record_call()
        try:
            outcome = await self._wrapped.run(call, spec, deadline=deadline, principal=principal)
        except BaseException:
            # Cancellation (or a wrapped sandbox breaking its contract) is no verdict on the
            # tool, but must not keep a half-open probe slot taken forever.
            breaker.release()
            raise
        breaker.record(classify(outcome), duration_s=outcome.duration_s)
        await self._board.flush()
        return outcome

    async def aclose(self) -> None:
        """Close the wrapped sandbox, if it holds anything (warm workers)."""
        aclose = getattr(self._wrapped, "aclose", None)
        if aclose is not None:
            await aclose()
