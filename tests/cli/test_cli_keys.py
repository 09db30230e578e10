"""``bastion keys create|list|revoke`` and ``bastion run --api-key``, in process through main()."""

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


def create(capsys, *args: str) -> dict:
    assert main(["keys", "create", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["run", "Where is my order A1001?", "--model", MODEL, "--json", *args])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, json.loads(lines[-1])


def test_create_prints_the_key_once_and_stores_only_its_hmac(capsys, data):
    code = main(["keys", "create", "c1", "--name", "laptop"])
    out = capsys.readouterr().out
    assert code == 0
    key = next(w for w in out.split() if w.startswith("bst_"))
    assert "shown this once" in out
    with sqlite3.connect(data / "bastion.db") as db:
        dump = "\n".join(db.iterdump())
    assert key not in dump
    assert key[len("bst_") + 12 + 1 :] not in dump  # the secret may itself hold "_"
    assert "laptop" in dump


def test_list_shows_keys_without_their_secret(capsys):
    made = create(capsys, "c1", "--name", "ci")
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out
    assert made["key_id"] in out
    assert "active" in out
    assert made["key"] not in out
    assert main(["keys", "list", "--json", "--principal", "c1"]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed == {k: v for k, v in made.items() if k != "key"}
    assert main(["keys", "list", "--principal", "nobody"]) == 0
    assert "No API keys." in capsys.readouterr().out


def test_a_key_runs_as_its_principal_without_user(capsys):
    made = create(capsys, "c1")
    code, result = run_json(capsys, "--api-key", made["key"])
    assert code == 0
    assert result["status"] == "completed"
    assert "shipped" in result["message"]


def test_the_key_can_come_from_the_environment(capsys, monkeypatch):
    made = create(capsys, "c1")
    monkeypatch.setenv("BASTION_API_KEY", made["key"])
    code, result = run_json(capsys)
    assert (code, result["status"]) == (0, "completed")


def test_a_revoked_key_fails_with_a_clear_error(capsys):
    made = create(capsys, "c1")
    assert main(["keys", "revoke", made["key_id"]]) == 0
    assert f"Revoked API key {made['key_id']} of 'c1'" in capsys.readouterr().out
    code, result = run_json(capsys, "--api-key", made["key"])
    assert code == 1
    assert result["status"] == "aborted"
    assert result["message"] == "Your API key has been revoked. Ask for a new one."
    assert f"bst_{made['key_id']}_… was revoked at" in result["error"]
    assert made["key"] not in json.dumps(result)


def test_revoking_twice_says_so_and_the_key_itself_is_accepted(capsys):
    made = create(capsys, "c1")
    assert main(["keys", "revoke", made["key"]]) == 0
    capsys.readouterr()
    assert main(["keys", "revoke", made["key_id"]]) == 0
    assert "was already revoked" in capsys.readouterr().out


def test_an_expired_key_fails_with_a_clear_error(capsys, data):
    made = create(capsys, "c1", "--expires-in-days", "1")
    with sqlite3.connect(data / "bastion.db") as db:  # a day passes
        db.execute("UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000'")
    code, result = run_json(capsys, "--api-key", made["key"])
    assert (code, result["status"]) == (1, "aborted")
    assert result["message"] == "Your API key has expired. Ask for a new one."
    assert "expired at 2000-01-01" in result["error"]


def test_an_unknown_key_is_refused(capsys):
    code, result = run_json(capsys, "--api-key", "bst_" + "a" * 12 + "_" + "b" * 43)
    assert (code, result["status"]) == (1, "aborted")
    assert "not recognised" in result["error"]


def test_a_key_used_as_another_user_is_refused(capsys):
    made = create(capsys, "c1")
    code, result = run_json(capsys, "--api-key", made["key"], "--user", "c2")
    assert (code, result["status"]) == (1, "aborted")
    assert "belongs to 'c1', but the request is made as 'c2'" in result["error"]


def test_required_keys_refuse_a_bare_user(capsys, monkeypatch):
    monkeypatch.setenv("BASTION_GATE__REQUIRE_API_KEY", "true")
    code, result = run_json(capsys, "--user", "c1")
    assert (code, result["status"]) == (1, "aborted")
    assert "an API key is required" in result["error"]


def test_a_service_account_is_created_with_its_scopes(capsys):
    made = create(capsys, "kb-bot", "--scope", "kb:read", "--role", "service")
    assert made["principal_id"] == "kb-bot"
    code = main(
        [
            "run",
            "How do I reset my password?",
            "--model",
            MODEL,
            "--json",
            "--api-key",
            made["key"],
        ]
    )
    [result] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert code == 0, result
    assert result["steps"][0]["tool_name"] == "search_kb"


def test_a_key_for_an_unknown_principal_is_made_with_a_note(capsys):
    assert main(["keys", "create", "stranger", "--no-expiry"]) == 0
    captured = capsys.readouterr()
    assert "expires: never" in captured.out
    assert "'stranger' is not in the database nor the principals file" in captured.err


def test_key_management_is_audited(capsys):
    made = create(capsys, "c1", "--name", "ci")
    assert main(["keys", "revoke", made["key_id"]]) == 0
    capsys.readouterr()
    assert main(["audit", "show", "--json"]) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["principal_id"]) for e in entries] == [
        ("key_create", "c1"),
        ("key_revoke", "c1"),
    ]
    assert entries[0]["details"]["key_id"] == made["key_id"]
    assert made["key"] not in json.dumps(entries)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "revoke", "nope"], "neither an API key nor a key id"),
        (["keys", "revoke", "aaaaaaaaaaaa"], "no API key has the id 'aaaaaaaaaaaa'"),
        (["keys", "create", " "], "principal id must not be empty"),
        (
            ["keys", "create", "c1", "--no-expiry", "--expires-in-days", "3"],
            "either --expires-in-days or --no-expiry",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_group_readable_secret_file_is_refused_clearly(capsys, data):
    create(capsys, "c1")
    (data / "gate.secret").chmod(0o640)
    assert main(["keys", "list"]) == 2
    assert "chmod 600" in capsys.readouterr().err
