"""``run_python`` for apps: as a tool the planner can call, or as a runner the app's own code calls.

Agents that can run code compute exactly what they would otherwise guess (a pro-rata refund, a
date difference, a sum over a table). The code runs in bubblewrap (`bastion.sandbox.bwrap`): no
network, no host files, a private size-capped workspace, the sandbox's time, memory, CPU and
process limits; see `bastion.tools.pyexec` for what it gets and returns.

* `make_run_python` makes the tool. A factory rather than a ready-made `ToolSpec`: registering a
  tool on the ``os`` tier checks that this machine can provide it (bubblewrap, a pids cgroup),
  which must happen when an app is built, not when this module is imported; and apps choose the
  permission and limits.
* `PythonRunner` runs a snippet the *app* wrote (a fixed calculation fed with data it looked up)
  through the same tool on the same tier: the support demo's pro-rata refund is one. Small models
  choose a purpose-named tool reliably but write arithmetic code poorly; the runner lets the
  model pick the tool and the app supply the code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from decimal import Decimal

from bastion.clock import Clock, SystemClock
from bastion.messages import Principal, ToolCall, ToolErrorKind
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool
from bastion.settings import SandboxSettings
from bastion.tools.pyexec import PythonResult, run_python

#: A snippet that needs longer is probably stuck.
DEFAULT_TIMEOUT_S = 10.0


def make_run_python(
    *,
    name: str = "run_python",
    permissions: Iterable[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cost_usd: Decimal | int | str = Decimal(0),
) -> ToolSpec:
    """The ``run_python(code, files=None)`` tool on the ``os`` tier.

    Args:
        name: The name the planner sees.
        permissions: Scopes a caller needs to run code, e.g. ``("code:run",)``.
        timeout_s: Longest a snippet may run.
        cost_usd: Price of one call.

    Raises:
        ConfigError: this machine cannot provide the ``os`` tier (the message says why; run
            ``bastion doctor``).
    """
    return make_tool(
        run_python,
        name=name,
        permissions=permissions,
        timeout_s=timeout_s,
        cost_usd=cost_usd,
        sandbox="os",
        tags=("code",),
    )


class PythonRunFailed(Exception):
    """A snippet run by `PythonRunner` did not complete: ``kind`` says how, the message why."""

    def __init__(self, kind: ToolErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PythonRunner:
    """Runs the app's own snippets with ``run_python`` on the ``os`` tier.

    Args:
        settings: The sandbox's limits (no warm workers by default: a runner is used now and
            then, and a cold start costs a fraction of a second).
        clock: The source of time.

    Raises:
        ConfigError: this machine cannot provide the ``os`` tier.
    """

    def __init__(
        self, *, settings: SandboxSettings | None = None, clock: Clock | None = None
    ) -> None:
        # Imported here: the sandbox's runtime is not needed to declare the tool.
        from bastion.sandbox.default import TieredSandbox

        self._clock = clock or SystemClock()
        self._spec = make_run_python(name="app_python")
        self._sandbox = TieredSandbox(
            clock=self._clock, settings=settings or SandboxSettings(warm_workers=0)
        )
        self._calls = itertools.count(1)

    async def run(
        self,
        code: str,
        *,
        files: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> PythonResult:
        """Run `code` in the sandbox; what it printed, set as ``result`` and wrote.

        Raises:
            PythonRunFailed: it raised, timed out, went over a limit or was denied something.
        """
        call = ToolCall(
            run_id="python-runner",
            step_id=next(self._calls),
            tool_name=self._spec.name,
            args={"code": code, "files": dict(files or {})},
        )
        outcome = await self._sandbox.run(
            call,
            self._spec,
            deadline=self._clock.monotonic() + timeout_s,
            principal=Principal(id="app"),
        )
        # Reap now: a runner may be used from short-lived event loops, which must not close
        # with the worker's clean-up still pending.
        await self._sandbox.isolated("os").pool.settle()
        if not outcome.ok:
            assert outcome.error_kind is not None
            raise PythonRunFailed(outcome.error_kind, outcome.error or str(outcome.error_kind))
        value: PythonResult = outcome.value
        return value

    async def aclose(self) -> None:
        """End the sandbox's workers (a finalizer does it too if this is forgotten)."""
        await self._sandbox.aclose()
