"""Warm workers: started ahead, replaced when handed out, ended on close or when dropped."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from bastion.clock import SystemClock
from bastion.messages import Principal, ToolCall, ToolErrorKind
from bastion.router.registry import make_tool
from bastion.sandbox import probe
from bastion.sandbox.capabilities import machine_capabilities
from bastion.sandbox.launch import UnshareLauncher
from bastion.sandbox.pool import WorkerPool
from bastion.sandbox.process import IsolatedTier
from bastion.sandbox.worker import Worker, WorkerStartError
from bastion.settings import SandboxSettings

from .conftest import require_tier


class BrokenLauncher:
    """Starts something that is not the sandbox child."""

    tier = "process"
    network = False

    def __init__(self, command: list[str]) -> None:
        self._command = command

    def command(self, child_argv: list[str]) -> list[str]:
        return self._command

    def child_config(self) -> dict[str, Any]:
        return {}

    def visible_roots(self) -> tuple[str, ...] | None:
        return None

    def hidden_roots(self) -> tuple[str, ...]:
        return ()


@pytest.fixture
def caps():
    require_tier("process")
    return machine_capabilities()


def make_pool(caps, launcher: Any = None, **settings: Any) -> WorkerPool:
    settings_ = SandboxSettings(**settings)
    return WorkerPool(
        launcher=launcher or UnshareLauncher(settings=settings_, unshare=caps.unshare),
        settings=settings_,
        clock=SystemClock(),
        hierarchy=caps.hierarchy,
    )


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_pids(root: Path | None) -> list[int]:
    if root is None or not root.exists():
        return []
    return [
        int(pid)
        for group in root.iterdir()
        if group.is_dir()
        for pid in (group / "cgroup.procs").read_text().split()
    ]


async def test_warm_workers_are_started_and_replaced(caps) -> None:
    pool = make_pool(caps, warm_workers=2)
    try:
        await pool.start()
        assert pool.idle == 2
        worker = await pool.acquire("bastion.sandbox.probe", timeout_s=20)
        assert pool.idle == 1
        pool.retire(worker)  # the call is over: its worker is destroyed, and replaced
        await pool.settle()
        assert pool.idle == 2
    finally:
        await pool.aclose()


async def test_close_ends_idle_workers_and_removes_the_cgroups(caps) -> None:
    pool = make_pool(caps, warm_workers=2)
    await pool.start()
    root = pool.cgroup_root
    pids = worker_pids(root)
    assert len(pids) >= 2

    await pool.aclose()

    assert root is not None
    assert not root.exists()
    assert not any(running(pid) for pid in pids)
    with pytest.raises(WorkerStartError, match="closed"):
        await pool.acquire("m", timeout_s=1)


async def test_a_pool_dropped_without_close_leaves_nothing_running(caps) -> None:
    pool = make_pool(caps, warm_workers=2)
    await pool.start()
    root = pool.cgroup_root
    pids = worker_pids(root)

    del pool
    gc.collect()

    assert root is not None
    assert not root.exists()
    assert not any(running(pid) for pid in pids)


async def test_modules_seen_are_preloaded_by_later_workers(caps, monkeypatch) -> None:
    configs: list[dict[str, Any]] = []
    spawn = Worker.spawn

    def recording(**kwargs: Any) -> Worker:
        configs.append(kwargs["config"])
        return spawn(**kwargs)

    monkeypatch.setattr(Worker, "spawn", recording)
    pool = make_pool(caps, warm_workers=1)
    try:
        await pool.start()
        worker = await pool.acquire("bastion.sandbox.probe", timeout_s=20)
        pool.retire(worker)
        await pool.settle()
        assert [config["preload"] for config in configs] == [[], ["bastion.sandbox.probe"]]
    finally:
        await pool.aclose()


async def test_a_worker_that_dies_at_start_is_reported_with_its_output(caps) -> None:
    pool = make_pool(caps, BrokenLauncher(["/bin/sh", "-c", "echo cannot start >&2; exit 7"]))
    try:
        with pytest.raises(WorkerStartError, match=r"status 7\).*cannot start"):
            await pool.acquire("m", timeout_s=20)
    finally:
        await pool.aclose()


async def test_a_worker_that_never_gets_ready_times_out(caps) -> None:
    pool = make_pool(caps, BrokenLauncher(["/bin/sleep", "30"]), warm_workers=0)
    try:
        with pytest.raises(WorkerStartError, match=r"not ready within 0\.2s"):
            await pool.acquire("m", timeout_s=0.2)
        await pool.settle()
        assert worker_pids(pool.cgroup_root) == []
    finally:
        await pool.aclose()


async def test_a_tier_whose_worker_cannot_start_crashes_the_call_cleanly(caps) -> None:
    settings = SandboxSettings(warm_workers=0)
    tier = IsolatedTier(
        launcher=BrokenLauncher(["/bin/false"]),
        settings=settings,
        clock=SystemClock(),
        hierarchy=caps.hierarchy,
    )
    spec = make_tool(probe.echo)
    call = ToolCall(run_id="r", step_id=1, tool_name="echo", args={"value": 1})
    try:
        result = await tier.run(call, spec, {"value": 1}, limit_s=5, principal=Principal(id="p"))
    finally:
        await tier.aclose()

    assert result.outcome.error_kind is ToolErrorKind.CRASHED
    assert "the process sandbox for tool 'echo' could not start" in (result.outcome.error or "")
    assert result.end is None
