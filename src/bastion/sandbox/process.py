"""`IsolatedTier`: runs one call on the ``process`` or ``os`` tier and classifies how it ended.

Both tiers run the same child (`bastion.sandbox.child`) the same way; they differ only in the
launcher that wraps it (`UnshareLauncher`, `BwrapLauncher`). This module turns a call into the
child's **call** frame: which function (``module`` and ``qualname``: it must be importable there,
`entry_point`), its args as JSON (with a flag asking the child to rebuild their Python types when
JSON loses them: a `Decimal`, a `datetime`), the `ToolContext` as data, and the limits. The whole
call, start-up of a cold worker included, fits in the time it is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolSpec
from bastion.sandbox.cgroups import PidsHierarchy
from bastion.sandbox.launch import Launcher
from bastion.sandbox.limits import CallLimits
from bastion.sandbox.outcomes import CallContext, classify
from bastion.sandbox.pool import WorkerPool
from bastion.sandbox.worker import CallEnd, WorkerStartError
from bastion.settings import SandboxSettings

_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True, kw_only=True)
class TierResult:
    """The outcome of an isolated call, and how it ended as seen from outside.

    ``end`` is None when the call never started (no worker, a tool that cannot be loaded).
    """

    outcome: ToolOutcome
    end: CallEnd | None


def entry_point(fn: Callable[..., Any], *, tool: str, verify: bool = True) -> tuple[str, str]:
    """``(module, qualname)`` under which the child finds `fn`.

    Args:
        fn: The tool's function.
        tool: Its name, for the message.
        verify: Also look the name up and check it leads back to `fn` (not possible while the
            module defining `fn` is still being imported, as when ``@tool`` runs).

    Raises:
        ConfigError: `fn` is not reachable by name from its module (a lambda, a closure, a bound
            method, a ``__main__`` function), so a child process could not import it.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    problem = None
    if not isinstance(module, str) or not isinstance(qualname, str):
        problem = "it has no __module__/__qualname__"
    elif module == "__main__":
        problem = "it is defined in __main__, which a child process cannot import"
    elif "<" in qualname or inspect.ismethod(fn):
        problem = "it is a lambda, a nested function or a bound method"
    if problem is None and verify:
        import importlib

        target: Any = importlib.import_module(str(module))
        for part in str(qualname).split("."):
            target = getattr(target, part, None)
        if isinstance(target, ToolSpec):
            target = target.fn
        if target is not fn:
            problem = f"{module}.{qualname} does not lead back to it"
    if problem is not None:
        raise ConfigError(
            f"tool {tool!r} cannot run in a child process: {problem}; define it as a "
            "module-level function"
        )
    return str(module), str(qualname)


def _plain_json(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if type(value) is list:
        return all(_plain_json(item) for item in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    return False


def call_request(
    call: ToolCall,
    spec: ToolSpec,
    kwargs: dict[str, Any],
    *,
    principal: Principal,
    limits: CallLimits,
) -> dict[str, Any]:
    """The child's **call** frame for `call`."""
    module, qualname = entry_point(spec.fn, tool=spec.name)
    args = {k: v for k, v in kwargs.items() if k != spec.context_param}
    context = None
    if spec.context_param is not None:
        context = {
            "param": spec.context_param,
            "run_id": call.run_id,
            "step_id": call.step_id,
            "attempt": call.attempt,
            "idempotency_key": call.idempotency_key,
            "principal": {
                "id": principal.id,
                "roles": sorted(principal.roles),
                "scopes": sorted(principal.scopes),
                "display_name": principal.display_name,
            },
        }
    return {
        "kind": "call",
        "module": module,
        "qualname": qualname,
        "kwargs": to_jsonable_python(args),
        "revalidate": not all(_plain_json(v) for v in args.values()),
        "context": context,
        "is_async": spec.is_async,
        "limits": limits.for_child(),
        "max_result_bytes": limits.result_bytes,
    }


class IsolatedTier:
    """One isolated tier: a pool of workers started by `launcher`.

    Args:
        launcher: The tier's command line (process or os).
        settings: Limits, warm workers, start timeout.
        clock: Measures durations.
        hierarchy: Where the workers' pids cgroups are made.
    """

    def __init__(
        self,
        *,
        launcher: Launcher,
        settings: SandboxSettings,
        clock: Clock,
        hierarchy: PidsHierarchy,
    ) -> None:
        self._launcher = launcher
        self._settings = settings
        self._clock = clock
        self.limits = CallLimits.from_settings(settings.limits)
        self.pool = WorkerPool(
            launcher=launcher, settings=settings, clock=clock, hierarchy=hierarchy
        )

    @property
    def tier(self) -> str:
        """``"process"`` or ``"os"``."""
        return self._launcher.tier

    async def run(
        self,
        call: ToolCall,
        spec: ToolSpec,
        kwargs: dict[str, Any],
        *,
        limit_s: float,
        principal: Principal,
    ) -> TierResult:
        """Run `call` in a fresh worker for at most `limit_s` seconds.

        Never raises, but for cancellation: every failure is a failed outcome.
        """
        started = self._clock.monotonic()
        try:
            request = call_request(call, spec, kwargs, principal=principal, limits=self.limits)
        except ConfigError as exc:
            return TierResult(
                outcome=ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, str(exc)), end=None
            )
        try:
            worker = await self.pool.acquire(
                request["module"], timeout_s=min(self._settings.start_timeout_s, limit_s)
            )
        except WorkerStartError as exc:
            return TierResult(outcome=self._not_started(spec, started, limit_s, exc), end=None)
        remaining = limit_s - (self._clock.monotonic() - started)
        try:
            end = await worker.call(request, limit_s=max(remaining, 0.0), limits=self.limits)
        finally:
            self.pool.retire(worker)
        context = CallContext(
            spec=spec,
            tier=self.tier,
            limits=self.limits,
            limit_s=limit_s,
            duration_s=self._clock.monotonic() - started,
            network=self._launcher.network,
            visible_roots=self._launcher.visible_roots(),
            hidden_roots=self._launcher.hidden_roots(),
        )
        return TierResult(outcome=classify(end, context), end=end)

    async def aclose(self) -> None:
        """End the idle workers."""
        await self.pool.aclose()

    def _not_started(
        self, spec: ToolSpec, started: float, limit_s: float, exc: WorkerStartError
    ) -> ToolOutcome:
        elapsed = self._clock.monotonic() - started
        if elapsed >= limit_s:
            return ToolOutcome.failure(
                ToolErrorKind.TIMEOUT,
                f"tool {spec.name!r} timed out after {round(limit_s, 3)}s while its {self.tier} "
                "sandbox was starting",
                duration_s=elapsed,
                transient=True,
            )
        return ToolOutcome.failure(
            ToolErrorKind.CRASHED,
            f"the {self.tier} sandbox for tool {spec.name!r} could not start: {exc}",
            duration_s=elapsed,
        )
