"""The process tier end to end: args and results across the boundary, errors, crashes, cancel."""

from __future__ import annotations

import asyncio
import importlib
import json
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.messages import Principal, ToolCall, ToolErrorKind
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool
from bastion.sandbox.limits import CallLimits
from bastion.sandbox.process import call_request, entry_point
from bastion.settings import SandboxLimits

from .conftest import HOSTILE_DIR, require_tier

PRINCIPAL = Principal(id="lead", roles=frozenset({"staff"}), scopes=frozenset({"b", "a"}))


@pytest.fixture
def samples(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(HOSTILE_DIR))
    return importlib.import_module("bastion_sandbox_samples")


@pytest.fixture
def sandbox(make_sandbox):
    require_tier("process")
    return make_sandbox(warm_workers=1, limits={"result_kb": 64})


async def call(sandbox, fn: Any, args: dict[str, Any] | None = None, *, limit_s: float = 10):
    spec = fn if isinstance(fn, ToolSpec) else make_tool(fn, sandbox="process")
    call = ToolCall(run_id="run_p", step_id=2, tool_name=spec.name, args=args or {}, attempt=3)
    deadline = SystemClock().monotonic() + limit_s
    return await sandbox.run(call, spec, deadline=deadline, principal=PRINCIPAL)


async def test_typed_args_and_results_cross_the_boundary(sandbox, samples) -> None:
    outcome = await call(sandbox, samples.add_money, {"a": "1.10", "b": "2.20"})

    assert outcome.ok, outcome.error
    assert outcome.value == {"amount": "3.30", "items": 2}


async def test_the_tool_context_reaches_the_child(sandbox, samples) -> None:
    outcome = await call(sandbox, samples.whoami, {"label": "x"})

    assert outcome.value == {
        "label": "x",
        "principal": "lead",
        "scopes": ["a", "b"],
        "key": "run_p:2",
        "attempt": 3,
    }


async def test_async_tools_and_decorated_specs_run(sandbox, samples) -> None:
    assert (await call(sandbox, samples.async_double, {"n": 21})).value == 42
    spec = make_tool(samples.decorated.fn, name="decorated", sandbox="process")
    assert (await call(sandbox, spec, {"n": 4})).value == 8


async def test_the_tool_runs_as_the_unprivileged_sandbox_user(sandbox, samples) -> None:
    outcome = await call(sandbox, samples.whoami_uid)

    assert outcome.value == [65534, 65534]


@pytest.mark.parametrize(
    ("name", "args", "kind", "text"),
    [
        ("flaky", {}, ToolErrorKind.TRANSIENT, "TransientToolError: upstream said 503"),
        ("broken", {"n": 7}, ToolErrorKind.TOOL_ERROR, "ValueError: cannot handle 7"),
        ("unjsonable", {}, ToolErrorKind.TOOL_ERROR, "TypeError"),
        ("big_result", {"size": 200_000}, ToolErrorKind.RESOURCE_EXHAUSTED, "more than 64 KiB"),
        ("segfault", {}, ToolErrorKind.CRASHED, "killed by SIGSEGV"),
        ("exit_quietly", {}, ToolErrorKind.CRASHED, "exited with status 3"),
    ],
)
async def test_failures_are_classified(sandbox, samples, name, args, kind, text) -> None:
    outcome = await call(sandbox, getattr(samples, name), args)

    assert outcome.error_kind is kind
    assert text in (outcome.error or "")
    assert outcome.transient is (kind is ToolErrorKind.TRANSIENT)


async def test_cancelling_a_call_kills_its_tree(make_sandbox, hostile) -> None:
    require_tier("process")
    sandbox = make_sandbox(warm_workers=0)
    task = asyncio.ensure_future(call(sandbox, hostile.sleep_past_deadline, limit_s=30))
    done, _ = await asyncio.wait({task}, timeout=0.5)  # let it start (it never ends by itself)
    assert not done
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    runner = sandbox.isolated("process")
    await runner.pool.settle()
    assert runner.pool.cgroup_root is not None
    assert [p for p in runner.pool.cgroup_root.iterdir() if p.is_dir()] == []


def test_entry_point_refuses_what_a_child_cannot_import(samples) -> None:
    with pytest.raises(ConfigError, match="it is a lambda, a nested function or a bound method"):
        entry_point(lambda: 1, tool="anon")

    class Holder:
        def method(self) -> int:
            return 1

    with pytest.raises(ConfigError, match="bound method"):
        entry_point(Holder().method, tool="m")
    assert entry_point(samples.broken, tool="b") == ("bastion_sandbox_samples", "broken")
    assert entry_point(samples.async_double, tool="d") == (
        "bastion_sandbox_samples",
        "async_double",
    )


def test_the_call_frame_asks_to_rebuild_only_what_json_loses(samples) -> None:
    limits = CallLimits.from_settings(SandboxLimits())
    call_ = ToolCall(run_id="r", step_id=1, tool_name="t", args={})
    plain = call_request(
        call_, make_tool(samples.broken), {"n": 1}, principal=PRINCIPAL, limits=limits
    )
    typed = call_request(
        call_,
        make_tool(samples.add_money),
        {"a": Decimal("1.5"), "b": Decimal(2)},
        principal=PRINCIPAL,
        limits=limits,
    )

    assert plain["revalidate"] is False
    assert plain["context"] is None
    assert typed["revalidate"] is True
    assert typed["kwargs"] == {"a": "1.5", "b": "2"}
    assert json.loads(json.dumps(typed)) == typed
    assert typed["limits"] == {
        "memory_bytes": 512 * 1024 * 1024,
        "cpu_s": 60,
        "open_files": 256,
        "file_bytes": 64 * 1024 * 1024,
        "processes": 64,
    }
