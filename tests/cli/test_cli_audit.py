"""``bastion audit verify|show|checkpoint``, in process through main(), tampering with SQL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.demo.support.app import SCRIPT_PATH

MODEL = f"scripted:{SCRIPT_PATH}"


@pytest.fixture(autouse=True)
def data(cli_data: Path) -> Path:
    return cli_data


def seed(capsys) -> None:
    """Two runs: one allowed (c1's own order), one denied (c1 asks for c2's order)."""
    main(["run", "Where is my order A1001?", "--user", "c1", "--model", MODEL, "--json"])
    main(["run", "Show me the details of order A1003", "--user", "c1", "--model", MODEL, "--json"])
    capsys.readouterr()


def verify_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["audit", "verify", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(data / "bastion.db")


def count(data: Path) -> int:
    with db(data) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0])


def test_an_intact_log_verifies(capsys, data):
    seed(capsys)
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"audit log intact: {count(data)} entries verified" in out
    assert "no checkpoint file" in out


def test_an_empty_log_verifies(capsys):
    code, report = verify_json(capsys)
    assert (code, report["ok"], report["entries"]) == (0, True, 0)


def test_a_byte_edited_exits_1_naming_the_entry(capsys, data):
    seed(capsys)
    with db(data) as conn:
        conn.execute(
            "UPDATE audit_entries SET body = replace(body, '\"deny\"', '\"allow\"') "
            "WHERE seq = (SELECT min(seq) FROM audit_entries WHERE decision = 'deny')"
        )
        bad = conn.execute("SELECT min(seq) FROM audit_entries WHERE decision = 'deny'").fetchone()
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"audit log TAMPERED: entry {bad[0]} is the first bad entry" in out
    assert "MAC does not match" in out


def test_a_deleted_entry_exits_1_naming_it(capsys, data):
    seed(capsys)
    with db(data) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq = 3")
    code, report = verify_json(capsys)
    assert (code, report["ok"], report["first_bad"]) == (1, False, 3)


def test_a_truncated_tail_is_caught_with_the_checkpoint_file(capsys, data, tmp_path):
    seed(capsys)
    size = count(data)
    out_file = tmp_path / "kept-by-the-operator.jsonl"
    assert main(["audit", "checkpoint", "--out", str(out_file)]) == 0
    assert f"Checkpoint of {size} entries appended to {out_file}" in capsys.readouterr().out
    with db(data) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq >= ?", (size - 2,))
    code, report = verify_json(capsys)  # without the file: undetectable
    assert (code, report["ok"]) == (0, True)
    code, report = verify_json(capsys, "--checkpoint", str(out_file))
    assert (code, report["first_bad"], report["checkpoints"]) == (1, size - 2, 1)
    assert "missing" in report["problem"]


def test_the_configured_checkpoint_file_is_used_by_default(capsys, data):
    seed(capsys)
    assert main(["audit", "checkpoint"]) == 0
    capsys.readouterr()
    assert (data / "audit-checkpoints.jsonl").exists()
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoints ({data / 'audit-checkpoints.jsonl'}): 1 of 1 matched" in out


def test_periodic_checkpoints_are_written_while_the_system_runs(capsys, data, monkeypatch):
    monkeypatch.setenv("BASTION_GATE__AUDIT_CHECKPOINT_EVERY", "2")
    seed(capsys)
    lines = (data / "audit-checkpoints.jsonl").read_text().splitlines()
    assert [json.loads(line)["size"] for line in lines] == list(range(2, count(data) + 1, 2))
    code, report = verify_json(capsys)
    assert (code, report["checkpoints_matched"]) == (0, len(lines))


def test_a_forged_checkpoint_line_fails_verification(capsys, data, tmp_path):
    seed(capsys)
    path = tmp_path / "c.jsonl"
    main(["audit", "checkpoint", "--out", str(path)])
    capsys.readouterr()
    line = json.loads(path.read_text())
    line["size"] = 1
    path.write_text(json.dumps(line) + "\n")
    assert main(["audit", "verify", "--checkpoint", str(path)]) == 1
    assert "checkpoint file TAMPERED" in capsys.readouterr().out


def test_a_missing_checkpoint_file_is_a_usage_error(capsys, tmp_path):
    assert main(["audit", "verify", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "cannot read the checkpoint file" in capsys.readouterr().err


def test_checkpoint_of_an_empty_log(capsys):
    assert main(["audit", "checkpoint"]) == 0
    assert "empty" in capsys.readouterr().out


def test_a_different_secret_cannot_verify(capsys, data, monkeypatch):
    seed(capsys)
    monkeypatch.setenv("BASTION_GATE__SECRET", "z" * 40)
    code, report = verify_json(capsys)
    assert (code, report["first_bad"]) == (1, 0)
    assert "gate secret" in report["problem"]


def test_show_filters_by_decision_principal_tool_and_run(capsys):
    seed(capsys)
    assert main(["audit", "show", "--decision", "deny", "--json"]) == 0
    denied = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert denied
    assert {(e["decision"], e["principal_id"], e["tool_name"]) for e in denied} == {
        ("deny", "c1", "lookup_order")
    }
    run_id = denied[0]["run_id"]
    assert main(["audit", "show", "--run", run_id, "--tool", "lookup_order"]) == 0
    out = capsys.readouterr().out
    assert f"run={run_id}" in out
    assert "may not access order A1003" in out
    assert main(["audit", "show", "--principal", "c9"]) == 0
    assert "No audit entries match." in capsys.readouterr().out
    assert main(["audit", "show", "--action", "authenticate", "--limit", "1", "--json"]) == 0
    [last] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert last["action"] == "authenticate"


def test_show_refuses_an_unknown_decision(capsys):
    assert main(["audit", "show", "--decision", "maybe"]) == 2
    assert "maybe" in capsys.readouterr().err
