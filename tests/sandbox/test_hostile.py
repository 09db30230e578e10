"""The hostile suite: tools that try to escape or exhaust their tier, on the process and os tiers.

Each runs as root (CI does), ends in the outcome class the issue names, never reads the canary
secret (set in the runtime's environment, written to a host file, served on 127.0.0.1), leaves no
process behind (checked from outside: the cgroup tree, and the whole of ``/proc`` for the daemon)
and changes nothing on the host. Every call, the deadline-bound ones included, ends less than a
second after its limit.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bastion.messages import Principal, ToolCall, ToolErrorKind
from bastion.router.interface import SandboxTier
from bastion.router.registry import make_tool
from bastion.sandbox.default import TieredSandbox
from bastion.sandbox.process import TierResult

CANARY = f"canary-{uuid.uuid4().hex}"
PRINCIPAL = Principal(id="tester")
LIMITS = {"cpu_s": 1, "workspace_mb": 4, "output_kb": 64, "processes": 32, "memory_mb": 256}


@pytest.fixture
async def sandbox(make_sandbox, monkeypatch: pytest.MonkeyPatch) -> TieredSandbox:
    monkeypatch.setenv("BASTION_TEST_CANARY", CANARY)  # the runtime holds the secret
    return make_sandbox(warm_workers=0, limits=LIMITS)


@pytest.fixture
def canary_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(CANARY)
    path.chmod(0o600)
    return path


@pytest.fixture
async def canary_server() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CANARY.encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Reachable from outside the sandbox: the test itself reads the canary.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.read()).decode() == CANARY
    writer.close()
    await writer.wait_closed()
    yield port
    server.close()
    await server.wait_closed()


async def attack(
    sandbox: TieredSandbox,
    tier: SandboxTier,
    fn: Any,
    args: dict[str, Any] | None = None,
    *,
    limit_s: float = 1.5,
) -> TierResult:
    """Run `fn` on `tier`; check the deadline, the canary and that nothing is left running."""
    args = args or {}
    spec = make_tool(fn, sandbox=tier)
    runner = sandbox.isolated(tier)
    call = ToolCall(run_id="run_hostile", step_id=1, tool_name=spec.name, args=args)
    started = time.perf_counter()
    result = await runner.run(call, spec, args, limit_s=limit_s, principal=PRINCIPAL)
    elapsed = time.perf_counter() - started
    assert elapsed < limit_s + 1.0, f"{spec.name} ended {elapsed - limit_s:.2f}s past its limit"
    assert CANARY not in repr(result.outcome)
    assert result.end is not None
    assert CANARY.encode() not in result.end.output
    await runner.pool.settle()
    root = runner.pool.cgroup_root
    assert root is not None
    assert [p for p in root.iterdir() if p.is_dir()] == [], "a worker's cgroup survived the call"
    return result


def on_host(path: str) -> bool:
    return os.path.exists(path)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


async def test_fork_bomb_hits_the_process_cap(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.fork_bomb)

    assert result.outcome.error_kind is ToolErrorKind.RESOURCE_EXHAUSTED
    assert "more than 32 processes" in (result.outcome.error or "")
    assert result.end is not None
    assert result.end.cap_hits > 0


async def test_memory_bomb_runs_out_of_memory(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.memory_bomb, limit_s=5)

    assert result.outcome.error_kind is ToolErrorKind.RESOURCE_EXHAUSTED
    assert "ran out of memory" in (result.outcome.error or "")


async def test_cpu_spin_is_stopped_by_its_cpu_seconds(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.cpu_spin, limit_s=5)

    assert result.outcome.error_kind is ToolErrorKind.RESOURCE_EXHAUSTED
    assert "used its 1 CPU seconds" in (result.outcome.error or "")


async def test_sleep_past_the_deadline_times_out(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.sleep_past_deadline)

    assert result.outcome.error_kind is ToolErrorKind.TIMEOUT
    assert result.outcome.transient


async def test_ignoring_sigterm_does_not_outlive_the_deadline(
    sandbox, tier, hostile: ModuleType
) -> None:
    result = await attack(sandbox, tier, hostile.ignore_sigterm)

    assert result.outcome.error_kind is ToolErrorKind.TIMEOUT


async def test_a_daemonised_grandchild_is_gone_after_the_deadline(
    sandbox, tier, hostile: ModuleType
) -> None:
    marker = f"bastion-daemon-{uuid.uuid4().hex}"

    result = await attack(sandbox, tier, hostile.daemonise, {"marker": marker})

    assert result.outcome.error_kind is ToolErrorKind.TIMEOUT
    assert result.end is not None
    assert f"daemon {marker} running".encode() in result.end.output  # it did start
    assert processes_with(marker) == []  # and no process anywhere on the host still has it


async def test_output_flood_is_cut_off(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.output_flood)

    assert result.outcome.error_kind is ToolErrorKind.RESOURCE_EXHAUSTED
    assert "more than 64 KiB to stdout/stderr" in (result.outcome.error or "")


async def test_filling_the_workspace_stops_at_its_size(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.disk_fill)

    assert result.outcome.error_kind is ToolErrorKind.RESOURCE_EXHAUSTED
    assert "workspace is full (4 MiB)" in (result.outcome.error or "")
    assert not on_host("/tmp/workspace/fill.bin")  # it was never on the host


async def test_the_runtime_environment_is_not_inherited(sandbox, tier, hostile: ModuleType) -> None:
    assert os.environ["BASTION_TEST_CANARY"] == CANARY

    result = await attack(sandbox, tier, hostile.read_environment)

    assert result.outcome.ok
    assert set(result.outcome.value) <= {"PATH", "LANG", "PWD"}


async def test_pid_1_environ_holds_no_secret(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.read_pid1_environ)

    # PID 1 (the process tier's supervisor, bubblewrap's init) is root's: the tool, which is
    # not, may not read it. Had it been readable, it holds the scrubbed environment only.
    assert result.outcome.error_kind is ToolErrorKind.DENIED


async def test_a_host_file_outside_the_sandbox_cannot_be_read(
    sandbox, tier, hostile: ModuleType, canary_file: Path
) -> None:
    result = await attack(sandbox, tier, hostile.read_file, {"path": str(canary_file)})

    assert result.outcome.error_kind is ToolErrorKind.DENIED


@pytest.mark.parametrize("where", ["tmp", "usr"])
async def test_writing_outside_the_workspace_is_denied(
    sandbox, tier, hostile: ModuleType, tmp_path: Path, where: str
) -> None:
    target = (
        tmp_path / "written.txt" if where == "tmp" else Path(f"/usr/lib/bastion-{uuid.uuid4().hex}")
    )

    result = await attack(sandbox, tier, hostile.write_file, {"path": str(target)})

    assert result.outcome.error_kind is ToolErrorKind.DENIED
    assert not target.exists()


async def test_a_symlink_planted_in_the_workspace_is_never_followed(
    sandbox, tier, hostile: ModuleType, canary_file: Path
) -> None:
    result = await attack(sandbox, tier, hostile.plant_symlink, {"target": str(canary_file)})

    assert result.outcome.error_kind is ToolErrorKind.DENIED
    assert "is a symbolic link" in (result.outcome.error or "")


async def test_tcp_to_a_local_listener_is_denied(
    sandbox, tier, hostile: ModuleType, canary_server: int
) -> None:
    result = await attack(sandbox, tier, hostile.tcp_connect, {"port": canary_server})

    assert result.outcome.error_kind is ToolErrorKind.DENIED
    assert "tried to use the network" in (result.outcome.error or "")


async def test_dns_is_denied(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.resolve, {"host": "example.com"})

    assert result.outcome.error_kind is ToolErrorKind.DENIED
    assert "tried to use the network" in (result.outcome.error or "")


async def test_host_kernel_settings_cannot_be_written(sandbox, tier, hostile: ModuleType) -> None:
    setting = Path("/proc/sys/kernel/printk_ratelimit")
    before = read_text(setting)
    try:
        result = await attack(sandbox, tier, hostile.write_sysctl, {"value": "7"})
        after = read_text(setting)
    finally:
        if read_text(setting) != before:  # never leave the host changed, even when failing
            write_text(setting, before)

    assert result.outcome.error_kind is ToolErrorKind.DENIED
    assert after == before


async def test_the_tool_runs_unprivileged(sandbox, tier, hostile: ModuleType) -> None:
    result = await attack(sandbox, tier, hostile.whoami)

    assert result.outcome.value == [65534, 65534, 0]  # the sandbox user, no capability at all


def read_text(path: Path) -> str:
    return path.read_text()


def write_text(path: Path, text: str) -> None:
    path.write_text(text)
