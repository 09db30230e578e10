"""The benchmark suite's quick mode (`bench/agents/suite.py --quick`), so that it cannot rot.

Runs the floor and three Bastion configurations (in memory; on disk; durable on SQLite, with the
cold start of ``bastion run``) with tiny counts in subprocesses, as ``make bench-quick`` does, and
checks what it writes: JSON lines for every measurement and the marked section of a results
file, the rest of that file left alone. No peer framework runs here (``make bench`` only).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Subprocesses importing Bastion, DBOS and a PostgreSQL database: about a minute in all.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "agents" / "suite.py"
START = "<!-- bench:agents:start"
END = "<!-- bench:agents:end -->"
PRELUDE = "# Results\n\nWritten by hand, kept.\n\n"
OLD_SECTION = f"{START} (old) -->\nstale figures\n{END}\n"
AFTER = "\n## Later section\n\nAlso kept.\n"


def _suite(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUITE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def _records(out: Path) -> list[dict[str, Any]]:
    (jsonl,) = out.glob("agents-quick-*.jsonl")
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("bench-out")
    results = out / "RESULTS.md"
    results.write_text(PRELUDE + OLD_SECTION + AFTER)
    done = _suite(
        "--quick",
        "--configs",
        "bastion-memory,bastion-sqlite",
        "--rss-runs",
        "20",
        "--out",
        str(out),
        "--results",
        str(results),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out, results


@pytest.mark.timeout(300)
def test_quick_mode_measures_every_figure_of_each_configuration(
    quick_run: tuple[Path, Path],
) -> None:
    records = _records(quick_run[0])
    assert not [r for r in records if "error" in r]
    for config in ("floor", "bastion-memory", "bastion-disk", "bastion-sqlite"):
        mine = [r for r in records if r.get("config") == config]
        overhead = next(r for r in mine if r["mode"] == "overhead")
        assert overhead["run_us"] > 0
        assert {r["concurrency"] for r in mine if r["mode"] == "throughput"} == {1, 10}
        assert all(r["steps_per_s"] > 0 for r in mine if r["mode"] == "throughput")
        (rss,) = [r for r in mine if r["mode"] == "rss"]
        assert rss["runs"] == 20
        assert rss["peak_mib"] >= rss["baseline_mib"] > 0
    assert (
        next(r for r in records if r.get("config") == "bastion-memory")["model_calls_per_run"] == 1
    )
    assert next(r for r in records if r.get("config") == "floor")["model_calls_per_run"] == 11
    (cold,) = [r for r in records if r.get("mode") == "cold_start"]
    assert 0 < cold["seconds"] < 240
    summary = records[-1]
    assert summary["quick"] is True
    assert summary["cores"] >= 1
    assert summary["python"]
    assert summary["summary"]["floor"]["step_overhead_us"]["median"] == 0
    assert "checkpoint_ms_per_step" in summary["summary"]["bastion-sqlite"]
    assert summary["summary"]["bastion-sqlite"]["versions"]["dbos"]


@pytest.mark.timeout(300)
def test_results_section_is_rewritten_between_the_markers_only(
    quick_run: tuple[Path, Path],
) -> None:
    text = quick_run[1].read_text()
    assert text.startswith(PRELUDE + START)
    assert text.endswith(END + "\n" + AFTER)
    assert "stale figures" not in text
    assert text.count(START) == text.count(END) == 1
    for row in ("| floor (", "| bastion-memory (", "| bastion-sqlite ("):
        assert row in text
    assert "cold start of `bastion run`" in text
    assert "µs per step above the floor" in text


@pytest.mark.timeout(300)
def test_summary_from_earlier_json_lines_is_appended_once_when_markers_are_absent(
    quick_run: tuple[Path, Path], tmp_path: Path
) -> None:
    (jsonl,) = quick_run[0].glob("agents-quick-*.jsonl")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Other results\n\nkeep me\n")
    for _ in range(2):
        done = _suite("--from-jsonl", str(jsonl), "--results", str(results), "--note", "noisy")
        assert done.returncode == 0, done.stderr
    text = results.read_text()
    assert text.startswith("# Other results\n\nkeep me\n\n" + START)
    assert text.count(START) == 1
    assert "**noisy**" in text


def test_unknown_configuration_is_refused() -> None:
    done = _suite("--quick", "--configs", "bastion-nope", timeout=60)
    assert done.returncode == 2
    assert "unknown configurations ['bastion-nope']" in done.stderr


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(300)
@pytest.mark.skipif(not _postgres_up(), reason="needs PostgreSQL on 127.0.0.1:5432")
def test_a_configuration_that_fails_is_reported_and_fails_the_suite(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            str(SUITE),
            "--quick",
            "--configs",
            "bastion-postgres",
            "--rss-runs",
            "5",
            "--out",
            str(tmp_path),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        check=False,
        env={
            **os.environ,
            "BENCH_PG_ADMIN_URL": "postgresql://nobody@127.0.0.1:1/none",
        },
    )
    assert done.returncode == 1
    assert "FAILED bastion-postgres" in done.stderr
    errors = [r for r in _records(tmp_path) if "error" in r]
    assert {r["config"] for r in errors} == {"bastion-postgres"}
    assert "failed:" in results.read_text()
