"""The `bastion` command, in process, through `main(argv)` as the console script calls it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bastion.cli.main import main
from bastion.testing import FakeOpenAIServer


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("bastion")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.level = handlers, level


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch, tmp_path):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "BASTION_MODEL__NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "data"))
    # The demo's scripted plans: where the local model is installed (make demo) it is the default.
    from bastion.demo.support.app import SCRIPT_PATH

    monkeypatch.setenv("BASTION_MODEL__NAME", f"scripted:{SCRIPT_PATH}")


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bastion ")


def test_run_json_completes_with_the_orders_status(capsys):
    code = main(["run", "Where is my order A1001?", "--user", "c1", "--json"])
    out = capsys.readouterr().out
    [result] = _json_lines(out)
    assert code == 0
    assert result["status"] == "completed"
    assert "shipped" in result["message"]
    assert result["run_id"].startswith("run_")
    assert result["total_cost_usd"] == "0"
    assert {s["tool_name"] for s in result["steps"]} >= {"lookup_order"}
    assert all(s["status"] == "success" and "result" in s for s in result["steps"])


def test_run_human_output_shows_plan_steps_and_answer(capsys):
    code = main(["run", "Where is my order A1001?", "--user", "c1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "plan" in out
    assert "lookup_order" in out
    assert "completed" in out


def test_denied_run_exits_non_zero_with_a_clear_message(capsys):
    code = main(["run", "Refund 20.00 on order A1003", "--user", "c1", "--json"])
    [result] = _json_lines(capsys.readouterr().out)
    assert code in (0, 1)
    assert result["status"] in ("completed", "aborted", "failed")
    assert "A1003" not in json.dumps([s.get("result") for s in result["steps"]])


def test_unknown_user_exits_1(capsys):
    code = main(["run", "Where is my order A1001?", "--user", "mallory", "--json"])
    [result] = _json_lines(capsys.readouterr().out)
    assert code == 1
    assert result["status"] == "aborted"
    assert "identified" in result["message"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "hi", "--nonsense"], "No such option"),
        (["run"], "Missing argument"),
        (["run", "hi", "--budget", "lots"], "--budget"),
        (["run", "hi", "--budget", "-1"], "--budget"),
        (["run", "hi", "--app", "nocolon"], "--app must look like"),
        (["run", "hi", "--app", "no_such_module_xyz:build"], "cannot import"),
        (["run", "hi", "--app", "bastion.messages:nothing_here"], "has no attribute"),
        (["run", "hi", "--app", "bastion.messages:new_id"], "not an AgentSystem"),
        (["run", "hi", "--model", "nosuchprovider:x"], "provider"),
        (["run", "hi", "--model", "scripted:/no/such/file.json"], "file.json"),
        (["run", "  "], "message must not be empty"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(capsys, argv, fragment):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err.strip()
    assert fragment in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in captured.err + captured.out


def test_bad_setting_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("BASTION_RECOVERY__MAX_ATTEMPTS", "many")
    code = main(["run", "hi"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "recovery.max_attempts" in err
    assert len(err.splitlines()) == 1


def test_run_against_an_openai_compatible_server(capsys, monkeypatch):
    plan = {
        "reasoning": "Look the order up.",
        "steps": [
            {
                "description": "Look up order A1001",
                "tool_name": "lookup_order",
                "tool_args": {"order_id": "A1001"},
            }
        ],
    }
    with FakeOpenAIServer() as server:
        server.ok(json.dumps(plan))
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code = main(["run", "Where is my order A1001?", "--model", "openai:gpt-4o-mini", "--json"])
        sent = server.requests
    [result] = _json_lines(capsys.readouterr().out)
    assert code == 0, result
    assert result["status"] == "completed"
    assert "shipped" in result["message"]
    assert result["model"] == "openai:gpt-4o-mini"
    assert float(result["total_cost_usd"]) > 0
    assert sent[0]["model"] == "gpt-4o-mini"
    assert sent[0]["response_format"]["type"] == "json_schema"


def test_openai_server_down_ends_the_run_with_a_message(capsys, monkeypatch):
    from bastion.testing.fake_openai import refused_base_url

    monkeypatch.setenv("OPENAI_BASE_URL", refused_base_url())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("BASTION_RECOVERY__BASE_DELAY_S", "0.001")
    monkeypatch.setenv("BASTION_RECOVERY__MAX_DELAY_S", "0.002")
    code = main(["run", "Where is my order A1001?", "--model", "openai:gpt-4o-mini", "--json"])
    captured = capsys.readouterr()
    [result] = _json_lines(captured.out)
    assert code == 1
    assert result["status"] == "failed"
    assert "could not be reached" in result["message"]
    assert "Traceback" not in captured.err


def test_demo_json_runs_every_request(capsys):
    from bastion.demo.support.requests import DEMO_REQUESTS

    assert main(["demo", "--json"]) == 0
    results = _json_lines(capsys.readouterr().out)
    assert len(results) == len(DEMO_REQUESTS)
    assert all(r["status"] == "completed" for r in results), [r["message"] for r in results]
    refused = [r for r in results if any(s["status"] == "denied" for s in r["steps"])]
    assert refused, "the demo shows at least one request the gate refuses"
    # Long-term memory across two sessions: c4's preference, kept in one, is in the other's ticket.
    by_session = dict(zip((r.session_id for r in DEMO_REQUESTS), results, strict=True))
    noted = by_session["demo-c4-preference"]
    assert [s["tool_name"] for s in noted["steps"]] == ["remember"]
    assert "noted this for your next conversations" in noted["message"]
    [ticket] = by_session["demo-c4-grinder"]["steps"]
    assert ticket["tool_name"] == "escalate_to_human"
    assert ticket["status"] == "success"
    assert "prefer to be contacted by email" in ticket["tool_args"]["summary"]
    assert ticket["tool_args"]["contact"] == "email"
    assert "by email." in by_session["demo-c4-grinder"]["message"]
