"""Fixtures for the isolated tiers: real workers, real namespaces, real cgroups.

A test of the ``process`` or ``os`` tier needs what the tier needs (root, a pids cgroup, util-linux
``unshare``, bubblewrap). Where the machine lacks it the test is skipped, saying why; set
``BASTION_REQUIRE_SANDBOX=1`` (as CI does, where ``make`` installs bubblewrap and runs as root) to
make that a failure instead.

The hostile tools live in ``hostile/bastion_hostile_tools.py``: the child imports them by name, so
their directory is put on the import path (the child copies the runtime's path when it starts).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

from bastion.clock import SystemClock
from bastion.router.interface import SandboxTier
from bastion.sandbox.capabilities import machine_capabilities
from bastion.sandbox.default import TieredSandbox
from bastion.settings import SandboxLimits, SandboxSettings

HOSTILE_DIR = Path(__file__).parent / "hostile"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("BASTION_REQUIRE_SANDBOX") == "1":
        pytest.fail(f"BASTION_REQUIRE_SANDBOX=1 but {reason}")
    pytest.skip(reason)


def require_tier(tier: SandboxTier) -> None:
    """Skip (or fail, under BASTION_REQUIRE_SANDBOX=1) unless this machine provides `tier`."""
    support = machine_capabilities().support(tier)
    if not support.available:
        _unavailable(f"the {tier} tier is unavailable here: {'; '.join(support.reasons)}")


@pytest.fixture(params=["process", "os"])
def tier(request: pytest.FixtureRequest) -> SandboxTier:
    """Each isolated tier in turn, skipped where the machine lacks it."""
    name: SandboxTier = request.param
    require_tier(name)
    return name


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The hostile tools' module, importable by name in the child too."""
    monkeypatch.syspath_prepend(str(HOSTILE_DIR))
    return importlib.import_module("bastion_hostile_tools")


SandboxFactory = Callable[..., TieredSandbox]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[SandboxFactory]:
    """Build real `TieredSandbox`es (system clock); their workers are ended after the test."""
    made: list[TieredSandbox] = []

    def factory(*, limits: dict[str, Any] | None = None, **settings: Any) -> TieredSandbox:
        sandbox = TieredSandbox(
            clock=SystemClock(),
            settings=SandboxSettings(limits=SandboxLimits(**(limits or {})), **settings),
        )
        made.append(sandbox)
        return sandbox

    yield factory
    for sandbox in made:
        await sandbox.aclose()
