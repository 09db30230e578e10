"""The kill -9 harness (scripts/kill9.py), at a small count: every count it checks stays 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kill9.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill9_harness_finds_nothing_lost_or_repeated(backend):
    if backend == "postgres" and os.environ.get("BASTION_REQUIRE_POSTGRES") != "1":
        pytest.importorskip("psycopg")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "2", "--backend", backend, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    totals = json.loads(result.stdout.strip().splitlines()[-1])
    assert totals["ok"] is True
    assert totals["kills"] >= 2
    assert totals["runs"] == 8
    for key in (
        "lost_completed_steps",
        "repeated_model_calls",
        "duplicated_refunds",
        "blind_reruns",
        "not_terminal",
    ):
        assert totals[key] == 0, totals
