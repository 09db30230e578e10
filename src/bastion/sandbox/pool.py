"""`WorkerPool`: started workers of one isolated tier, kept warm so that a call skips the start-up.

A worker serves one call and is destroyed with its tree; reusing one would hand the next call
whatever the last left behind (files, threads, a patched module, a daemon). So the pool keeps
``warm_workers`` *started* workers (interpreter up, the tools' modules imported, ready frame sent)
and replaces each one it hands out as soon as that call ends (`retire`). When none is idle, a call
starts its own (a cold start), and the pool starts refilling at once.

The pool learns which modules to preload from the calls it serves: once a tool of module ``m`` has
run, the workers started afterwards import ``m`` before they are needed.

Idle workers are processes: `aclose` ends them, and so does a finalizer when the pool is collected
or the interpreter exits, so that a system dropped without closing leaves nothing running.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from pathlib import Path

from bastion.clock import Clock
from bastion.sandbox.cgroups import CgroupTree, PidsHierarchy
from bastion.sandbox.launch import Launcher, child_sys_path
from bastion.sandbox.worker import Worker, WorkerStartError
from bastion.settings import SandboxSettings

logger = logging.getLogger(__name__)


class _State:
    """What the finalizer needs, held apart from the pool so that it does not keep it alive."""

    def __init__(self) -> None:
        self.idle: deque[Worker] = deque()
        self.tree: CgroupTree | None = None

    def close_now(self) -> None:
        while self.idle:
            self.idle.popleft().kill_now()
        if self.tree is not None:
            self.tree.remove()
            self.tree = None


class WorkerPool:
    """Hands out ready workers of one tier, starting replacements in the background.

    Args:
        launcher: The tier's command line and child set-up.
        settings: How many warm workers, their limits, the start timeout.
        clock: The source of time.
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
        self._hierarchy = hierarchy
        self._preload: dict[str, None] = {}
        self._closed = False
        self._state = _State()
        self._reaping: set[asyncio.Task[None]] = set()
        self._finalizer = weakref.finalize(self, self._state.close_now)

    @property
    def cgroup_root(self) -> Path | None:
        """The directory holding this pool's workers' cgroups (None before the first worker)."""
        return self._state.tree.root if self._state.tree is not None else None

    @property
    def idle(self) -> int:
        """Started workers waiting for a call."""
        return len(self._state.idle)

    async def start(self) -> None:
        """Start the warm workers now rather than on the first call, and wait until they are ready.

        Raises:
            WorkerStartError: a worker did not start (it is ended; the others stay warm).
        """
        self._refill()
        for worker in list(self._state.idle):
            try:
                await worker.ready(self._settings.start_timeout_s)
            except WorkerStartError:
                self._state.idle.remove(worker)
                await worker.destroy()
                raise

    async def acquire(self, module: str, *, timeout_s: float) -> Worker:
        """A ready worker, warm if one is idle, else started now.

        Args:
            module: The module of the tool about to run (preloaded by later workers).
            timeout_s: How long a worker may take to become ready.

        Raises:
            WorkerStartError: the pool is closed, or the worker did not start in time.
        """
        if self._closed:
            raise WorkerStartError("the sandbox is closed")
        self._preload.setdefault(module, None)
        worker: Worker | None = None
        while self._state.idle:
            candidate = self._state.idle.popleft()
            if candidate.alive:
                worker = candidate
                break
            await candidate.destroy()
        if worker is None:
            worker = self._spawn()
            asyncio.get_running_loop().call_soon(self._refill)
        try:
            await worker.ready(timeout_s)
        except BaseException:
            await worker.destroy()
            raise
        return worker

    def retire(self, worker: Worker) -> None:
        """Destroy a spent worker in the background (its processes are already SIGKILLed)."""
        task = asyncio.ensure_future(worker.destroy())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)
        # The replacement starts now rather than when the worker was handed out: a warm call's
        # child then has the CPU to itself (two cores are common), and the new worker still
        # starts long before a steady stream of calls needs it.
        asyncio.get_running_loop().call_soon(self._refill)

    async def settle(self) -> None:
        """Wait until every retired worker is reaped and its cgroup removed."""
        while self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    async def aclose(self) -> None:
        """End the idle workers and remove the cgroups. Calls after this fail."""
        self._closed = True
        await self.settle()
        while self._state.idle:
            await self._state.idle.popleft().destroy()
        self._finalizer()

    def _tree(self) -> CgroupTree:
        if self._state.tree is None:
            self._state.tree = CgroupTree(self._hierarchy)
        return self._state.tree

    def _spawn(self) -> Worker:
        cgroup = self._tree().create(max_pids=self._settings.limits.processes)
        config = {
            "kind": "config",
            "sys_path": child_sys_path(),
            "preload": list(self._preload),
            **self._launcher.child_config(),
        }
        try:
            return Worker.spawn(
                launcher=self._launcher, config=config, cgroup=cgroup, clock=self._clock
            )
        except BaseException:
            cgroup.remove()
            raise

    def _refill(self) -> None:
        if self._closed:
            return
        try:
            while len(self._state.idle) < self._settings.warm_workers:
                self._state.idle.append(self._spawn())
        except Exception:
            # Not fatal: the next call starts its own worker and reports what fails then.
            logger.exception("could not start a warm %s-tier worker", self._launcher.tier)
