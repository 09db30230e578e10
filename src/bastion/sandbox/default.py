"""`TieredSandbox`: the default `ExecutionSandbox`, choosing each tool's tier and time limit.

It owns the decisions around a call: which tier runs it, how long it may take, what the tool is
handed (its validated args and, if it asks, a `ToolContext`), and the failures that happen before
the tool is started. Running the call is the tier's job: `bastion.sandbox.inline` in the event loop,
`bastion.sandbox.process.IsolatedTier` in a child process (``process``: `UnshareLauncher`; ``os``:
the same inside bubblewrap, `BwrapLauncher`).

A tool runs on the stronger of the tier it declares and the settings' ``default_tier`` (a floor the
operator can raise, never lower). A tier this machine cannot provide is refused with a failed
outcome naming the reasons, never replaced by a weaker one; registration
(`bastion.sandbox.capabilities.require_tier`) already refuses to declare one.

The isolated tiers keep started workers warm; `aclose` ends them (a finalizer does too, should the
sandbox be dropped without it).
"""

from __future__ import annotations

from bastion.clock import Clock
from bastion.errors import ConfigError, InvalidToolArgs
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import SandboxTier, ToolContext, ToolSpec
from bastion.sandbox.bwrap import BwrapLauncher
from bastion.sandbox.capabilities import Capabilities, machine_capabilities, unavailable_message
from bastion.sandbox.inline import describe_exception, run_inline
from bastion.sandbox.interface import ExecutionSandbox
from bastion.sandbox.launch import UnshareLauncher
from bastion.sandbox.process import IsolatedTier
from bastion.settings import SandboxSettings

_STRENGTH: dict[SandboxTier, int] = {"inline": 0, "process": 1, "os": 2}


class TieredSandbox(ExecutionSandbox):
    """Runs each call on its tool's tier, within ``min(tool's limit, run's deadline)``.

    Args:
        clock: Reads the run's deadline and measures durations.
        settings: The default timeout, per-tool overrides, the default tier and the limits.
        capabilities: What this machine supports (probed on first need when None).

    Raises:
        ConfigError: the settings' ``default_tier`` is not available on this machine.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        settings: SandboxSettings,
        capabilities: Capabilities | None = None,
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._capabilities = capabilities
        self._tiers: dict[SandboxTier, IsolatedTier] = {}
        if settings.default_tier != "inline":
            support = self.capabilities.support(settings.default_tier)
            if not support.available:
                raise ConfigError(
                    "sandbox.default_tier: " + unavailable_message(support, tool=None)
                )

    @property
    def capabilities(self) -> Capabilities:
        """What this machine's tiers can do."""
        if self._capabilities is None:
            self._capabilities = machine_capabilities()
        return self._capabilities

    def timeout_for(self, spec: ToolSpec) -> float:
        """The tool's own limit: the settings' override, else its declaration, else the default."""
        override = self._settings.timeout_overrides.get(spec.name)
        if override is not None:
            return override
        if spec.timeout_s is not None:
            return spec.timeout_s
        return self._settings.default_timeout_s

    def tier_for(self, spec: ToolSpec) -> SandboxTier:
        """The stronger of the tool's declared tier and the settings' default tier."""
        floor = self._settings.default_tier
        return spec.sandbox if _STRENGTH[spec.sandbox] >= _STRENGTH[floor] else floor

    def isolated(self, tier: SandboxTier) -> IsolatedTier:
        """The runner of an isolated tier (made on first use).

        Raises:
            ConfigError: the tier is not available on this machine.
        """
        runner = self._tiers.get(tier)
        if runner is not None:
            return runner
        support = self.capabilities.support(tier)
        hierarchy = self.capabilities.hierarchy
        if tier == "inline" or not support.available or hierarchy is None:
            raise ConfigError(unavailable_message(support))
        runner = IsolatedTier(
            launcher=self._launcher(tier),
            settings=self._settings,
            clock=self._clock,
            hierarchy=hierarchy,
        )
        self._tiers[tier] = runner
        return runner

    async def run(
        self, call: ToolCall, spec: ToolSpec, *, deadline: float, principal: Principal
    ) -> ToolOutcome:
        tier = self.tier_for(spec)
        runner: IsolatedTier | None = None
        if tier != "inline":
            try:
                runner = self.isolated(tier)
            except ConfigError as exc:
                return ToolOutcome.failure(
                    ToolErrorKind.TOOL_ERROR, f"tool {spec.name!r} was not run: {exc}"
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
        limit_s = min(self.timeout_for(spec), remaining)
        if runner is not None:
            result = await runner.run(call, spec, kwargs, limit_s=limit_s, principal=principal)
            return result.outcome
        if spec.context_param is not None:
            kwargs[spec.context_param] = ToolContext(
                run_id=call.run_id,
                step_id=call.step_id,
                attempt=call.attempt,
                principal=principal,
                idempotency_key=call.idempotency_key,
            )
        return await run_inline(call, spec, kwargs, limit_s=limit_s, clock=self._clock)

    async def aclose(self) -> None:
        """End the isolated tiers' warm workers. Safe to call twice."""
        for runner in self._tiers.values():
            await runner.aclose()
        self._tiers.clear()

    def _launcher(self, tier: SandboxTier) -> UnshareLauncher | BwrapLauncher:
        caps = self.capabilities
        if tier == "process" and caps.unshare is not None:
            return UnshareLauncher(settings=self._settings, unshare=caps.unshare)
        if tier == "os" and caps.bwrap is not None:
            return BwrapLauncher(settings=self._settings, bwrap=caps.bwrap)
        raise ConfigError(f"sandbox tier {tier!r} has no launcher on this machine")
