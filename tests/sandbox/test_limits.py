"""The sandbox's settings and limits: read from the environment, converted once, checked."""

from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.messages import ToolErrorKind
from bastion.sandbox.limits import CallLimits, mib
from bastion.settings import SandboxLimits, load_settings


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SANDBOX__DEFAULT_TIER", "process")
    monkeypatch.setenv("BASTION_SANDBOX__LIMITS__MEMORY_MB", "256")
    monkeypatch.setenv("BASTION_SANDBOX__LIMITS__PROCESSES", "16")
    monkeypatch.setenv("BASTION_SANDBOX__WARM_WORKERS", "0")

    sandbox = load_settings().sandbox

    assert sandbox.default_tier == "process"
    assert sandbox.limits.memory_mb == 256
    assert sandbox.limits.processes == 16
    assert sandbox.warm_workers == 0
    assert sandbox.process_network is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("BASTION_SANDBOX__DEFAULT_TIER", "vm"),
        ("BASTION_SANDBOX__LIMITS__PROCESSES", "1"),
        ("BASTION_SANDBOX__SANDBOX_UID", "0"),
    ],
)
def test_a_bad_value_fails_at_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)

    with pytest.raises(ConfigError, match="invalid settings: sandbox"):
        load_settings()


def test_settings_units_become_bytes_once() -> None:
    limits = CallLimits.from_settings(
        SandboxLimits(memory_mb=30, file_mb=2, workspace_mb=5, output_kb=7, result_kb=9)
    )

    assert limits.memory_bytes == 30 * 1024 * 1024
    assert limits.file_bytes == 2 * 1024 * 1024
    assert limits.workspace_bytes == 5 * 1024 * 1024
    assert limits.output_bytes == 7 * 1024
    assert limits.result_bytes == 9 * 1024
    assert set(limits.for_child()) == {
        "memory_bytes",
        "cpu_s",
        "open_files",
        "file_bytes",
        "processes",
    }
    assert (mib(limits.memory_bytes), mib(limits.output_bytes)) == ("30 MiB", "7 KiB")


def test_resource_exhaustion_is_an_outcome_kind() -> None:
    assert ToolErrorKind("resource_exhausted") is ToolErrorKind.RESOURCE_EXHAUSTED
