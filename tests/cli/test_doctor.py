"""``bastion doctor``: every tier's state, why a missing one is missing, a real call on each."""

from __future__ import annotations

import json
import os

import pytest

from bastion.cli import doctor
from bastion.cli.main import main
from bastion.sandbox.capabilities import Capabilities, TierSupport, machine_capabilities

MISSING = Capabilities(
    inline=TierSupport(tier="inline", available=True, details=("in the runtime's event loop",)),
    process=TierSupport(
        tier="process", available=False, reasons=("the runtime is not root (uid 1000)",)
    ),
    os=TierSupport(
        tier="os",
        available=False,
        reasons=("bubblewrap is not installed: apt-get install -y bubblewrap",),
    ),
)


def test_missing_tiers_are_explained_and_fail_the_check(monkeypatch, capsys) -> None:
    monkeypatch.setattr(doctor, "probe_capabilities", lambda: MISSING)

    code = main(["doctor"])

    out = capsys.readouterr().out
    assert code == 1
    assert "process  unavailable" in out
    assert "- the runtime is not root (uid 1000)" in out
    assert "- bubblewrap is not installed: apt-get install -y bubblewrap" in out
    assert "they never run on a weaker one" in out
    assert "inline   works" in out
    assert "a call took" in out  # inline was actually called


def test_json_report(monkeypatch, capsys) -> None:
    monkeypatch.setattr(doctor, "probe_capabilities", lambda: MISSING)

    code = main(["doctor", "--json", "--no-call"])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["all_work"] is False
    assert report["tiers"]["os"] == {
        "works": False,
        "available": False,
        "why_not": ["bubblewrap is not installed: apt-get install -y bubblewrap"],
    }
    assert "call" not in report["tiers"]["inline"]


def test_on_this_machine_every_tier_runs_a_tool(capsys) -> None:
    caps = machine_capabilities()
    if not (caps.process.available and caps.os.available):
        reason = f"isolated tiers unavailable: {caps.process.reasons + caps.os.reasons}"
        if os.environ.get("BASTION_REQUIRE_SANDBOX") == "1":
            pytest.fail(reason)
        pytest.skip(reason)

    code = main(["doctor", "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    for tier in ("inline", "process", "os"):
        assert report["tiers"][tier]["works"] is True
        assert report["tiers"][tier]["call"]["ok"] is True
