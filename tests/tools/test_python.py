"""``run_python``: the snippet's output, result and files; its errors; and the os tier around it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.sandbox import capabilities
from bastion.sandbox.capabilities import Capabilities, TierSupport, machine_capabilities
from bastion.sandbox.default import TieredSandbox
from bastion.settings import SandboxLimits, SandboxSettings
from bastion.tools import make_run_python
from bastion.tools.pyexec import MAX_OUTPUT_CHARS, CodeError, OutputTooLarge, run_python


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_prints_and_result_come_back(workspace: Path) -> None:
    out = run_python("import sys\nprint('hi')\nprint('warn', file=sys.stderr)\nresult = {'n': 2}")

    assert out == {
        "stdout": "hi\n",
        "stderr": "warn\n",
        "result": {"n": 2},
        "files": {},
        "skipped_files": {},
    }


def test_files_go_in_and_new_ones_come_out(workspace: Path) -> None:
    out = run_python(
        "with open('items.csv') as f:\n    rows = f.read().splitlines()\n"
        "with open('report/total.txt', 'w') as f:\n    f.write(str(len(rows)))",
        files={"items.csv": "a\nb\nc\n", "report/keep.txt": "kept"},
    )

    assert out["files"] == {"report/total.txt": "3"}


def test_a_result_that_is_not_json_comes_back_as_its_repr(workspace: Path) -> None:
    assert run_python("result = {1, 2}")["result"] == "{1, 2}"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("x = 1\ny = x / 0", "line 2: ZeroDivisionError: division by zero"),
        ("def f(:\n  pass", "line 1: SyntaxError"),
        ("import sys\nsys.exit(2)", r"the code called sys\.exit\(2\)"),
    ],
)
def test_errors_name_the_line(workspace: Path, code: str, message: str) -> None:
    with pytest.raises(CodeError, match=message):
        run_python(code)


def test_a_clean_exit_is_a_normal_end(workspace: Path) -> None:
    assert run_python("print('bye')\nraise SystemExit(0)")["stdout"] == "bye\n"


def test_the_sandbox_s_own_errors_pass_through_unwrapped(workspace: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_python("open('/definitely/not/here')")
    with pytest.raises(OutputTooLarge, match=f"more than {MAX_OUTPUT_CHARS} characters"):
        run_python(f"print('x' * {MAX_OUTPUT_CHARS + 1})")


def test_the_tool_is_declared_on_the_os_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        capabilities,
        "machine_capabilities",
        lambda: Capabilities(
            inline=TierSupport(tier="inline", available=True),
            process=TierSupport(tier="process", available=True),
            os=TierSupport(tier="os", available=True),
        ),
    )

    spec = make_run_python(permissions=("code:run",), timeout_s=3)

    assert spec.name == "run_python"
    assert spec.sandbox == "os"
    assert spec.required_permissions == frozenset({"code:run"})
    assert spec.timeout_s == 3
    assert spec.args_schema["properties"]["code"]["maxLength"] == 20_000
    assert "files" in spec.args_schema["properties"]


def test_without_the_os_tier_the_tool_is_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        capabilities,
        "machine_capabilities",
        lambda: Capabilities(
            inline=TierSupport(tier="inline", available=True),
            process=TierSupport(tier="process", available=False, reasons=("no cgroup",)),
            os=TierSupport(tier="os", available=False, reasons=("bubblewrap is not installed",)),
        ),
    )

    with pytest.raises(ConfigError, match=r"asks for sandbox tier 'os'.*bubblewrap is not inst"):
        make_run_python()


# -- on the os tier --------------------------------------------------------------------------


@pytest.fixture
async def sandbox():
    support = machine_capabilities().os
    if not support.available:
        import os

        message = f"the os tier is unavailable here: {'; '.join(support.reasons)}"
        if os.environ.get("BASTION_REQUIRE_SANDBOX") == "1":
            pytest.fail(message)
        pytest.skip(message)
    sandbox = TieredSandbox(
        clock=SystemClock(),
        settings=SandboxSettings(warm_workers=1, limits=SandboxLimits(workspace_mb=4)),
    )
    yield sandbox
    await sandbox.aclose()


async def run(sandbox: TieredSandbox, args: dict[str, Any], timeout_s: float = 10) -> ToolOutcome:
    spec = make_run_python(timeout_s=timeout_s)
    call = ToolCall(run_id="run_py", step_id=1, tool_name=spec.name, args=args)
    return await sandbox.run(
        call, spec, deadline=SystemClock().monotonic() + 30, principal=Principal(id="lead")
    )


async def test_a_pro_rata_refund_is_computed_in_the_sandbox(sandbox: TieredSandbox) -> None:
    code = (
        "from decimal import Decimal, ROUND_HALF_UP\n"
        "items = {'kettle': Decimal('79.00'), 'scale': Decimal('45.50')}\n"
        "discount = Decimal('12.45')\n"
        "returned = items['scale']\n"
        "share = discount * returned / sum(items.values())\n"
        "result = str((returned - share).quantize(Decimal('0.01'), ROUND_HALF_UP))\n"
    )

    outcome = await run(sandbox, {"code": code})

    assert outcome.ok, outcome.error
    assert outcome.value["result"] == "40.95"


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        ("open('/etc/passwd').read()", ToolErrorKind.DENIED, "outside the os sandbox"),
        (
            "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)",
            ToolErrorKind.DENIED,
            "tried to use the network",
        ),
        ("import os\nos.symlink('/etc/passwd', 'link')", ToolErrorKind.DENIED, "symbolic link"),
        ("open('/usr/lib/x', 'w')", ToolErrorKind.DENIED, "Read-only file system"),
        ("open('big', 'wb').write(b'0' * (8 << 20))", ToolErrorKind.RESOURCE_EXHAUSTED, "full"),
        ("x = [0] * (10 ** 10)", ToolErrorKind.RESOURCE_EXHAUSTED, "out of memory"),
        ("print(undefined_name)", ToolErrorKind.TOOL_ERROR, "line 1: NameError"),
    ],
)
async def test_hostile_code_is_contained(
    sandbox: TieredSandbox, code: str, kind: ToolErrorKind, text: str
) -> None:
    outcome = await run(sandbox, {"code": code})

    assert outcome.error_kind is kind, outcome.error
    assert text in (outcome.error or "")


async def test_an_endless_loop_is_stopped_at_the_timeout(sandbox: TieredSandbox) -> None:
    started = time.perf_counter()

    outcome = await run(sandbox, {"code": "while True: pass"}, timeout_s=1)

    assert outcome.error_kind is ToolErrorKind.TIMEOUT
    assert time.perf_counter() - started < 2.0
