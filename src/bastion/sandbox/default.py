"""`TieredSandbox`: the default `ExecutionSandbox`, choosing each tool's tier and time limit.

It owns the decisions around a call: which tier runs it, how long it may take, what the tool is
handed (its validated args and, if it asks, a `ToolContext`), and the failures that happen before
the tool is started. Running the call is the tier's job (`bastion.sandbox.inline`).

Only the ``inline`` tier exists so far (DESIGN.md lists ``process`` and ``os`` too). A tool that
asks for another tier is refused with a failed outcome rather than run with weaker isolation than
its author asked for; `bastion.router.registry` already refuses to declare one.
"""

from __future__ import annotations

from bastion.clock import Clock
from bastion.errors import InvalidToolArgs
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolContext, ToolSpec
from bastion.sandbox.inline import describe_exception, run_inline
from bastion.sandbox.interface import ExecutionSandbox
from bastion.settings import SandboxSettings


class TieredSandbox(ExecutionSandbox):
    """Runs each call on its tool's tier, within ``min(tool's limit, run's deadline)``.

    Args:
        clock: Reads the run's deadline and measures durations.
        settings: The default timeout and per-tool overrides.
    """

    def __init__(self, *, clock: Clock, settings: SandboxSettings) -> None:
        self._clock = clock
        self._settings = settings

    def timeout_for(self, spec: ToolSpec) -> float:
        """The tool's own limit: the settings' override, else its declaration, else the default."""
        override = self._settings.timeout_overrides.get(spec.name)
        if override is not None:
            return override
        if spec.timeout_s is not None:
            return spec.timeout_s
        return self._settings.default_timeout_s

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        if spec.sandbox != "inline":
            return ToolOutcome.failure(
                ToolErrorKind.TOOL_ERROR,
                f"tool {spec.name!r} was not run: sandbox tier {spec.sandbox!r} is not available "
                "yet, only 'inline' is implemented",
            )
        try:
            kwargs = spec.validate_args(call.args)
        except InvalidToolArgs as exc:
            return ToolOutcome.failure(ToolErrorKind.INVALID_ARGS, str(exc))
        except Exception as exc:  # a custom validator raising something pydantic does not wrap
            return ToolOutcome.failure(
                ToolErrorKind.INVALID_ARGS,
                f"invalid args for tool {spec.name!r}: {describe_exception(exc)}",
            )
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0:
            return ToolOutcome.failure(
                ToolErrorKind.TIMEOUT,
                f"tool {spec.name!r} was not started: the run's deadline has passed",
                transient=True,
            )
        if spec.context_param is not None:
            kwargs[spec.context_param] = ToolContext(
                run_id=call.run_id,
                step_id=call.step_id,
                attempt=call.attempt,
                principal=principal,
                idempotency_key=call.idempotency_key,
            )
        limit_s = min(self.timeout_for(spec), remaining)
        return await run_inline(call, spec, kwargs, limit_s=limit_s, clock=self._clock)
