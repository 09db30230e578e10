"""What this machine can isolate, and why not: each missing piece names itself."""

from __future__ import annotations

import os
import sys

import pytest

from bastion.errors import ConfigError
from bastion.sandbox import bwrap, capabilities, launch
from bastion.sandbox.capabilities import (
    Capabilities,
    TierSupport,
    machine_capabilities,
    probe_capabilities,
    require_tier,
    unavailable_message,
)

from .conftest import require_tier as require


def _module_level() -> int:
    return 1


def test_inline_is_always_available() -> None:
    assert probe_capabilities().inline.available


def test_this_machine_provides_both_isolated_tiers_as_root() -> None:
    require("process")
    require("os")
    caps = machine_capabilities()

    assert caps.process.available
    assert caps.os.available
    assert caps.hierarchy is not None
    assert any("pids" in detail for detail in caps.process.details)
    assert any("bubblewrap" in detail for detail in caps.os.details)


def test_only_linux_isolates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")

    caps = probe_capabilities()

    assert not caps.process.available
    assert not caps.os.available
    assert caps.process.reasons == ("the process and os tiers need Linux (this is darwin)",)


def test_a_non_root_runtime_cannot_use_the_process_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    caps = probe_capabilities()

    assert not caps.process.available
    assert any("the runtime is not root (uid 1000)" in r for r in caps.process.reasons)


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    require("process")
    monkeypatch.setattr(bwrap, "find_bwrap", lambda: None)
    monkeypatch.setattr(capabilities, "find_unshare", lambda: None)

    caps = probe_capabilities()

    assert caps.os.reasons == (
        "bubblewrap is not installed: apt-get install -y bubblewrap (or make install-bwrap)",
    )
    assert caps.process.reasons == ("util-linux 'unshare' is not installed",)


def test_a_broken_bubblewrap_says_what_it_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    require("os")
    monkeypatch.setattr(bwrap, "find_bwrap", lambda: "/bin/false")

    caps = probe_capabilities()

    assert not caps.os.available
    assert caps.os.reasons[0].startswith("bubblewrap cannot start the interpreter")


def test_a_tool_on_a_missing_tier_is_refused_with_the_reasons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = Capabilities(
        inline=TierSupport(tier="inline", available=True),
        process=TierSupport(tier="process", available=True),
        os=TierSupport(tier="os", available=False, reasons=("no bwrap", "no cgroup")),
    )
    monkeypatch.setattr(capabilities, "machine_capabilities", lambda: missing)

    require_tier("inline", tool="t", fn=_module_level)
    require_tier("process", tool="t", fn=_module_level)
    with pytest.raises(ConfigError) as info:
        require_tier("os", tool="t", fn=_module_level)

    assert str(info.value) == (
        "tool 't' asks for sandbox tier 'os', which this machine cannot provide: no bwrap; no "
        "cgroup. Run 'bastion doctor' for details; a tool never runs on a weaker tier than it "
        "asks for"
    )
    assert unavailable_message(missing.os).startswith("settings ask for sandbox tier 'os'")


def test_the_probe_is_cached_per_process() -> None:
    assert machine_capabilities() is machine_capabilities()
    assert launch.find_unshare() in (None, "/usr/bin/unshare", "/bin/unshare")
