"""A canary secret in a tool's args, its result and its error never reaches the audit log, the
logs, the stored run or the answer: end to end through ``bastion run`` in its own process, as a
deployment would run it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def canaries(tmp_path) -> tuple[str, str, dict[str, str]]:
    token = f"sk-canary-{uuid.uuid4().hex}"
    iban = f"CANARY{uuid.uuid4().hex[:12].upper()}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BASTION_", "OPENAI_")) and k != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(APPS), *sys.path]),
        CANARY_TOKEN=token,
        CANARY_IBAN=iban,
        BASTION_DATA_DIR=str(tmp_path / "data"),
        BASTION_GATE__SECRET_FIELDS='["iban"]',
        BASTION_GATE__AUDIT_CHECKPOINT_EVERY="1",
    )
    return token, iban, env


def bastion(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def script(tmp_path: Path, token: str, iban: str) -> str:
    args = {"note": f"use {token} for this", "iban": iban}
    first = {
        "reasoning": f"the user gave {token}",
        "steps": [
            {"description": "remember it", "tool_name": "remember", "tool_args": args},
            {"description": "send it", "tool_name": "transfer", "tool_args": args},
        ],
    }
    done = {"reasoning": "nothing more to do", "steps": []}
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"mode": "sequence", "responses": [first, done]}))
    return f"scripted:{path}"


def everything_stored(data: Path) -> str:
    """Every row of every table of Bastion's database and of DBOS's (durable runs' workflows),
    and every log file in the data directory."""
    dumps = []
    for name in ("bastion.db", "dbos.sqlite"):
        if (data / name).exists():
            with sqlite3.connect(data / name) as db:
                dumps.append("\n".join(db.iterdump()))
    dump = "\n".join(dumps)
    files = [
        p.read_text(errors="replace")
        for p in data.iterdir()
        if p.is_file() and p.suffix in (".log", ".jsonl")
    ]
    return dump + "\n".join(files)


@pytest.mark.parametrize("durable", ["false", "true"], ids=["in-process", "durable"])
def test_the_canary_never_appears_in_audit_logs_store_or_answer(canaries, tmp_path, durable):
    token, iban, env = canaries
    env["BASTION_DURABLE__ENABLED"] = durable
    run = bastion(
        env,
        "run",
        "Keep my account details, then send the money",
        "--app",
        "canary_app:build",
        "--user",
        "alice",
        "--model",
        script(tmp_path, token, iban),
        "--json",
    )
    [response] = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    data = tmp_path / "data"
    log = (data / "bastion.log").read_text()
    stored = everything_stored(data)

    # The run really carried the canaries through a result and an error, and was logged.
    assert run.returncode == 0, run.stderr
    assert [s["status"] for s in response["steps"]] == ["success", "failed"]
    assert "the bank refused reference" in response["steps"][1]["error"]
    assert "tool 'transfer' raised" in log
    assert "ValueError: the bank refused reference" in log  # the traceback is there...
    # ... and nowhere is a canary: not in the answer, the logs, the audit log or the run store.
    for canary in (token, iban):
        assert canary not in run.stdout
        assert canary not in run.stderr
        assert canary not in log
        assert canary not in stored
    assert "[redacted]" in response["message"]
    assert "[redacted]" in log

    show = bastion(env, "audit", "show", "--tool", "remember", "--json")
    audited = [json.loads(line) for line in show.stdout.splitlines()]
    assert audited
    assert {e["decision"] for e in audited} == {"allow"}
    assert audited[0]["details"]["args"] == {
        "note": "use [redacted] for this",
        "iban": "[redacted]",
    }
    assert bastion(env, "audit", "verify").returncode == 0
