"""Two workers on PostgreSQL share a batch; one is killed for good; the other finishes its runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import _pg_available

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "two_workers.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_two_workers_share_runs_and_one_takes_over_the_other():
    # Sharing work between worker processes is a PostgreSQL setup: no SQLite variant.
    if not _pg_available():
        if os.environ.get("BASTION_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required but unreachable")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "24", "--takeover-after", "6"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    totals = json.loads(result.stdout.strip().splitlines()[-1])
    assert totals["completed"] == 24
    assert totals["duplicated_step_executions"] == 0
    assert totals["duplicated_refunds"] == totals["blind_reruns"] == 0
    assert totals["not_terminal"] == 0
    # After the kill, the survivor needs the takeover timeout plus a little to finish.
    assert totals["seconds_from_kill_to_last_run"] < 6 + 30
