"""Each failure path, end to end through the CLI: a defined terminal status and a clear message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cli.main import main

APPS = Path(__file__).parent / "apps"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "data"))
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "BASTION_MODEL__NAME"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("bastion")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.level = handlers, level


def _plan(*steps: tuple[str, dict]) -> dict:
    return {
        "reasoning": "r",
        "steps": [{"description": f"do {n}", "tool_name": n, "tool_args": a} for n, a in steps],
    }


def _script(tmp_path: Path, *replies: object) -> str:
    path = tmp_path / "script.json"
    items = [{"reply": r} if isinstance(r, dict) else r for r in replies]
    path.write_text(json.dumps({"mode": "sequence", "responses": items}))
    return f"scripted:{path}"


CASES: dict[str, tuple[list[object], str, str]] = {
    "tool-raises": ([_plan(("explode", {}))] * 3, "failed", "could not"),
    "tool-hangs": ([_plan(("stall", {}))] * 3, "aborted", "failing right now"),
    "invalid-json": (["not json"] * 3, "failed", "could not work out"),
    "unknown-tool": ([_plan(("nope", {}))] * 3, "failed", "could not work out"),
    "bad-args": ([_plan(("lookup", {"id": "A1"}))] * 3, "failed", "could not work out"),
    "missing-scope": ([_plan(("wipe", {"order_id": "A1"}))] * 3, "failed", "could not work out"),
    "other-customer": ([_plan(("lookup", {"order_id": "B2"}))] * 3, "aborted", "not allowed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failure_paths_end_in_a_terminal_status(capsys, tmp_path, case):
    replies, status, fragment = CASES[case]
    model = _script(tmp_path, *replies)
    code = main(
        ["run", "help", "--app", "failing_app:build", "--user", "u1", "--model", model, "--json"]
    )
    captured = capsys.readouterr()
    [result] = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert code == 1
    assert result["status"] == status, result
    assert fragment.lower() in result["message"].lower()
    assert "Traceback" not in captured.out + captured.err


def test_budget_too_small(capsys, tmp_path):
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"mode": "sequence", "responses": [{"reply": _plan()}]}))
    # A priced name, so that the budget matters: the scripted file stands in for the model.
    code = main(
        [
            "run",
            "help",
            "--app",
            "failing_app:build",
            "--user",
            "u1",
            "--model",
            f"scripted:{path}",
            "--budget",
            "0",
            "--json",
        ]
    )
    [result] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # A free model fits any budget, even zero: the run completes and costs nothing.
    assert code == 0
    assert result["status"] == "completed"
    assert result["total_cost_usd"] == "0"


def test_budget_too_small_for_a_priced_model(capsys, monkeypatch):
    from bastion.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code = main(
            [
                "run",
                "help",
                "--app",
                "failing_app:build",
                "--user",
                "u1",
                "--model",
                "openai:gpt-4o",
                "--budget",
                "0.0001",
                "--json",
            ]
        )
        sent = len(server.requests)
    [result] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert sent == 0
    assert result["status"] == "aborted"
    assert "budget" in result["message"]


def test_open_circuit(capsys, monkeypatch):
    from bastion.testing import FakeOpenAIServer

    monkeypatch.setenv("BASTION_BREAKER__WINDOW_SIZE", "1")
    monkeypatch.setenv("BASTION_BREAKER__MINIMUM_CALLS", "1")
    with FakeOpenAIServer() as server:
        server.error(503, {"error": {"message": "down"}})
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code = main(
            [
                "run",
                "help",
                "--app",
                "failing_app:build",
                "--user",
                "u1",
                "--model",
                "openai:gpt-4o-mini",
                "--json",
            ]
        )
        sent = len(server.requests)
    [result] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert sent == 1  # the breaker opened after the first 503: no second call reached the server
    assert result["status"] == "aborted"
    assert "failing right now" in result["message"]
